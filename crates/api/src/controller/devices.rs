//! `PUT /drives/{id}` and `PUT /network-interfaces/{id}` before boot: adding or replacing
//! a device in the configuration, with Firecracker's rules (one root device, kept first;
//! unique host devices and MAC addresses; bounded counts).

use super::{ApiReply, ControlError, VmController, MAX_DRIVES, MAX_NETWORK_INTERFACES};
use crate::model::{Drive, NetworkInterface};
use crate::validate::{parse_mac, validate_drive, validate_network_interface};

impl VmController {
    /// Adds a drive, or replaces the one with the same id. The root device is kept first, as
    /// Firecracker does, so it becomes the guest's first disk.
    pub(super) fn insert_drive(&mut self, drive: Drive) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        validate_drive(&drive)?;
        let existing = self
            .drives
            .iter()
            .position(|d| d.drive_id == drive.drive_id);
        let other_root = self
            .drives
            .iter()
            .any(|d| d.is_root_device && d.drive_id != drive.drive_id);
        if drive.is_root_device && other_root {
            return Err(ControlError::RootDeviceExists);
        }
        match existing {
            Some(index) => {
                self.drives.remove(index);
            }
            None if self.drives.len() >= MAX_DRIVES => return Err(ControlError::TooManyDrives),
            None => {}
        }
        match (drive.is_root_device, existing) {
            (true, _) => self.drives.insert(0, drive),
            (false, Some(index)) => self.drives.insert(index, drive),
            (false, None) => self.drives.push(drive),
        }
        Ok(ApiReply::NoContent)
    }

    /// Adds an interface, or replaces the one with the same id; host devices and MAC
    /// addresses must stay unique.
    pub(super) fn insert_network_interface(
        &mut self,
        iface: NetworkInterface,
    ) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        validate_network_interface(&iface)?;
        let others = self
            .network_interfaces
            .iter()
            .filter(|other| other.iface_id != iface.iface_id);
        for other in others {
            if let (Some(mine), Some(theirs)) = (&iface.host_dev_name, &other.host_dev_name) {
                if mine == theirs {
                    return Err(ControlError::HostDevNameInUse(mine.clone()));
                }
            }
            if let (Some(mine), Some(theirs)) = (&iface.guest_mac, &other.guest_mac) {
                if parse_mac(mine)? == parse_mac(theirs)? {
                    return Err(ControlError::GuestMacInUse(mine.clone()));
                }
            }
        }
        let existing = self
            .network_interfaces
            .iter()
            .position(|other| other.iface_id == iface.iface_id);
        match existing {
            Some(index) => self.network_interfaces[index] = iface,
            None if self.network_interfaces.len() >= MAX_NETWORK_INTERFACES => {
                return Err(ControlError::TooManyNetworkInterfaces)
            }
            None => self.network_interfaces.push(iface),
        }
        Ok(ApiReply::NoContent)
    }
}
