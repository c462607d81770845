//! The balloon's request and response bodies, in Firecracker's shapes
//! (`src/firecracker/swagger/firecracker.yaml`: Balloon, BalloonUpdate, BalloonStats,
//! BalloonStatsUpdate).

use serde::{Deserialize, Serialize};

/// `PUT /balloon` body and `GET /balloon` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Whether the guest may take pages back from the balloon when it runs out of memory.
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; 0 disables statistics.
    #[serde(default)]
    pub stats_polling_interval_s: u16,
    /// Free page reporting (VIRTIO_BALLOON_F_REPORTING): the guest gives free pages back.
    #[serde(default)]
    pub free_page_reporting: bool,
    /// Free page hinting: not offered by vessel (a request for it is refused).
    #[serde(default)]
    pub free_page_hinting: bool,
}

/// `PATCH /balloon` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    pub amount_mib: u32,
}

/// `PATCH /balloon/statistics` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    pub stats_polling_interval_s: u16,
}

/// `GET /balloon/statistics` answer: the balloon's size and the guest's last statistics
/// (a statistic the guest never reported is left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStatistics {
    pub target_pages: u32,
    pub actual_pages: u32,
    pub target_mib: u32,
    pub actual_mib: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

impl BalloonStatistics {
    /// Fill the guest's statistics from virtio tags (virtio 1.2 §5.5.6.3); unknown tags
    /// are skipped.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = (u16, u64)>) -> Self {
        for (tag, value) in tags {
            let slot = match tag {
                0 => &mut self.swap_in,
                1 => &mut self.swap_out,
                2 => &mut self.major_faults,
                3 => &mut self.minor_faults,
                4 => &mut self.free_memory,
                5 => &mut self.total_memory,
                6 => &mut self.available_memory,
                7 => &mut self.disk_caches,
                8 => &mut self.hugetlb_allocations,
                9 => &mut self.hugetlb_failures,
                10 => &mut self.oom_kill,
                11 => &mut self.alloc_stall,
                12 => &mut self.async_scan,
                13 => &mut self.direct_scan,
                14 => &mut self.async_reclaim,
                15 => &mut self.direct_reclaim,
                _ => continue,
            };
            *slot = Some(value);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecrackers_bodies_parse() {
        let b: Balloon = serde_json::from_str(
            r#"{"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 1}"#,
        )
        .unwrap();
        assert_eq!((b.amount_mib, b.stats_polling_interval_s), (64, 1));
        assert!(!b.free_page_reporting);
        assert!(serde_json::from_str::<Balloon>(r#"{"amount_mib": 1}"#).is_err());
        assert!(serde_json::from_str::<Balloon>(
            r#"{"amount_mib": 1, "deflate_on_oom": true, "colour": 1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<BalloonUpdate>(r#"{"amount_mib": -1}"#).is_err());
    }

    #[test]
    fn statistics_name_the_tags() {
        let s = BalloonStatistics::default().with_tags([(4, 10), (5, 20), (99, 1)]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["free_memory"], 10);
        assert_eq!(v["total_memory"], 20);
        assert!(v.get("swap_in").is_none());
        assert_eq!(v["target_pages"], 0);
    }
}
