//! The rate limits of a VM definition's disks (`rate`, `iops`; docs/rate-limits.md), read
//! by the parsers `--disk …,rate=,iops=` uses. NIC rates go through `--nic`'s parser with
//! the rest of the `[[nic]]`.

use std::ops::Range;

use virtio::rate_limiter::{parse_byte_rate, parse_ops_rate, Limits};

use crate::vmdef::Disk;

impl Disk {
    /// The limits of `rate` and `iops`.
    pub fn rate_limit(&self) -> anyhow::Result<Limits> {
        let bandwidth = self.rate.as_ref().map(|r| parse_byte_rate(r.get_ref()));
        let ops = self.iops.as_ref().map(|r| parse_ops_rate(r.get_ref()));
        Ok(Limits {
            bandwidth: bandwidth.transpose()?,
            ops: ops.transpose()?,
        })
    }
}

/// Each unreadable `rate` or `iops`, with its place in the file.
pub fn problems(disks: &[Disk]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    for d in disks {
        if let Some(Err(e)) = d.rate.as_ref().map(|r| parse_byte_rate(r.get_ref())) {
            out.push((d.rate.as_ref().map_or(0..0, |r| r.span()), e.to_string()));
        }
        if let Some(Err(e)) = d.iops.as_ref().map(|r| parse_ops_rate(r.get_ref())) {
            out.push((d.iops.as_ref().map_or(0..0, |r| r.span()), e.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::vmdef::VmDefinition;
    use virtio::rate_limiter::bucket_rate_per_second;

    const DEF: &str = r#"
name = "limited"
[boot]
kernel = "bzImage"
[[disk]]
path = "disk.img"
rate = "10M"
iops = "500"
[[nic]]
mode = "nat"
tx_rate = "1M"
"#;

    #[test]
    fn disk_and_nic_rates_reach_the_vmm_config() {
        let d = VmDefinition::parse(Path::new("vm.toml"), DEF).unwrap();
        let cfg = d.vm_config(vmm::SerialMode::None).unwrap();
        let limits = cfg.machine.disks[0].rate_limit;
        assert_eq!(bucket_rate_per_second(&limits.bandwidth.unwrap()), 10 << 20);
        assert_eq!(bucket_rate_per_second(&limits.ops.unwrap()), 500);
        let nic = &cfg.machine.nics[0];
        assert!(nic.tx_limit.limits() && !nic.rx_limit.limits());
    }

    #[test]
    fn bad_rates_are_named_at_their_line() {
        let text = DEF.replace("iops = \"500\"", "iops = \"lots\"");
        let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(":8:"), "{shown}");
        assert!(shown.contains("operations per second"), "{shown}");
        let text = DEF.replace("tx_rate = \"1M\"", "tx_rate = \"1MB\"");
        assert!(VmDefinition::parse(Path::new("vm.toml"), &text).is_err());
    }
}
