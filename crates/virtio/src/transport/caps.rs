//! Layout of the virtio BAR and the vendor capabilities that describe it (virtio 1.2
//! §4.1.4).

use pci::{ConfigError, PciConfiguration, CAP_ID_VENDOR};

/// The BAR index holding every virtio structure (a 64-bit memory BAR).
pub const VIRTIO_PCI_BAR: u8 = 0;
/// Size of that BAR.
pub const VIRTIO_PCI_BAR_SIZE: u64 = 0x8000;

/// Offsets of the structures inside the BAR.
pub mod bar_layout {
    pub const COMMON: u64 = 0x0000;
    pub const COMMON_LEN: u64 = 0x38;
    pub const ISR: u64 = 0x1000;
    pub const ISR_LEN: u64 = 4;
    pub const DEVICE: u64 = 0x2000;
    pub const DEVICE_MAX_LEN: u64 = 0x1000;
    pub const NOTIFY: u64 = 0x3000;
    pub const NOTIFY_LEN: u64 = 0x1000;
    /// Each queue's notify register is `NOTIFY + queue * NOTIFY_OFF_MULTIPLIER`.
    pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
    pub const MSIX_TABLE: u64 = 0x4000;
    pub const MSIX_PBA: u64 = 0x6000;
    pub const MSIX_PBA_END: u64 = 0x7000;
}

const CFG_TYPE_COMMON: u8 = 1;
const CFG_TYPE_NOTIFY: u8 = 2;
const CFG_TYPE_ISR: u8 = 3;
const CFG_TYPE_DEVICE: u8 = 4;
const CFG_TYPE_PCI: u8 = 5;

/// Offset of `pci_cfg_data` inside the PCI-config-access capability.
pub const PCI_CFG_DATA: usize = 16;
/// Offsets of the access window fields inside that capability.
pub const PCI_CFG_BAR: usize = 4;
pub const PCI_CFG_OFFSET: usize = 8;
pub const PCI_CFG_LENGTH: usize = 12;

/// Body (after ID / next) of a `virtio_pci_cap`, with `extra` appended.
fn cap_body(cfg_type: u8, bar: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    let mut body = vec![(16 + extra.len()) as u8, cfg_type, bar, 0, 0, 0];
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(extra);
    body
}

/// Add the common, notify, ISR, device (when `device_len > 0`) and PCI-config-access
/// capabilities. Returns the offset of the PCI-config-access capability.
pub fn add_virtio_caps(
    config: &mut PciConfiguration,
    device_len: u64,
    queues: usize,
) -> Result<usize, ConfigError> {
    use bar_layout::*;
    let bar = VIRTIO_PCI_BAR;
    let ro = |body: &[u8]| vec![0u8; body.len()];
    let common = cap_body(CFG_TYPE_COMMON, bar, COMMON as u32, COMMON_LEN as u32, &[]);
    config.add_capability(CAP_ID_VENDOR, &common, &ro(&common))?;
    let notify_len = (queues as u32 * NOTIFY_OFF_MULTIPLIER).max(NOTIFY_OFF_MULTIPLIER);
    let notify = cap_body(
        CFG_TYPE_NOTIFY,
        bar,
        NOTIFY as u32,
        notify_len,
        &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
    );
    config.add_capability(CAP_ID_VENDOR, &notify, &ro(&notify))?;
    let isr = cap_body(CFG_TYPE_ISR, bar, ISR as u32, ISR_LEN as u32, &[]);
    config.add_capability(CAP_ID_VENDOR, &isr, &ro(&isr))?;
    if device_len > 0 {
        let dev = cap_body(
            CFG_TYPE_DEVICE,
            bar,
            DEVICE as u32,
            device_len.min(DEVICE_MAX_LEN) as u32,
            &[],
        );
        config.add_capability(CAP_ID_VENDOR, &dev, &ro(&dev))?;
    }
    // Alternative access through config space: bar, offset, length and data are writable.
    let pci = cap_body(CFG_TYPE_PCI, 0, 0, 0, &[0; 4]);
    let mut mask = ro(&pci);
    mask[PCI_CFG_BAR - 2] = 0xff;
    mask[PCI_CFG_OFFSET - 2..PCI_CFG_OFFSET + 2].fill(0xff);
    mask[PCI_CFG_LENGTH - 2..PCI_CFG_LENGTH + 2].fill(0xff);
    mask[PCI_CFG_DATA - 2..PCI_CFG_DATA + 2].fill(0xff);
    config.add_capability(CAP_ID_VENDOR, &pci, &mask)
}
