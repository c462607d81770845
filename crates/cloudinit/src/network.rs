//! `network-config`, version 2 (netplan syntax, which cloud-init reads itself and renders
//! for ifupdown, networkd or netplan): one `ethernets` entry per NIC, matched by MAC
//! address, with DHCPv4.
//!
//! The entries are named `nic0`, `nic1`, ... and carry no `set-name`: cloud-init then
//! keeps the kernel's name for the interface with that MAC (`enp0s3`, `eth0`, ...) rather
//! than renaming it, which avoids rename races with other interfaces.

use crate::validate::format_mac;
use crate::yaml;
use serde::Serialize;

/// The whole `network-config` document.
#[derive(Serialize)]
struct NetworkConfig {
    version: u32,
    #[serde(serialize_with = "in_order")]
    ethernets: Vec<(String, Ethernet)>,
}

/// Writes the `(id, entry)` pairs as a mapping, in the NICs' order.
fn in_order<S: serde::Serializer>(pairs: &[(String, Ethernet)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// One `ethernets` entry.
#[derive(Serialize)]
struct Ethernet {
    #[serde(rename = "match")]
    matches: MacMatch,
    dhcp4: bool,
}

/// `match: { macaddress: ... }`.
#[derive(Serialize)]
struct MacMatch {
    macaddress: String,
}

/// Renders `network-config` for NICs with these MAC addresses (already validated).
pub fn render(macs: &[[u8; 6]]) -> Result<String, yaml::YamlError> {
    let ethernets = macs
        .iter()
        .enumerate()
        .map(|(i, mac)| {
            let eth = Ethernet {
                matches: MacMatch {
                    macaddress: format_mac(mac),
                },
                dhcp4: true,
            };
            (format!("nic{i}"), eth)
        })
        .collect();
    yaml::to_string(&NetworkConfig {
        version: 2,
        ethernets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nics() {
        let text = render(&[
            [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            [0x52, 0x54, 0, 0, 0, 0xab],
        ])
        .unwrap_or_default();
        assert_eq!(
            text,
            "version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"52:54:00:12:34:56\"\n    \
             dhcp4: true\n  nic1:\n    match:\n      macaddress: \"52:54:00:00:00:ab\"\n    dhcp4: true\n"
        );
    }

    #[test]
    fn no_nics() {
        assert_eq!(
            render(&[]).unwrap_or_default(),
            "version: 2\nethernets: {}\n"
        );
    }
}
