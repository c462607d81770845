//! The checks a parsed VM definition must pass, each problem with the span of the value at
//! fault (turned into line and column by `VmDefinition::parse`): names, size, disks, NICs,
//! and the optional sections.

use std::ops::Range;

use crate::size::parse_size;
use crate::vmdef::{parse_pit, valid_name, AutoPorts, NicError, VmDefinition, FORMATS};

type Problems = Vec<(Range<usize>, String)>;

/// Every problem of `def`, in the order of the file's sections.
pub fn problems(def: &VmDefinition) -> Problems {
    let mut found = crate::provision_def::problems(&def.provisions);
    found.extend(crate::vmdef_rates::problems(&def.disks));
    found.extend(crate::share_def::problems(&def.shares, def.image.is_some()));
    found.extend(machine_problems(def));
    found.extend(disk_problems(def));
    found.extend(nic_problems(def));
    found.extend(section_problems(def));
    found.extend(device_problems(def));
    found
}

/// Groups, name, vCPUs and memory.
fn machine_problems(def: &VmDefinition) -> Problems {
    let mut found = Problems::new();
    for g in &def.groups {
        if !valid_name(g.get_ref()) || g.get_ref().contains('.') {
            let message = format!(
                "invalid group '{}': use letters, digits, '-' or '_'",
                g.get_ref()
            );
            found.push((g.span(), message));
        }
    }
    if !valid_name(def.name.get_ref()) {
        found.push((def.name.span(), format!("invalid VM name '{}': use letters, digits, '-', '_' or '.', starting with a letter or digit (at most 63)", def.name.get_ref())));
    }
    if !(1..=i64::from(vmm::config::MAX_CPUS)).contains(def.cpus.get_ref()) {
        let message = format!("cpus must be between 1 and {}", vmm::config::MAX_CPUS);
        found.push((def.cpus.span(), message));
    }
    match parse_size(def.memory.get_ref()) {
        Ok(b) => {
            if let Err(e) = arch::memory_map::check_size(b) {
                found.push((def.memory.span(), e.to_string()));
            }
        }
        Err(e) => found.push((def.memory.span(), e)),
    }
    found
}

/// Each disk's format, size and id.
fn disk_problems(def: &VmDefinition) -> Problems {
    let mut found = Problems::new();
    for d in &def.disks {
        if let Some(f) = &d.format {
            if !FORMATS.contains(&f.get_ref().as_str()) {
                let message = format!(
                    "unknown disk format '{}' (expected one of {})",
                    f.get_ref(),
                    FORMATS.join(", ")
                );
                found.push((f.span(), message));
            }
        }
        if let Some(s) = &d.size {
            if let Err(e) = parse_size(s.get_ref()) {
                found.push((s.span(), e));
            }
        }
        if let Some(id) = &d.id {
            if id.get_ref().len() > vmm::config::MAX_DISK_ID_LEN {
                found.push((id.span(), "disk id is longer than 20 bytes".into()));
            }
        }
    }
    found
}

/// Whether `mode` is one of the NIC modes (`nat`, or `KIND:NAME`).
fn known_nic_mode(mode: &str) -> bool {
    const KNOWN: [&str; 6] = [
        "nat",
        "internal:",
        "natnet:",
        "hostonly:",
        "bridged:",
        "tap:",
    ];
    KNOWN.iter().any(|k| {
        if k.ends_with(':') {
            mode.starts_with(k) && mode.len() > k.len()
        } else {
            mode == *k
        }
    })
}

/// Each NIC's mode and forwards, then what the NIC's own checks say.
fn nic_problems(def: &VmDefinition) -> Problems {
    let mut found = Problems::new();
    for n in &def.nics {
        let mode = n.mode.get_ref();
        if !known_nic_mode(mode) {
            found.push((n.mode.span(), format!("unknown NIC mode '{mode}' (nat, natnet:NAME, internal:NAME, hostonly:NAME, bridged:IFACE or tap:NAME)")));
        }
        let mut forwards_ok = true;
        for f in &n.forward {
            if let Err(e) = crate::vm_ports::parse(f.get_ref()) {
                forwards_ok = false;
                found.push((f.span(), e));
            }
        }
        // What the NIC's own checks say beyond the checks above (a bad name, a MAC,
        // forwards on a mode without NAT), at the NIC's mode.
        if forwards_ok {
            if let Err(e) = n.to_config(AutoPorts::Placeholder) {
                if !matches!(e, NicError::Net(net::ConfigError::UnknownMode(_))) {
                    found.push((n.mode.span(), format!("NIC: {e}")));
                }
            }
        }
    }
    found
}

/// The image, user data, PIT, serial and ssh settings.
fn section_problems(def: &VmDefinition) -> Problems {
    let mut found = Problems::new();
    if let Some(image) = &def.image {
        if !valid_name(image.get_ref()) {
            let message = format!("invalid image name '{}'", image.get_ref());
            found.push((image.span(), message));
        }
    }
    if let (Some(u), None) = (&def.user_data, &def.image) {
        let message = "user_data is only for VMs made from an image".into();
        found.push((u.span(), message));
    }
    if let Some(pit) = &def.pit {
        if let Err(e) = parse_pit(pit.get_ref()) {
            found.push((pit.span(), e));
        }
    }
    if let Some(log) = &def.serial.log {
        found.push((log.span(), "serial.log is not supported: a background VM's serial output goes to serial.log in its state directory (vessel inspect shows where)".into()));
    }
    if let Some(user) = &def.ssh.user {
        if let Err(e) = cloudinit::validate::user_name(user.get_ref()) {
            found.push((user.span(), format!("ssh user: {e}")));
        }
    }
    found
}

/// The vsock and balloon devices.
fn device_problems(def: &VmDefinition) -> Problems {
    use virtio::vsock::VsockError;
    let mut found = Problems::new();
    if let Some(v) = &def.vsock {
        let check = u64::try_from(*v.cid.get_ref())
            .map_err(|_| VsockError::NegativeCid(*v.cid.get_ref()))
            .and_then(|cid| virtio::vsock::check_config(cid, v.uds.get_ref()));
        match check {
            Err(e @ (VsockError::NegativeCid(_) | VsockError::Cid(_))) => {
                found.push((v.cid.span(), format!("vsock: {e}")))
            }
            Err(e) => found.push((v.uds.span(), format!("vsock: {e}"))),
            Ok(()) => {}
        }
    }
    if let Some(b) = &def.balloon {
        found.extend(b.check(def.memory_bytes() >> 20));
    }
    found
}
