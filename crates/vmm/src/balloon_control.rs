//! The balloon of a running VM, for the API thread: a new target (the driver hears of it
//! through a configuration-change interrupt), the size and statistics the driver reports,
//! and the statistics polling interval.

use virtio::balloon::{BalloonConfig, BalloonError, BalloonHandle, BalloonReport};
use virtio::QueueProcessor;

/// Drives a VM's virtio-balloon from other threads.
#[derive(Clone)]
pub struct BalloonControl {
    handle: BalloonHandle,
    processor: QueueProcessor,
}

impl BalloonControl {
    pub(crate) fn new(handle: BalloonHandle, processor: QueueProcessor) -> Self {
        Self { handle, processor }
    }

    /// Ask the driver to hold `amount_mib` (the caller checked it against guest RAM).
    pub fn set_target_mib(&self, amount_mib: u32) {
        self.handle.set_target_mib(amount_mib);
        self.processor.signal_config_change();
    }

    /// The configuration now (today's target and polling interval).
    pub fn config(&self) -> BalloonConfig {
        self.handle.config()
    }

    /// Target, actual size and last statistics, whether statistics are on or not.
    pub fn report(&self) -> BalloonReport {
        self.handle.report()
    }

    /// The statistics, refused when they were disabled when the device was created.
    pub fn statistics(&self) -> Result<BalloonReport, BalloonError> {
        self.handle.statistics()
    }

    pub fn set_stats_interval(&self, secs: u16) -> Result<(), BalloonError> {
        self.handle.set_stats_interval(secs)
    }
}
