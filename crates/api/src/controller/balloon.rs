//! The balloon endpoints as Firecracker serves them: `PUT /balloon` before the microVM
//! starts (a later PUT replaces the device), `PATCH /balloon` and `PATCH
//! /balloon/statistics` and `GET /balloon/statistics` after it started, `GET /balloon`
//! always.

use thiserror::Error;

use super::{json, ApiReply, ControlError, VmController};
use crate::balloon_model::{Balloon, BalloonStatsUpdate, BalloonUpdate};
use crate::model::InstanceState;

/// A balloon request the router understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalloonRequest {
    Put(Balloon),
    Patch(BalloonUpdate),
    Get,
    GetStatistics,
    PatchStatistics(BalloonStatsUpdate),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BalloonRequestError {
    #[error("No balloon device found.")]
    NotFound,
    #[error("Amount of pages requested is too large: {amount_mib} MiB is more than the microVM's {memory_mib} MiB.")]
    TooLarge { amount_mib: u32, memory_mib: u64 },
    #[error("Free page hinting is not supported by this VMM; use free_page_reporting.")]
    Hinting,
    /// The VMM's refusal (statistics disabled, ...), in its words.
    #[error("Balloon: {0}")]
    Backend(crate::BackendError),
}

impl VmController {
    pub(super) fn balloon_request(
        &mut self,
        request: BalloonRequest,
    ) -> Result<ApiReply, ControlError> {
        match request {
            BalloonRequest::Put(balloon) => {
                self.require_not_started()?;
                if balloon.free_page_hinting {
                    return Err(BalloonRequestError::Hinting.into());
                }
                self.check_amount(balloon.amount_mib)?;
                self.balloon = Some(balloon);
                Ok(ApiReply::NoContent)
            }
            BalloonRequest::Get if self.state == InstanceState::NotStarted => {
                json(self.balloon.as_ref().ok_or(BalloonRequestError::NotFound)?)
            }
            BalloonRequest::Get => json(&self.backend.balloon_config().map_err(backend_err)?),
            BalloonRequest::Patch(update) => {
                self.require_started()?;
                self.check_amount(update.amount_mib)?;
                self.backend
                    .update_balloon(update.amount_mib)
                    .map_err(backend_err)?;
                Ok(ApiReply::NoContent)
            }
            BalloonRequest::GetStatistics => {
                self.require_started()?;
                json(&self.backend.balloon_statistics().map_err(backend_err)?)
            }
            BalloonRequest::PatchStatistics(update) => {
                self.require_started()?;
                self.backend
                    .update_balloon_statistics(update.stats_polling_interval_s)
                    .map_err(backend_err)?;
                Ok(ApiReply::NoContent)
            }
        }
    }

    /// A balloon cannot take more than the microVM's memory.
    fn check_amount(&self, amount_mib: u32) -> Result<(), BalloonRequestError> {
        let memory_mib = self.machine.mem_size_mib;
        if u64::from(amount_mib) > memory_mib {
            return Err(BalloonRequestError::TooLarge {
                amount_mib,
                memory_mib,
            });
        }
        Ok(())
    }
}

fn backend_err(message: crate::BackendError) -> BalloonRequestError {
    BalloonRequestError::Backend(message)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::controller::{ApiRequest, InstanceIdentity};
    use crate::model::{ActionType, BootSource, VmConfigSnapshot};
    use crate::VmmBackend;

    /// A VMM whose balloon takes targets and has statistics turned off.
    #[derive(Default)]
    struct BalloonBackend {
        started_with: Mutex<Option<VmConfigSnapshot>>,
        target: Mutex<u32>,
    }

    impl VmmBackend for BalloonBackend {
        fn start(&self, config: &VmConfigSnapshot) -> Result<(), crate::BackendError> {
            *self.started_with.lock().unwrap() = Some(config.clone());
            Ok(())
        }
        fn send_ctrl_alt_del(&self) -> Result<(), crate::BackendError> {
            Ok(())
        }
        fn pause(&self) -> Result<(), crate::BackendError> {
            Ok(())
        }
        fn resume(&self) -> Result<(), crate::BackendError> {
            Ok(())
        }
        fn update_balloon(&self, amount_mib: u32) -> Result<(), crate::BackendError> {
            *self.target.lock().unwrap() = amount_mib;
            Ok(())
        }
        fn balloon_statistics(&self) -> Result<crate::BalloonStatistics, crate::BackendError> {
            Err(crate::BackendError::Unsupported(
                "Received stats query when stats are disabled.",
            ))
        }
    }

    fn balloon(amount_mib: u32) -> Balloon {
        Balloon {
            amount_mib,
            deflate_on_oom: true,
            stats_polling_interval_s: 0,
            free_page_reporting: true,
            free_page_hinting: false,
        }
    }

    fn call(c: &mut VmController, r: BalloonRequest) -> Result<ApiReply, String> {
        c.handle(ApiRequest::Balloon(r)).map_err(|e| e.to_string())
    }

    #[test]
    fn configured_before_start_and_driven_after() {
        let backend = Arc::new(BalloonBackend::default());
        let mut c = VmController::new(InstanceIdentity::default(), backend.clone());
        assert_eq!(
            call(&mut c, BalloonRequest::Get).unwrap_err(),
            "No balloon device found."
        );
        let too_big = call(&mut c, BalloonRequest::Put(balloon(4096))).unwrap_err();
        assert!(too_big.contains("too large"), "{too_big}");
        let hinting = Balloon {
            free_page_hinting: true,
            ..balloon(1)
        };
        assert!(call(&mut c, BalloonRequest::Put(hinting)).is_err());
        call(&mut c, BalloonRequest::Put(balloon(64))).unwrap();
        let ApiReply::Json(body) = call(&mut c, BalloonRequest::Get).unwrap() else {
            panic!("no body");
        };
        assert_eq!(
            serde_json::from_slice::<Balloon>(&body).unwrap(),
            balloon(64)
        );
        let patch = BalloonRequest::Patch(BalloonUpdate { amount_mib: 1 });
        assert!(call(&mut c, patch.clone())
            .unwrap_err()
            .contains("before starting"));
        assert!(call(&mut c, BalloonRequest::GetStatistics).is_err());

        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, [0u8; 4096]).unwrap();
        c.handle(ApiRequest::PutBootSource(BootSource {
            kernel_image_path: kernel.display().to_string(),
            boot_args: None,
            initrd_path: None,
        }))
        .unwrap();
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        let started = backend.started_with.lock().unwrap().clone().unwrap();
        assert_eq!(started.balloon, Some(balloon(64)));
        assert!(call(&mut c, BalloonRequest::Put(balloon(1)))
            .unwrap_err()
            .contains("after starting"));
        call(&mut c, patch).unwrap();
        assert_eq!(*backend.target.lock().unwrap(), 1);
        let big = BalloonRequest::Patch(BalloonUpdate { amount_mib: 129 });
        assert!(call(&mut c, big).unwrap_err().contains("too large"));
        assert_eq!(
            call(&mut c, BalloonRequest::GetStatistics).unwrap_err(),
            "Balloon: Received stats query when stats are disabled."
        );
        let stats = BalloonRequest::PatchStatistics(BalloonStatsUpdate {
            stats_polling_interval_s: 1,
        });
        assert!(call(&mut c, stats)
            .unwrap_err()
            .contains("No balloon device"));
    }
}
