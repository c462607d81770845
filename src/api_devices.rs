//! The API's rate limiters and device patches on vessel's VMM: Firecracker's
//! `rate_limiter` objects as `virtio::rate_limiter` buckets (and back, for
//! `GET /vm/config` of a VM configured elsewhere), and `PATCH /drives/{id}` and
//! `PATCH /network-interfaces/{id}` on a running VM's [`VmHandle`].

use std::path::PathBuf;

use api::{Drive, DriveFormat, DriveUpdate, NetworkInterfaceUpdate, RateLimiter, TokenBucket};
use virtio::rate_limiter::{BucketConfig, Limits};
use vmm::{DiskConfig, VmHandle};

/// A Firecracker bucket as vessel's.
fn bucket(b: &TokenBucket) -> BucketConfig {
    BucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst.unwrap_or(0),
        refill_time_ms: b.refill_time,
    }
}

/// A Firecracker rate limiter (absent: no limit) as vessel's limits.
pub fn limits(limiter: Option<&RateLimiter>) -> Limits {
    Limits {
        bandwidth: limiter.and_then(|l| l.bandwidth.as_ref()).map(bucket),
        ops: limiter.and_then(|l| l.ops.as_ref()).map(bucket),
    }
}

/// vessel's limits as the API shows them: `None` when nothing is limited.
pub fn api_limiter(limits: &Limits) -> Option<RateLimiter> {
    let shown = |b: &BucketConfig| TokenBucket {
        size: b.size,
        one_time_burst: (b.one_time_burst != 0).then_some(b.one_time_burst),
        refill_time: b.refill_time_ms,
    };
    limits.limits().then(|| RateLimiter {
        bandwidth: limits
            .bandwidth
            .filter(BucketConfig::limits)
            .as_ref()
            .map(shown),
        ops: limits.ops.filter(BucketConfig::limits).as_ref().map(shown),
    })
}

/// The bucket changes a patch asks for: (bandwidth, ops), `None` keeping a bucket. An
/// absent limiter changes nothing.
fn bucket_updates(limiter: Option<&RateLimiter>) -> (Option<BucketConfig>, Option<BucketConfig>) {
    let l = limits(limiter);
    (l.bandwidth, l.ops)
}

/// The API's name of a disk format.
pub fn drive_format(f: block::Format) -> DriveFormat {
    match f {
        block::Format::Raw => DriveFormat::Raw,
        block::Format::Qcow2 => DriveFormat::Qcow2,
        block::Format::Vdi => DriveFormat::Vdi,
        block::Format::Vhd => DriveFormat::Vhd,
        block::Format::Vmdk => DriveFormat::Vmdk,
        block::Format::Vhdx => DriveFormat::Vhdx,
    }
}

/// The disk format an API drive names.
pub fn block_format(f: DriveFormat) -> block::Format {
    match f {
        DriveFormat::Raw => block::Format::Raw,
        DriveFormat::Qcow2 => block::Format::Qcow2,
        DriveFormat::Vdi => block::Format::Vdi,
        DriveFormat::Vhd => block::Format::Vhd,
        DriveFormat::Vmdk => block::Format::Vmdk,
        DriveFormat::Vhdx => block::Format::Vhdx,
    }
}

/// `PATCH /drives/{id}`: the new image first, opened as at boot (no symbolic link, a
/// regular file or block device, format detected), so a refused one changes nothing; then
/// the limits (which cannot fail on a drive that exists).
pub fn update_drive(
    handle: &VmHandle,
    index: usize,
    drive: &Drive,
    update: &DriveUpdate,
) -> Result<Option<DriveFormat>, String> {
    let mut format = drive.format;
    if update.path_on_host.is_some() {
        let disk = DiskConfig {
            path: PathBuf::from(&drive.path_on_host),
            read_only: drive.is_read_only,
            id: None,
            format: None,
            allow_external_backing: update.allow_external_backing.unwrap_or(false),
            honour_flush: true,
            rate_limit: Limits::default(),
        };
        let opened = handle
            .replace_disk(index, &disk)
            .map_err(|e| crate::run_cli::error_chain(&e))?;
        format = Some(drive_format(opened));
    }
    if update.rate_limiter.is_some() {
        let (bandwidth, ops) = bucket_updates(update.rate_limiter.as_ref());
        handle
            .update_disk_limits(index, bandwidth, ops)
            .map_err(|e| e.to_string())?;
    }
    Ok(format)
}

/// `PATCH /network-interfaces/{id}`.
pub fn update_network_interface(
    handle: &VmHandle,
    index: usize,
    update: &NetworkInterfaceUpdate,
) -> Result<(), String> {
    handle
        .update_nic_limits(
            index,
            bucket_updates(update.rx_rate_limiter.as_ref()),
            bucket_updates(update.tx_rate_limiter.as_ref()),
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiters_convert_both_ways() {
        let limiter = RateLimiter {
            bandwidth: Some(TokenBucket {
                size: 1 << 20,
                one_time_burst: Some(4096),
                refill_time: 100,
            }),
            ops: None,
        };
        let l = limits(Some(&limiter));
        assert_eq!(l.bandwidth.unwrap().one_time_burst, 4096);
        assert_eq!(api_limiter(&l), Some(limiter));
        assert_eq!(limits(None), Limits::default());
        assert_eq!(api_limiter(&Limits::default()), None);
    }
}
