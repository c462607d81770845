//! The host bridge function at 00.0.

use crate::config::{PciConfiguration, PciHeader};
use crate::root::PciDevice;

/// A bare host bridge (class 06.00) with no BARs, as on 00.0 of every PC.
pub struct HostBridge {
    config: PciConfiguration,
}

impl HostBridge {
    pub fn new() -> Self {
        let header = PciHeader {
            vendor_id: 0x8086,
            device_id: 0x0d57,
            class: 0x06,
            subclass: 0x00,
            ..Default::default()
        };
        Self {
            config: PciConfiguration::new(&header),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
}
