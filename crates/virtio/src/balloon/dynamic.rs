//! Dynamic memory, after Hyper-V's: the balloon's target follows the guest's demand. From
//! each statistics report the guest should have what it uses (total minus available)
//! plus a buffer, between a minimum and all of its RAM. More memory is given at once;
//! memory is taken back only when every report for `shrink_delay_s` asked for it, at most
//! an eighth of RAM per step, and changes smaller than the larger of 16 MiB and 2 % of RAM
//! are not made at all.
//!
//! The guest's statistics are hostile input: missing or contradictory values change
//! nothing, and every sum saturates.

use serde::{Deserialize, Serialize};

use super::BalloonStats;

/// virtio 1.2 §5.5.6.3: VIRTIO_BALLOON_S_MEMTOT and VIRTIO_BALLOON_S_AVAIL, in bytes.
const S_MEMTOT: u16 = 5;
const S_AVAIL: u16 = 6;
/// VIRTIO_BALLOON_S_MEMFREE, for drivers that do not report AVAIL.
const S_MEMFREE: u16 = 4;
const MIB: u64 = 1 << 20;
/// Largest buffer accepted, in percent of the guest's use.
pub const MAX_BUFFER_PERCENT: u16 = 1000;

/// What the user sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicMemory {
    /// The guest never gets less than this (MiB).
    pub min_mib: u32,
    /// Free memory kept above the guest's use, in percent of that use.
    pub buffer_percent: u16,
    /// How long the guest must have had more than it needs before memory is taken back.
    pub shrink_delay_s: u32,
}

/// The policy's running state on one device.
#[derive(Debug)]
pub struct DynamicPolicy {
    config: DynamicMemory,
    /// Consecutive reports that asked for a larger balloon.
    shrink_votes: u32,
    /// The smallest balloon those reports asked for.
    shrink_to: u32,
}

impl DynamicPolicy {
    pub fn new(config: DynamicMemory) -> Self {
        Self {
            config,
            shrink_votes: 0,
            shrink_to: 0,
        }
    }

    /// The balloon target (MiB) after one statistics report, when it should change.
    /// `ram_mib` is all of the guest's RAM, `target_mib` today's target and `interval_s`
    /// the statistics polling interval.
    pub fn next_target(
        &mut self,
        stats: &BalloonStats,
        ram_mib: u32,
        target_mib: u32,
        interval_s: u16,
    ) -> Option<u32> {
        let Some(wanted) = self.wanted_target(stats, ram_mib) else {
            self.shrink_votes = 0;
            return None;
        };
        let threshold = (ram_mib / 50).max(16);
        if wanted.saturating_add(threshold) <= target_mib {
            // The guest needs memory: give it now.
            self.shrink_votes = 0;
            return Some(wanted);
        }
        if wanted < target_mib.saturating_add(threshold) {
            self.shrink_votes = 0;
            return None;
        }
        self.shrink_to = if self.shrink_votes == 0 {
            wanted
        } else {
            self.shrink_to.min(wanted)
        };
        self.shrink_votes = self.shrink_votes.saturating_add(1);
        let waited = u64::from(self.shrink_votes) * u64::from(interval_s.max(1));
        if waited < u64::from(self.config.shrink_delay_s) {
            return None;
        }
        self.shrink_votes = 0;
        let step = (ram_mib / 8).max(threshold);
        Some(self.shrink_to.min(target_mib.saturating_add(step)))
    }

