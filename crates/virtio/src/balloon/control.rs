//! The host side of a running balloon: [`BalloonHandle`] sets the target, reads what the
//! driver holds and its statistics, and changes the statistics polling interval, from any
//! thread (the API server's) while the device runs on the I/O thread.

use std::sync::{Arc, Mutex};

use super::timer::StatsTimer;
use super::{mib_to_pages, pages_to_mib, BalloonConfig, BalloonStats};
use crate::processor::lock;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    /// Firecracker's wording.
    #[error("Received stats query when stats are disabled.")]
    StatisticsDisabled,
    #[error("Statistics cannot be enabled/disabled after activation.")]
    StatisticsStateChange,
    #[error("cannot create the statistics timer: {0}")]
    Timer(String),
}

/// What the device and its handle share.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub target_pages: u32,
    /// What the driver says it holds (config `actual`).
    pub actual_pages: u32,
    pub stats: BalloonStats,
    pub interval_s: u16,
    pub discarded_pages: u64,
    pub rejected_pfns: u64,
}

/// The balloon's target, size and statistics as the host sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalloonReport {
    pub target_pages: u32,
    pub actual_pages: u32,
    /// The guest's last statistics by tag (virtio 1.2 §5.5.6.3).
    pub stats: BalloonStats,
    /// Pages given back to the host, and guest PFNs refused as out of range.
    pub discarded_pages: u64,
    pub rejected_pfns: u64,
}

impl BalloonReport {
    pub fn target_mib(&self) -> u32 {
        pages_to_mib(self.target_pages)
    }
    pub fn actual_mib(&self) -> u32 {
        pages_to_mib(self.actual_pages)
    }
}

/// Controls a balloon from other threads. After [`BalloonHandle::set_target_mib`] the
/// caller sends the driver a configuration-change interrupt.
#[derive(Clone, Debug)]
pub struct BalloonHandle {
    pub(crate) status: Arc<Mutex<Status>>,
    pub(crate) timer: Option<Arc<StatsTimer>>,
    /// The features chosen at creation (fixed for the device's life).
    pub(crate) features: BalloonConfig,
}

impl BalloonHandle {
    pub(crate) fn new(config: BalloonConfig) -> Result<Self, BalloonError> {
        let timer = if config.stats_polling_interval_s > 0 {
            let t = StatsTimer::new().map_err(|e| BalloonError::Timer(e.to_string()))?;
            t.set_interval(config.stats_polling_interval_s)
                .map_err(|e| BalloonError::Timer(e.to_string()))?;
            Some(Arc::new(t))
        } else {
            None
        };
        Ok(Self {
            status: Arc::new(Mutex::new(Status {
                target_pages: mib_to_pages(config.amount_mib),
                interval_s: config.stats_polling_interval_s,
                ..Status::default()
            })),
            timer,
            features: config,
        })
    }

    pub fn set_target_mib(&self, amount_mib: u32) {
        lock(&self.status).target_pages = mib_to_pages(amount_mib);
    }

    /// The configuration now: the features of creation with today's target and interval.
    pub fn config(&self) -> BalloonConfig {
        let status = lock(&self.status);
        BalloonConfig {
            amount_mib: pages_to_mib(status.target_pages),
            stats_polling_interval_s: status.interval_s,
            ..self.features
        }
    }

    pub fn report(&self) -> BalloonReport {
        let status = lock(&self.status);
        BalloonReport {
            target_pages: status.target_pages,
            actual_pages: status.actual_pages,
            stats: status.stats.clone(),
            discarded_pages: status.discarded_pages,
            rejected_pfns: status.rejected_pfns,
        }
    }

    /// The statistics report, refused when statistics were disabled at creation.
    pub fn statistics(&self) -> Result<BalloonReport, BalloonError> {
        if self.timer.is_none() {
            return Err(BalloonError::StatisticsDisabled);
        }
        Ok(self.report())
    }

    /// A new polling interval; statistics cannot be turned on or off after creation.
    pub fn set_stats_interval(&self, secs: u16) -> Result<(), BalloonError> {
        let Some(timer) = &self.timer else {
            return Err(if secs == 0 {
                BalloonError::StatisticsDisabled
            } else {
                BalloonError::StatisticsStateChange
            });
        };
        if secs == 0 {
            return Err(BalloonError::StatisticsStateChange);
        }
        timer
            .set_interval(secs)
            .map_err(|e| BalloonError::Timer(e.to_string()))?;
        lock(&self.status).interval_s = secs;
        Ok(())
    }

    /// The statistics timer's fd (the device's backend fd), when statistics are on.
    pub fn timer_fd(&self) -> Option<std::os::fd::RawFd> {
        self.timer.as_ref().map(|t| t.raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(interval: u16) -> BalloonConfig {
        BalloonConfig {
            amount_mib: 16,
            deflate_on_oom: false,
            stats_polling_interval_s: interval,
            free_page_reporting: false,
            dynamic: None,
        }
    }

    #[test]
    fn statistics_cannot_be_switched_after_creation() {
        let off = BalloonHandle::new(cfg(0)).unwrap();
        assert_eq!(off.statistics(), Err(BalloonError::StatisticsDisabled));
        assert_eq!(
            off.set_stats_interval(5),
            Err(BalloonError::StatisticsStateChange)
        );
        assert!(off.timer_fd().is_none());
        let on = BalloonHandle::new(cfg(3)).unwrap();
        assert_eq!(
            on.set_stats_interval(0),
            Err(BalloonError::StatisticsStateChange)
        );
        on.set_stats_interval(7).unwrap();
        assert_eq!(on.config().stats_polling_interval_s, 7);
        assert!(on.timer_fd().is_some());
    }

    #[test]
    fn target_round_trips_in_mib() {
        let h = BalloonHandle::new(cfg(0)).unwrap();
        h.set_target_mib(300);
        assert_eq!(h.config().amount_mib, 300);
        assert_eq!(h.report().target_pages, 300 * 256);
        assert_eq!(h.report().target_mib(), 300);
    }
}
