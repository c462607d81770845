//! Firecracker's snapshot rules: create only while paused and only `Full`; load only in a
//! fresh VMM, before anything is configured, from exactly one memory file.

use thiserror::Error;

use super::{ApiReply, ControlError, VmController};
use crate::model::{InstanceState, MachineConfig};
use crate::snapshot_model::{
    MemoryBackendType, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnapshotRequestError {
    #[error("Create snapshot error: the microVM must be paused before a snapshot is created.")]
    CreateNotPaused,
    #[error(
        "Create snapshot error: Diff snapshots are not supported by vessel, only Full snapshots."
    )]
    DiffNotSupported,
    #[error("Create snapshot error: {0}")]
    Create(crate::BackendError),
    #[error("Loading a microVM snapshot not allowed after configuring boot-specific resources.")]
    LoadNotAllowed,
    #[error("Load snapshot error: exactly one of mem_file_path and mem_backend must be given.")]
    MemorySource,
    #[error("Load snapshot error: the Uffd memory backend is not supported by vessel, only File.")]
    UffdNotSupported,
    #[error(
        "Load snapshot error: dirty page tracking (Diff snapshots) is not supported by vessel."
    )]
    DirtyTrackingNotSupported,
    #[error("Load snapshot error: {0}")]
    Load(crate::BackendError),
}

impl VmController {
    pub(super) fn create_snapshot(
        &mut self,
        params: &SnapshotCreateParams,
    ) -> Result<ApiReply, ControlError> {
        self.require_started()?;
        if self.state != InstanceState::Paused {
            return Err(SnapshotRequestError::CreateNotPaused.into());
        }
        if params.snapshot_type == SnapshotType::Diff {
            return Err(SnapshotRequestError::DiffNotSupported.into());
        }
        self.backend
            .create_snapshot(params)
            .map_err(SnapshotRequestError::Create)?;
        Ok(ApiReply::NoContent)
    }

    /// Whether anything a boot would use was configured (Firecracker refuses a load then).
    fn boot_resources_configured(&self) -> bool {
        self.boot_source.is_some()
            || !self.drives.is_empty()
            || !self.network_interfaces.is_empty()
            || self.machine != MachineConfig::default()
    }