    /// The balloon that leaves the guest its use plus the buffer, within its bounds.
    fn wanted_target(&self, stats: &BalloonStats, ram_mib: u32) -> Option<u32> {
        let total = *stats.get(&S_MEMTOT)?;
        let avail = stats.get(&S_AVAIL).or_else(|| stats.get(&S_MEMFREE))?;
        let used_mib = total.saturating_sub(*avail).div_ceil(MIB);
        let buffer = u64::from(self.config.buffer_percent.min(MAX_BUFFER_PERCENT));
        let wanted_guest = used_mib.saturating_mul(100 + buffer).div_ceil(100);
        let floor = u64::from(self.config.min_mib.min(ram_mib));
        let guest = wanted_guest.clamp(floor, u64::from(ram_mib));
        u32::try_from(u64::from(ram_mib) - guest).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u32 = 2048;

    fn policy(shrink_delay_s: u32) -> DynamicPolicy {
        DynamicPolicy::new(DynamicMemory {
            min_mib: 512,
            buffer_percent: 20,
            shrink_delay_s,
        })
    }

    /// A report of a guest with `total` MiB of which `avail` are available.
    fn stats(total: u64, avail: u64) -> BalloonStats {
        BalloonStats::from([(S_MEMTOT, total * MIB), (S_AVAIL, avail * MIB)])
    }

    #[test]
    fn a_busy_guest_gets_memory_at_once() {
        let mut p = policy(30);
        // Balloon at 1024: the guest has 1024 MiB and uses 1000; it wants 1200.
        assert_eq!(
            p.next_target(&stats(1024, 24), RAM, 1024, 2),
            Some(RAM - 1200)
        );
        // Its use beyond all of RAM: the balloon goes empty.
        assert_eq!(p.next_target(&stats(2000, 0), RAM, 500, 2), Some(0));
    }

    #[test]
    fn an_idle_guest_gives_memory_back_after_the_delay_in_steps() {
        let mut p = policy(6);
        // Balloon empty, guest uses 100 MiB: it wants the minimum, 512 (balloon 1536).
        let idle = stats(2000, 1900);
        assert_eq!(p.next_target(&idle, RAM, 0, 2), None);
        assert_eq!(p.next_target(&idle, RAM, 0, 2), None);
        // Six seconds of reports: one step of RAM/8.
        assert_eq!(p.next_target(&idle, RAM, 0, 2), Some(256));
        // The count starts over after a step.
        assert_eq!(p.next_target(&idle, RAM, 256, 2), None);
    }

    #[test]
    fn shrinking_stops_when_the_guest_gets_busy_again() {
        let mut p = policy(4);
        assert_eq!(p.next_target(&stats(2000, 1900), RAM, 0, 2), None);
        // A report within the threshold resets the count.
        assert_eq!(p.next_target(&stats(2000, 0), RAM, 0, 2), None);
        assert_eq!(p.next_target(&stats(2000, 1900), RAM, 0, 2), None);
        assert_eq!(p.next_target(&stats(2000, 1900), RAM, 0, 2), Some(256));
    }

    #[test]
    fn shrink_goes_to_the_smallest_balloon_asked_for() {
        let mut p = DynamicPolicy::new(DynamicMemory {
            min_mib: 0,
            buffer_percent: 0,
            shrink_delay_s: 2,
        });
        // Uses 1848 then 1948 of 2048: balloons of 200 and 100; the smaller wins.
        assert_eq!(p.next_target(&stats(2048, 200), RAM, 0, 1), None);
        assert_eq!(p.next_target(&stats(2048, 100), RAM, 0, 1), Some(100));
    }

    #[test]
    fn small_changes_are_not_made() {
        let mut p = policy(0);
        // Wants 1200 of guest memory and has 1190: within 40 MiB (2 % of 2048).
        assert_eq!(p.next_target(&stats(1190, 190), RAM, RAM - 1190, 2), None);
    }

    #[test]
    fn hostile_or_missing_statistics_change_nothing_or_stay_in_bounds() {
        let mut p = policy(0);
        assert_eq!(p.next_target(&BalloonStats::new(), RAM, 100, 2), None);
        assert_eq!(
            p.next_target(&BalloonStats::from([(S_MEMTOT, 1)]), RAM, 100, 2),
            None
        );
        // Available above total: no use, so the minimum.
        assert_eq!(p.next_target(&stats(100, 5000), RAM, 0, 2), Some(RAM / 8));
        // Values at the edge of u64 saturate.
        let huge = BalloonStats::from([(S_MEMTOT, u64::MAX), (S_AVAIL, 0)]);
        assert_eq!(p.next_target(&huge, RAM, 1000, 2), Some(0));
        // MEMFREE stands in for AVAIL.
        let free_only = BalloonStats::from([(S_MEMTOT, 2000 * MIB), (S_MEMFREE, 1900 * MIB)]);
        assert_eq!(p.next_target(&free_only, RAM, 0, 0), Some(256));
        // A minimum above RAM is RAM: the balloon stays empty.
        let mut greedy = DynamicPolicy::new(DynamicMemory {
            min_mib: u32::MAX,
            buffer_percent: u16::MAX,
            shrink_delay_s: 0,
        });
        assert_eq!(greedy.next_target(&stats(10, 10), RAM, 64, 2), Some(0));
    }
}
