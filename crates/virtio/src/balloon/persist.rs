//! virtio-balloon's snapshot state: the target and what the driver holds, the polling
//! interval, the statistics buffer the device keeps for its next poll and the last
//! statistics. The features (deflate on OOM, statistics, free page reporting) come from
//! the VM's saved configuration and must match the state's.

use serde::{Deserialize, Serialize};

use super::{mib_to_pages, Balloon, BalloonConfig, BalloonHandle, QUEUE_SIZE, STAT_TAGS_MAX};
use crate::persist::{check_version, Persist, PersistError};
use crate::processor::lock;

/// Format version of [`BalloonState`].
pub const BALLOON_STATE_VERSION: u32 = 1;
const DEVICE: &str = "virtio-balloon";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonState {
    pub version: u32,
    pub config: BalloonConfig,
    pub target_pages: u32,
    pub actual_pages: u32,
    /// Head of the statistics chain the device holds for its next poll.
    pub held_stats_head: Option<u16>,
    /// The last statistics, as (tag, value).
    pub stats: Vec<(u16, u64)>,
}

fn invalid(reason: String) -> PersistError {
    PersistError::Invalid {
        device: DEVICE,
        reason,
    }
}

fn check_features(saved: &BalloonConfig, configured: &BalloonConfig) -> Result<(), PersistError> {
    let shape = |c: &BalloonConfig| {
        format!(
            "deflate_on_oom={} statistics={} free_page_reporting={}",
            c.deflate_on_oom,
            c.stats_polling_interval_s > 0,
            c.free_page_reporting
        )
    };
    if shape(saved) != shape(configured) {
        return Err(PersistError::Mismatch {
            device: DEVICE,
            what: "features",
            saved: shape(saved),
            configured: shape(configured),
        });
    }
    Ok(())
}

impl Persist for Balloon {
    type State = BalloonState;
    /// The balloon's configuration from the VM's saved machine description.
    type ConstructorArgs = BalloonConfig;
    type Error = PersistError;

    fn save(&self) -> BalloonState {
        let status = lock(&self.handle.status);
        BalloonState {
            version: BALLOON_STATE_VERSION,
            config: BalloonConfig {
                stats_polling_interval_s: status.interval_s,
                ..self.handle.features
            },
            target_pages: status.target_pages,
            actual_pages: status.actual_pages,
            held_stats_head: self.held_stats_head,
            stats: status.stats.iter().map(|(t, v)| (*t, *v)).collect(),
        }
    }

    fn restore(configured: BalloonConfig, state: &BalloonState) -> Result<Self, PersistError> {
        check_version(DEVICE, state.version, BALLOON_STATE_VERSION)?;
        check_features(&state.config, &configured)?;
        if state.target_pages > mib_to_pages(u32::MAX) {
            return Err(invalid(format!("target of {} pages", state.target_pages)));
        }
        if let Some(head) = state.held_stats_head {
            if head >= QUEUE_SIZE || state.config.stats_polling_interval_s == 0 {
                return Err(invalid(format!("held statistics buffer {head}")));
            }
        }
        if state.config.dynamic.is_some() && state.config.stats_polling_interval_s == 0 {
            return Err(invalid("dynamic memory without statistics".into()));
        }
        if state.stats.len() > STAT_TAGS_MAX {
            return Err(invalid(format!("{} statistics", state.stats.len())));
        }
        let handle = BalloonHandle::new(state.config).map_err(|e| invalid(e.to_string()))?;
        {
            let mut status = lock(&handle.status);
            status.target_pages = state.target_pages;
            status.actual_pages = state.actual_pages;
            status.stats = state.stats.iter().copied().collect();
        }
        let mut balloon = Balloon::with_handle(handle);
        balloon.held_stats_head = state.held_stats_head;
        Ok(balloon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BalloonConfig {
        BalloonConfig {
            amount_mib: 32,
            deflate_on_oom: true,
            stats_polling_interval_s: 2,
            free_page_reporting: false,
            dynamic: None,
        }
    }

    fn saved() -> BalloonState {
        let (mut balloon, handle) = Balloon::new(cfg()).unwrap();
        handle.set_target_mib(48);
        lock(&handle.status).actual_pages = 100;
        lock(&handle.status).stats.insert(4, 1 << 20);
        balloon.held_stats_head = Some(3);
        balloon.save()
    }

    #[test]
    fn state_round_trips_through_json() {
        let state = saved();
        let json = serde_json::to_vec(&state).unwrap();
        let back: BalloonState = serde_json::from_slice(&json).unwrap();
        let balloon = Balloon::restore(cfg(), &back).unwrap();
        assert_eq!(balloon.save(), state);
        let report = balloon.handle().report();
        assert_eq!((report.target_mib(), report.actual_pages), (48, 100));
        assert_eq!(report.stats[&4], 1 << 20);
    }

    #[test]
    fn hostile_states_are_refused() {
        let mut s = saved();
        s.version = 9;
        assert!(Balloon::restore(cfg(), &s).is_err());
        let mut s = saved();
        s.held_stats_head = Some(QUEUE_SIZE);
        assert!(Balloon::restore(cfg(), &s).is_err());
        let mut s = saved();
        s.stats = (0..1000).map(|t| (t, 0)).collect();
        assert!(Balloon::restore(cfg(), &s).is_err());
        let s = saved();
        let other = BalloonConfig {
            free_page_reporting: true,
            ..cfg()
        };
        let err = Balloon::restore(other, &s).err().unwrap().to_string();
        assert!(err.contains("free_page_reporting"), "{err}");
    }
}