    pub(super) fn load_snapshot(
        &mut self,
        params: &SnapshotLoadParams,
    ) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        if self.boot_resources_configured() {
            return Err(SnapshotRequestError::LoadNotAllowed.into());
        }
        let mem_path = match (&params.mem_file_path, &params.mem_backend) {
            (Some(path), None) => path,
            (None, Some(backend)) if backend.backend_type == MemoryBackendType::File => {
                &backend.backend_path
            }
            (None, Some(_)) => return Err(SnapshotRequestError::UffdNotSupported.into()),
            _ => return Err(SnapshotRequestError::MemorySource.into()),
        };
        if params.enable_diff_snapshots || params.track_dirty_pages {
            return Err(SnapshotRequestError::DirtyTrackingNotSupported.into());
        }
        self.machine = self
            .backend
            .load_snapshot(&params.snapshot_path, mem_path, params.resume_vm)
            .map_err(SnapshotRequestError::Load)?;
        self.state = if params.resume_vm {
            InstanceState::Running
        } else {
            InstanceState::Paused
        };
        Ok(ApiReply::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::backend::VmmBackend;
    use crate::controller::{ApiRequest, InstanceIdentity};
    use crate::model::{VmConfigSnapshot, VmStateTarget};
    use crate::snapshot_model::MemoryBackend;

    #[derive(Default)]
    struct Backend {
        calls: Mutex<Vec<String>>,
    }

    impl VmmBackend for Backend {
        fn start(&self, _: &VmConfigSnapshot) -> Result<(), crate::BackendError> {
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
        fn create_snapshot(&self, p: &SnapshotCreateParams) -> Result<(), crate::BackendError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("create {}", p.snapshot_path));
            Ok(())
        }
        fn load_snapshot(
            &self,
            s: &str,
            m: &str,
            resume: bool,
        ) -> Result<MachineConfig, crate::BackendError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("load {s} {m} {resume}"));
            Ok(MachineConfig {
                vcpu_count: 3,
                ..MachineConfig::default()
            })
        }
    }

    fn controller() -> (Arc<Backend>, VmController) {
        let backend = Arc::new(Backend::default());
        (
            backend.clone(),
            VmController::new(InstanceIdentity::default(), backend),
        )
    }

    fn create(kind: SnapshotType) -> ApiRequest {
        ApiRequest::CreateSnapshot(SnapshotCreateParams {
            snapshot_path: "/s".into(),
            mem_file_path: "/m".into(),
            snapshot_type: kind,
            version: None,
        })
    }

    fn load(file: Option<&str>, backend: Option<MemoryBackendType>) -> SnapshotLoadParams {
        SnapshotLoadParams {
            snapshot_path: "/s".into(),
            mem_file_path: file.map(String::from),
            mem_backend: backend.map(|backend_type| MemoryBackend {
                backend_type,
                backend_path: "/m".into(),
            }),
            enable_diff_snapshots: false,
            track_dirty_pages: false,
            resume_vm: true,
        }
    }

    fn err(c: &mut VmController, r: ApiRequest) -> String {
        c.handle(r).unwrap_err().to_string()
    }

    #[test]
    fn create_needs_a_paused_vm_and_a_full_snapshot() {
        let (backend, mut c) = controller();
        assert!(err(&mut c, create(SnapshotType::Full)).contains("not supported before"));
        c.state = InstanceState::Running;
        assert!(err(&mut c, create(SnapshotType::Full)).contains("must be paused"));
        c.handle(ApiRequest::PatchVmState(VmStateTarget::Paused))
            .unwrap();
        assert!(err(&mut c, create(SnapshotType::Diff)).contains("Diff snapshots"));
        c.handle(create(SnapshotType::Full)).unwrap();
        assert_eq!(*backend.calls.lock().unwrap(), ["create /s"]);
    }

    #[test]
    fn load_takes_one_file_memory_source_in_a_fresh_vmm() {
        let (backend, mut c) = controller();
        let both = SnapshotLoadParams {
            mem_file_path: Some("/m".into()),
            ..load(None, Some(MemoryBackendType::File))
        };
        for bad in [load(None, None), both] {
            let e = err(&mut c, ApiRequest::LoadSnapshot(bad));
            assert!(e.contains("exactly one"), "{e}");
        }
        let e = err(
            &mut c,
            ApiRequest::LoadSnapshot(load(None, Some(MemoryBackendType::Uffd))),
        );
        assert!(e.contains("Uffd"), "{e}");
        let tracking = SnapshotLoadParams {
            track_dirty_pages: true,
            ..load(Some("/m"), None)
        };
        assert!(err(&mut c, ApiRequest::LoadSnapshot(tracking)).contains("dirty page"));
        c.handle(ApiRequest::LoadSnapshot(load(
            None,
            Some(MemoryBackendType::File),
        )))
        .unwrap();
        assert_eq!(c.state(), InstanceState::Running);
        assert_eq!(c.full_config().machine_config.vcpu_count, 3);
        assert_eq!(*backend.calls.lock().unwrap(), ["load /s /m true"]);
        // Loaded: a second load is a post-boot request.
        let e = err(&mut c, ApiRequest::LoadSnapshot(load(Some("/m"), None)));
        assert!(e.contains("after starting"), "{e}");
    }

    #[test]
    fn load_is_refused_once_boot_resources_are_configured() {
        let (_, mut c) = controller();
        c.machine.vcpu_count = 2;
        let e = err(&mut c, ApiRequest::LoadSnapshot(load(Some("/m"), None)));
        assert_eq!(e, SnapshotRequestError::LoadNotAllowed.to_string());
        let (_, mut c) = controller();
        let paused = SnapshotLoadParams {
            resume_vm: false,
            ..load(Some("/m"), None)
        };
        c.handle(ApiRequest::LoadSnapshot(paused)).unwrap();
        assert_eq!(c.state(), InstanceState::Paused);
    }
}
