//! The common configuration structure (virtio 1.2 §4.1.4.3): feature negotiation, device
//! status, queue setup and MSI-X vector assignment.

/// Register offsets.
pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const DEVICE_FEATURE: u64 = 0x04;
pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const DRIVER_FEATURE: u64 = 0x0c;
pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
pub const NUM_QUEUES: u64 = 0x12;
pub const DEVICE_STATUS: u64 = 0x14;
pub const CONFIG_GENERATION: u64 = 0x15;
pub const QUEUE_SELECT: u64 = 0x16;
pub const QUEUE_SIZE: u64 = 0x18;
pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
pub const QUEUE_ENABLE: u64 = 0x1c;
pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub const QUEUE_DESC: u64 = 0x20;
pub const QUEUE_DRIVER: u64 = 0x28;
pub const QUEUE_DEVICE: u64 = 0x30;

/// A decoded common-configuration access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    DeviceFeatureSelect,
    DeviceFeature,
    DriverFeatureSelect,
    DriverFeature,
    ConfigMsixVector,
    NumQueues,
    DeviceStatus,
    ConfigGeneration,
    QueueSelect,
    QueueSize,
    QueueMsixVector,
    QueueEnable,
    QueueNotifyOff,
    /// A 64-bit queue address register; `high` when the access is to its upper dword.
    QueueDesc {
        high: bool,
    },
    QueueDriver {
        high: bool,
    },
    QueueDevice {
        high: bool,
    },
}

/// Decode an access of `len` bytes at `offset`: it must match a register's natural width
/// (or one half of a 64-bit address register, or a whole one).
pub fn decode(offset: u64, len: usize) -> Option<(Field, bool)> {
    let field = match (offset, len) {
        (DEVICE_FEATURE_SELECT, 4) => Field::DeviceFeatureSelect,
        (DEVICE_FEATURE, 4) => Field::DeviceFeature,
        (DRIVER_FEATURE_SELECT, 4) => Field::DriverFeatureSelect,
        (DRIVER_FEATURE, 4) => Field::DriverFeature,
        (CONFIG_MSIX_VECTOR, 2) => Field::ConfigMsixVector,
        (NUM_QUEUES, 2) => Field::NumQueues,
        (DEVICE_STATUS, 1) => Field::DeviceStatus,
        (CONFIG_GENERATION, 1) => Field::ConfigGeneration,
        (QUEUE_SELECT, 2) => Field::QueueSelect,
        (QUEUE_SIZE, 2) => Field::QueueSize,
        (QUEUE_MSIX_VECTOR, 2) => Field::QueueMsixVector,
        (QUEUE_ENABLE, 2) => Field::QueueEnable,
        (QUEUE_NOTIFY_OFF, 2) => Field::QueueNotifyOff,
        (o, 4 | 8) if (QUEUE_DESC..QUEUE_DEVICE + 8).contains(&o) && o % len as u64 == 0 => {
            let high = o % 8 == 4;
            match o & !7 {
                QUEUE_DESC => Field::QueueDesc { high },
                QUEUE_DRIVER => Field::QueueDriver { high },
                _ => Field::QueueDevice { high },
            }
        }
        _ => return None,
    };
    Some((field, len == 8))
}

/// Replace the dword half (`high`) of `reg`, or all of it for a 64-bit access.
pub fn merge_u64(reg: u64, value: u64, high: bool, wide: bool) -> u64 {
    match (wide, high) {
        (true, _) => value,
        (false, false) => (reg & !0xffff_ffff) | (value & 0xffff_ffff),
        (false, true) => (reg & 0xffff_ffff) | (value << 32),
    }
}

/// The half (`high`) of `reg` a 32-bit access reads, or all of it for a 64-bit access.
pub fn extract_u64(reg: u64, high: bool, wide: bool) -> u64 {
    match (wide, high) {
        (true, _) => reg,
        (false, false) => reg & 0xffff_ffff,
        (false, true) => reg >> 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_natural_widths_only() {
        assert_eq!(decode(0x14, 1), Some((Field::DeviceStatus, false)));
        assert_eq!(decode(0x14, 2), None);
        assert_eq!(
            decode(0x24, 4),
            Some((Field::QueueDesc { high: true }, false))
        );
        assert_eq!(
            decode(0x28, 8),
            Some((Field::QueueDriver { high: false }, true))
        );
        assert_eq!(decode(0x2c, 8), None);
        assert_eq!(decode(0x36, 2), None);
        assert_eq!(decode(0x40, 4), None);
    }

    #[test]
    fn u64_halves() {
        let r = merge_u64(0x1111_2222_3333_4444, 0xaaaa_bbbb, true, false);
        assert_eq!(r, 0xaaaa_bbbb_3333_4444);
        assert_eq!(extract_u64(r, false, false), 0x3333_4444);
        assert_eq!(merge_u64(r, 5, false, true), 5);
    }
}
