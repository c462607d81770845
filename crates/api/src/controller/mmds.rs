//! `PUT/PATCH/GET /mmds` and `PUT /mmds/config`, as Firecracker takes them. The document can
//! be written at any time (the guest sees changes at once); the configuration (version,
//! the NICs that reach the MMDS, its address, IMDS compatibility) only before the microVM
//! starts. A document larger than the size limit is refused with `413`.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::{ApiReply, ControlError, VmController};
pub use mmds::MmdsVersion;

/// `PUT /mmds/config` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default)]
    pub version: MmdsVersion,
    pub network_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub imds_compat: bool,
}

/// The MMDS handed to the VMM at start: the service and where the guest reaches it.
#[derive(Debug, Clone)]
pub struct MmdsAttachment {
    pub service: mmds::SharedMmds,
    pub ipv4: Ipv4Addr,
    /// `iface_id`s of the NICs whose frames to `ipv4` go to the MMDS.
    pub network_interfaces: Vec<String>,
}

impl PartialEq for MmdsAttachment {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.service, &other.service)
            && self.ipv4 == other.ipv4
            && self.network_interfaces == other.network_interfaces
    }
}

impl Eq for MmdsAttachment {}

#[derive(Debug, Error)]
pub enum MmdsRequestError {
    #[error("MMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty.")]
    EmptyNetworkIfaceList,
    #[error("MMDS config error: The MMDS IPv4 address is not link local.")]
    InvalidIpv4Addr,
    #[error("MMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.")]
    InvalidNetworkInterfaceId,
    #[error("MMDS error: {0}")]
    Store(mmds::StoreError),
    #[error("MMDS limit exceeded error: {0}")]
    LimitExceeded(mmds::StoreError),
    #[error("MMDS error: cannot make the token key: {0}")]
    Token(#[from] mmds::TokenError),
}

impl From<mmds::StoreError> for MmdsRequestError {
    fn from(e: mmds::StoreError) -> Self {
        match e {
            mmds::StoreError::LimitExceeded => Self::LimitExceeded(e),
            e => Self::Store(e),
        }
    }
}

/// A usable MMDS address: link-local 169.254.1.0 – 169.254.254.255.
pub fn is_link_local_valid(ip: Ipv4Addr) -> bool {
    matches!(ip.octets(), [169, 254, 1..=254, _])
}

fn lock(service: &Mutex<mmds::Mmds>) -> MutexGuard<'_, mmds::Mmds> {
    service.lock().unwrap_or_else(|p| p.into_inner())
}

impl VmController {
    /// The service, made on first use (its token key comes from getrandom).
    fn mmds_service(&mut self) -> Result<mmds::SharedMmds, ControlError> {
        if let Some(service) = &self.mmds {
            return Ok(service.clone());
        }
        let service = Arc::new(Mutex::new(
            mmds::Mmds::new(self.mmds_size_limit).map_err(MmdsRequestError::from)?,
        ));
        self.mmds = Some(service.clone());
        Ok(service)
    }

    pub(super) fn get_mmds(&mut self) -> Result<ApiReply, ControlError> {
        let service = self.mmds_service()?;
        let value = lock(&service).store().value();
        super::json(&value)
    }

    pub(super) fn put_mmds(&mut self, data: Value) -> Result<ApiReply, ControlError> {
        let service = self.mmds_service()?;
        let result = lock(&service).store_mut().put(data);
        result.map_err(MmdsRequestError::from)?;
        Ok(ApiReply::NoContent)
    }

    pub(super) fn patch_mmds(&mut self, patch: &Value) -> Result<ApiReply, ControlError> {
        let service = self.mmds_service()?;
        let result = lock(&service).store_mut().patch(patch);
        result.map_err(MmdsRequestError::from)?;
        Ok(ApiReply::NoContent)
    }

