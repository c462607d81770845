//! The balloon between the REST API's shapes (Firecracker's) and the VMM: conversions and
//! the backend calls `api_mode` makes on a running VM's balloon.

use vmm::{BalloonConfig, BalloonControl, BalloonReport, VmHandle};

const NO_BALLOON: &str = "No balloon device found.";

pub fn to_api(cfg: &BalloonConfig) -> api::Balloon {
    api::Balloon {
        amount_mib: cfg.amount_mib,
        deflate_on_oom: cfg.deflate_on_oom,
        stats_polling_interval_s: cfg.stats_polling_interval_s,
        free_page_reporting: cfg.free_page_reporting,
        free_page_hinting: false,
    }
}

/// The controller refused free page hinting already.
pub fn from_api(b: &api::Balloon) -> BalloonConfig {
    BalloonConfig {
        amount_mib: b.amount_mib,
        deflate_on_oom: b.deflate_on_oom,
        stats_polling_interval_s: b.stats_polling_interval_s,
        free_page_reporting: b.free_page_reporting,
        dynamic: None,
    }
}

pub fn statistics(report: &BalloonReport) -> api::BalloonStatistics {
    api::BalloonStatistics {
        target_pages: report.target_pages,
        actual_pages: report.actual_pages,
        target_mib: report.target_mib(),
        actual_mib: report.actual_mib(),
        ..Default::default()
    }
    .with_tags(report.stats.iter().map(|(t, v)| (*t, *v)))
}

fn balloon(handle: &VmHandle) -> Result<&BalloonControl, String> {
    handle.balloon().ok_or_else(|| NO_BALLOON.to_string())
}

pub fn config(handle: &VmHandle) -> Result<api::Balloon, String> {
    Ok(to_api(&balloon(handle)?.config()))
}

pub fn update(handle: &VmHandle, amount_mib: u32) -> Result<(), String> {
    let b = balloon(handle)?;
    if b.config().dynamic.is_some() {
        return Err(
            "The balloon's target follows the guest's use (dynamic memory in the VM definition)."
                .to_string(),
        );
    }
    if u64::from(amount_mib) > handle.memory_mib() {
        return Err(format!(
            "Requested memory should be less than {}MiB",
            handle.memory_mib()
        ));
    }
    b.set_target_mib(amount_mib);
    Ok(())
}

pub fn get_statistics(handle: &VmHandle) -> Result<api::BalloonStatistics, String> {
    let report = balloon(handle)?.statistics().map_err(|e| e.to_string())?;
    Ok(statistics(&report))
}

pub fn update_statistics(handle: &VmHandle, secs: u16) -> Result<(), String> {
    balloon(handle)?
        .set_stats_interval(secs)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let cfg = BalloonConfig {
            amount_mib: 7,
            deflate_on_oom: true,
            stats_polling_interval_s: 3,
            dynamic: None,
            free_page_reporting: true,
        };
        assert_eq!(from_api(&to_api(&cfg)), cfg);
    }
}
