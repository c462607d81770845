//! Bodies of vessel's live migration requests (Cloud Hypervisor's `send-migration` in
//! spirit; Firecracker has none): `PUT /migration/send`.

use serde::{Deserialize, Serialize};

fn default_max_downtime_ms() -> u64 {
    300
}

/// `PUT /migration/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSendParams {
    /// Where the receiver (`vessel run --incoming URL`) listens: `unix:PATH` or
    /// `tcp:HOST:PORT` (an IP address; trusted networks only).
    pub destination_url: String,
    /// The pause the guest may see, in ms (default 300): pre-copy goes on until the rest
    /// fits in it at the measured bandwidth, or until its round limit.
    #[serde(default = "default_max_downtime_ms")]
    pub max_downtime_ms: u64,
    /// At most this many MiB/s of guest memory and disk data (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib_s: Option<u64>,
    /// Stream the disks too, for hosts without shared storage (default false); the
    /// receiver must be started to take them (`vessel start NAME --incoming URL
    /// --copy-storage`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_storage: bool,
}

/// `PUT /migration/cancel` takes an empty object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationCancelParams {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let p: MigrationSendParams =
            serde_json::from_str(r#"{"destination_url": "unix:/tmp/m"}"#).unwrap();
        assert_eq!(p.max_downtime_ms, 300);
        assert_eq!(p.bandwidth_mib_s, None);
        assert!(!p.copy_storage);
        let p: MigrationSendParams =
            serde_json::from_str(r#"{"destination_url": "unix:/m", "copy_storage": true}"#)
                .unwrap();
        assert!(p.copy_storage);
        assert!(serde_json::from_str::<MigrationSendParams>(
            r#"{"destination_url": "unix:/m", "copy_storage": "yes"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<MigrationSendParams>(
            r#"{"destination_url": "unix:/m", "downtime": 5}"#
        )
        .is_err());
        assert!(serde_json::from_str::<MigrationSendParams>("{}").is_err());
    }
}