    pub(super) fn set_mmds_config(&mut self, config: MmdsConfig) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        let ipv4 = match config.ipv4_address {
            None => mmds::DEFAULT_IPV4,
            Some(ip) if is_link_local_valid(ip) => ip,
            Some(_) => return Err(MmdsRequestError::InvalidIpv4Addr.into()),
        };
        if config.network_interfaces.is_empty() {
            return Err(MmdsRequestError::EmptyNetworkIfaceList.into());
        }
        let known = |id: &String| self.network_interfaces.iter().any(|n| &n.iface_id == id);
        if !config.network_interfaces.iter().all(known) {
            return Err(MmdsRequestError::InvalidNetworkInterfaceId.into());
        }
        let service = self.mmds_service()?;
        {
            let mut service = lock(&service);
            service.set_version(config.version);
            service.set_imds_compat(config.imds_compat);
        }
        self.mmds_config = Some(MmdsConfig {
            ipv4_address: Some(ipv4),
            ..config
        });
        Ok(ApiReply::NoContent)
    }

    /// What the VMM gets at start: the MMDS, if `PUT /mmds/config` named NICs for it.
    pub(super) fn mmds_attachment(&self) -> Option<MmdsAttachment> {
        let config = self.mmds_config.as_ref()?;
        Some(MmdsAttachment {
            service: self.mmds.clone()?,
            ipv4: config.ipv4_address.unwrap_or(mmds::DEFAULT_IPV4),
            network_interfaces: config.network_interfaces.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::{ApiRequest, InstanceIdentity};
    use crate::model::{ActionType, BootSource, NetworkInterface, VmConfigSnapshot};

    /// Keeps what `start` was given.
    #[derive(Default)]
    struct Started(Mutex<Option<VmConfigSnapshot>>);

    impl crate::VmmBackend for Started {
        fn start(&self, config: &VmConfigSnapshot) -> Result<(), crate::BackendError> {
            *self.0.lock().unwrap() = Some(config.clone());
            Ok(())
        }
        fn send_ctrl_alt_del(&self) -> Result<(), crate::BackendError> {
            Ok(())
        }
        fn pause(&self) -> Result<(), crate::BackendError> {
            Ok(())
        }
        fn resume(&self) -> Result<(), crate::BackendError> {
            Ok(())
        }
    }

    fn controller() -> (VmController, Arc<Started>) {
        let backend = Arc::new(Started::default());
        let mut c = VmController::new(InstanceIdentity::default(), backend.clone());
        c.set_mmds_size_limit(64);
        (c, backend)
    }

    fn get(c: &mut VmController) -> Value {
        match c.handle(ApiRequest::GetMmds).unwrap() {
            ApiReply::Json(body) => serde_json::from_slice(&body).unwrap(),
            ApiReply::NoContent => panic!("GET /mmds has a body"),
        }
    }

    fn config(ifaces: &[&str]) -> MmdsConfig {
        MmdsConfig {
            version: MmdsVersion::V2,
            network_interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            ipv4_address: None,
            imds_compat: false,
        }
    }

    #[test]
    fn put_patch_get_and_the_size_limit() {
        let (mut c, _) = controller();
        assert_eq!(get(&mut c), json!({}));
        let err = c
            .handle(ApiRequest::PatchMmds(json!({"a": 1})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "MMDS error: The MMDS data store is not initialized."
        );
        assert_eq!(err.status_code(), 400);
        c.handle(ApiRequest::PutMmds(json!({"a": {"b": [1, 2]}, "c": "d"})))
            .unwrap();
        c.handle(ApiRequest::PatchMmds(
            json!({"a": {"b": null, "e": "f"}, "c": null}),
        ))
        .unwrap();
        assert_eq!(get(&mut c), json!({"a": {"e": "f"}}));
        let err = c
            .handle(ApiRequest::PutMmds(json!({"big": "x".repeat(64)})))
            .unwrap_err();
        assert_eq!(err.status_code(), 413);
        assert_eq!(
            err.to_string(),
            "MMDS limit exceeded error: The MMDS patch request doesn't fit."
        );
        assert_eq!(get(&mut c), json!({"a": {"e": "f"}}));
    }

    #[test]
    fn config_is_checked_and_reaches_the_vmm() {
        let (mut c, backend) = controller();
        let refused = |c: &mut VmController, cfg| {
            c.handle(ApiRequest::PutMmdsConfig(cfg))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&mut c, config(&[])).contains("is empty"));
        assert!(refused(&mut c, config(&["eth0"])).contains("does not correspond"));
        c.handle(ApiRequest::PutNetworkInterface(NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: None,
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            mode: Some(crate::model::NetworkMode::Nat),
            network: None,
        }))
        .unwrap();
        let mut bad_ip = config(&["eth0"]);
        bad_ip.ipv4_address = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert!(refused(&mut c, bad_ip).contains("not link local"));
        c.handle(ApiRequest::PutMmdsConfig(config(&["eth0"])))
            .unwrap();
        c.handle(ApiRequest::PutMmds(json!({"k": "v"}))).unwrap();
        let shown = c.full_config().mmds_config.unwrap();
        assert_eq!(shown.ipv4_address, Some(mmds::DEFAULT_IPV4));
        let kernel = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(kernel.path(), [0u8; 4096]).unwrap();
        c.handle(ApiRequest::PutBootSource(BootSource {
            kernel_image_path: kernel.path().to_str().unwrap().into(),
            boot_args: None,
            initrd_path: None,
        }))
        .unwrap();
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        let started = backend.0.lock().unwrap().clone().unwrap();
        let attached = started.mmds.unwrap();
        assert_eq!(attached.network_interfaces, vec!["eth0".to_string()]);
        assert_eq!(attached.ipv4, mmds::DEFAULT_IPV4);
        assert_eq!(lock(&attached.service).version(), MmdsVersion::V2);
        // The document stays writable; the configuration does not.
        c.handle(ApiRequest::PatchMmds(json!({"k": "w"}))).unwrap();
        assert_eq!(lock(&attached.service).store().value(), json!({"k": "w"}));
        assert_eq!(
            refused(&mut c, config(&["eth0"])),
            "The requested operation is not supported after starting the microVM."
        );
    }

    #[test]
    fn link_local_addresses() {
        for ok in ["169.254.169.254", "169.254.1.0", "169.254.254.255"] {
            assert!(is_link_local_valid(ok.parse().unwrap()), "{ok}");
        }
        for bad in ["169.254.0.1", "169.254.255.1", "10.0.0.1", "169.255.1.1"] {
            assert!(!is_link_local_valid(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn config_body_defaults_and_unknown_fields() {
        let c: MmdsConfig = serde_json::from_str(r#"{"network_interfaces": ["eth0"]}"#).unwrap();
        assert_eq!(c.version, MmdsVersion::V1);
        assert_eq!(c.ipv4_address, None);
        assert!(!c.imds_compat);
        let c: MmdsConfig = serde_json::from_str(
            r#"{"version": "V2", "network_interfaces": [], "ipv4_address": "169.254.170.2", "imds_compat": true}"#,
        )
        .unwrap();
        assert_eq!(c.version, MmdsVersion::V2);
        assert!(
            serde_json::from_str::<MmdsConfig>(r#"{"network_interfaces": [], "x": 1}"#).is_err()
        );
        assert!(serde_json::from_str::<MmdsConfig>(
            r#"{"version": "V3", "network_interfaces": []}"#
        )
        .is_err());
        assert!(serde_json::from_str::<MmdsConfig>(
            r#"{"network_interfaces": [], "ipv4_address": "x"}"#
        )
        .is_err());
    }
}
