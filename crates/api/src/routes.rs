//! Maps an HTTP method, path and body to an [`ApiRequest`], with Firecracker's routing rules and
//! error texts: GET never has a body, PUT and PATCH always have one, a resource id in the path
//! must match the one in the body, and any other method/path pair is refused.

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::controller::balloon::BalloonRequest;
use crate::controller::forwards::ForwardRequest;
use crate::controller::ApiRequest;
use crate::model::{
    ActionBody, BootSource, Drive, DriveUpdate, MachineConfig, MachineConfigUpdate,
    NetworkInterface, NetworkInterfaceUpdate, VmStateBody, Vsock,
};
use crate::snapshot_model::{SnapshotCreateParams, SnapshotLoadParams};
use crate::validate::{validate_id, ValidationError};

#[derive(Debug, Error)]
pub enum RouteError {
    #[error("Invalid request method and/or path: {method} {path}.")]
    InvalidPathMethod { method: String, path: String },
    #[error("GET request cannot have a body.")]
    GetWithBody,
    #[error("Empty PUT request.")]
    EmptyPut,
    #[error("Empty PATCH request.")]
    EmptyPatch,
    #[error("{0}")]
    InvalidId(#[from] ValidationError),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("The request body cannot contain arrays: every field is a string, number, boolean or object.")]
    ArrayInBody,
    #[error("Please specify at least one property to patch: path_on_host, rate_limiter.")]
    NothingToPatch,
    #[error("allow_external_backing applies to a new path_on_host only.")]
    BackingWithoutPath,
    #[error("`{0}` is not a host port (1-65535).")]
    BadHostPort(String),
    #[error("Unrecognized PUT request path `{0}`.")]
    UnrecognizedPath(String),
    #[error("The id from the path does not match the id from the body!")]
    IdMismatch,
    #[error("An error occurred when deserializing the json body of a request: {0}.")]
    Json(#[from] serde_json::Error),
}

/// Routes one request. `body` is `None` when the request has no (or an empty) body.
pub fn parse_request(
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<ApiRequest, RouteError> {
    let tokens: Vec<&str> = path.trim_start_matches('/').split_terminator('/').collect();
    let invalid = || RouteError::InvalidPathMethod {
        method: method.to_string(),
        path: path.to_string(),
    };
    match (method, body) {
        ("GET", Some(_)) => Err(RouteError::GetWithBody),
        ("GET", None) => match tokens.as_slice() {
            [] => Ok(ApiRequest::GetInstanceInfo),
            ["version"] => Ok(ApiRequest::GetVersion),
            ["machine-config"] => Ok(ApiRequest::GetMachineConfig),
            ["vm", "config"] => Ok(ApiRequest::GetVmConfig),
            ["balloon"] => Ok(ApiRequest::Balloon(BalloonRequest::Get)),
            ["balloon", "statistics"] => Ok(ApiRequest::Balloon(BalloonRequest::GetStatistics)),
            ["mmds"] => Ok(ApiRequest::GetMmds),
            ["network-interfaces", id, "forwards"] => {
                validate_id(id)?;
                Ok(ApiRequest::Forward(ForwardRequest::List {
                    iface_id: id.to_string(),
                }))
            }
            ["migration"] => Ok(ApiRequest::GetMigration),
            _ => Err(invalid()),
        },
        ("PUT", None) => Err(RouteError::EmptyPut),
        ("PUT", Some(body)) => match tokens.as_slice() {
            ["actions"] => {
                let action: ActionBody = parse_body(body)?;
                Ok(ApiRequest::Action(action.action_type))
            }
            ["boot-source"] => Ok(ApiRequest::PutBootSource(parse_body::<BootSource>(body)?)),
            ["machine-config"] => Ok(ApiRequest::PutMachineConfig(parse_body::<MachineConfig>(
                body,
            )?)),
            ["snapshot", "create"] => Ok(ApiRequest::CreateSnapshot(parse_body::<
                SnapshotCreateParams,
            >(body)?)),
            ["snapshot", "load"] => Ok(ApiRequest::LoadSnapshot(parse_body::<SnapshotLoadParams>(
                body,
            )?)),
            ["vsock"] => Ok(ApiRequest::PutVsock(parse_body::<Vsock>(body)?)),
            ["migration", "send"] => Ok(ApiRequest::SendMigration(parse_body(body)?)),
            ["migration", "cancel"] => {
                parse_body::<crate::migration_model::MigrationCancelParams>(body)?;
                Ok(ApiRequest::CancelMigration)
            }
            ["metrics"] => Ok(ApiRequest::PutMetrics(parse_body(body)?)),
            ["logger"] => Ok(ApiRequest::PutLogger(parse_body(body)?)),
            ["balloon"] => Ok(ApiRequest::Balloon(BalloonRequest::Put(parse_body(body)?))),
            // MMDS documents hold any JSON, arrays included.
            ["mmds"] => Ok(ApiRequest::PutMmds(serde_json::from_slice(body)?)),
            ["mmds", "config"] => Ok(ApiRequest::PutMmdsConfig(serde_json::from_slice(body)?)),
            ["mmds", other] => Err(RouteError::UnrecognizedPath(other.to_string())),
            ["drives"] | ["drives", ""] => Err(ValidationError::EmptyId.into()),
            ["drives", id] => {
                validate_id(id)?;
                let drive: Drive = parse_body(body)?;
                check_ids_match(id, &drive.drive_id)?;
                Ok(ApiRequest::PutDrive(drive))
            }
            ["network-interfaces"] | ["network-interfaces", ""] => {
                Err(ValidationError::EmptyId.into())
            }
            ["network-interfaces", id, "forwards"] => {
                validate_id(id)?;
                Ok(ApiRequest::Forward(ForwardRequest::Add {
                    iface_id: id.to_string(),
                    forward: parse_body(body)?,
                }))
            }
            ["network-interfaces", id] => {
                validate_id(id)?;
                let iface: NetworkInterface = parse_body(body)?;
                check_ids_match(id, &iface.iface_id)?;
                Ok(ApiRequest::PutNetworkInterface(iface))
            }
            _ => Err(invalid()),
        },
        ("PATCH", None) => Err(RouteError::EmptyPatch),
        ("PATCH", Some(body)) => match tokens.as_slice() {
            ["machine-config"] => Ok(ApiRequest::PatchMachineConfig(parse_body::<
                MachineConfigUpdate,
            >(body)?)),
            ["vm"] => {
                let target: VmStateBody = parse_body(body)?;
                Ok(ApiRequest::PatchVmState(target.state))
            }
            ["drives"] | ["drives", ""] => Err(ValidationError::EmptyId.into()),
            ["drives", id] => {
                validate_id(id)?;
                let update: DriveUpdate = parse_body(body)?;
                check_ids_match(id, &update.drive_id)?;
                if update.path_on_host.is_none() && update.rate_limiter.is_none() {
                    return Err(RouteError::NothingToPatch);
                }
                if update.path_on_host.is_none() && update.allow_external_backing.is_some() {
                    return Err(RouteError::BackingWithoutPath);
                }
                Ok(ApiRequest::PatchDrive(update))
            }
            ["network-interfaces"] | ["network-interfaces", ""] => {
                Err(ValidationError::EmptyId.into())
            }
            ["network-interfaces", id] => {
                validate_id(id)?;
                let update: NetworkInterfaceUpdate = parse_body(body)?;
                check_ids_match(id, &update.iface_id)?;
                Ok(ApiRequest::PatchNetworkInterface(update))
            }
            ["balloon"] => Ok(ApiRequest::Balloon(BalloonRequest::Patch(parse_body(
                body,
            )?))),
            ["balloon", "statistics"] => Ok(ApiRequest::Balloon(BalloonRequest::PatchStatistics(
                parse_body(body)?,
            ))),
            ["mmds"] => Ok(ApiRequest::PatchMmds(serde_json::from_slice(body)?)),
            _ => Err(invalid()),
        },
        ("DELETE", None) => match tokens.as_slice() {
            ["network-interfaces", id, "forwards", port] => {
                validate_id(id)?;
                let host_port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| RouteError::BadHostPort(port.to_string()))?;
                Ok(ApiRequest::Forward(ForwardRequest::Remove {
                    iface_id: id.to_string(),
                    host_port,
                }))
            }
            _ => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

/// Deserializes a JSON object body. serde would also take a struct as an array of its field
/// values (`{"rate_limiter": [null, null]}`); no request body has an array field, so a body
/// that is not an object or holds an array anywhere is refused.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RouteError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
        return Err(RouteError::NotAnObject);
    }
    let value = serde_json::from_slice(body)?;
    if contains_array(body) {
        return Err(RouteError::ArrayInBody);
    }
    Ok(value)
}

/// Whether well-formed JSON `text` has a `[` outside its strings.
fn contains_array(text: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'[' {
            return true;
        }
    }
    false
}

fn check_ids_match(from_path: &str, from_body: &str) -> Result<(), RouteError> {
    if from_path == from_body {
        Ok(())
    } else {
        Err(RouteError::IdMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionType, VmStateTarget};

    fn route(method: &str, path: &str, body: &str) -> Result<ApiRequest, RouteError> {
        let body = (!body.is_empty()).then_some(body.as_bytes());
        parse_request(method, path, body)
    }

    fn message(result: Result<ApiRequest, RouteError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn gets() {
        assert_eq!(route("GET", "/", "").unwrap(), ApiRequest::GetInstanceInfo);
        assert_eq!(route("GET", "", "").unwrap(), ApiRequest::GetInstanceInfo);
        assert_eq!(
            route("GET", "/version", "").unwrap(),
            ApiRequest::GetVersion
        );
        assert_eq!(
            route("GET", "/machine-config", "").unwrap(),
            ApiRequest::GetMachineConfig
        );
        assert_eq!(
            route("GET", "/vm/config", "").unwrap(),
            ApiRequest::GetVmConfig
        );
        assert_eq!(
            message(route("GET", "/", "{}")),
            "GET request cannot have a body."
        );
    }

    #[test]
    fn mmds_routes() {
        assert_eq!(route("GET", "/mmds", "").unwrap(), ApiRequest::GetMmds);
        assert_eq!(
            route("PUT", "/mmds", r#"{"a": [1, {"b": null}]}"#).unwrap(),
            ApiRequest::PutMmds(serde_json::json!({"a": [1, {"b": null}]}))
        );
        assert_eq!(
            route("PATCH", "/mmds", r#"{"a": null}"#).unwrap(),
            ApiRequest::PatchMmds(serde_json::json!({"a": null}))
        );
        assert!(matches!(
            route(
                "PUT",
                "/mmds/config",
                r#"{"version": "V2", "network_interfaces": ["eth0"]}"#
            ),
            Ok(ApiRequest::PutMmdsConfig(_))
        ));
        assert_eq!(
            message(route("PUT", "/mmds/nope", "{}")),
            "Unrecognized PUT request path `nope`."
        );
        assert!(
            message(route("PUT", "/mmds", "{")).starts_with("An error occurred when deserializing")
        );
        assert_eq!(message(route("PUT", "/mmds", "")), "Empty PUT request.");
        assert!(route("PATCH", "/mmds/config", "{}").is_err());
    }

    #[test]
    fn unknown_method_or_path() {
        assert_eq!(
            message(route("GET", "/nope", "")),
            "Invalid request method and/or path: GET /nope."
        );
        assert_eq!(
            message(route("DELETE", "/drives/rootfs", "")),
            "Invalid request method and/or path: DELETE /drives/rootfs."
        );
        assert_eq!(
            message(route("POST", "/actions", "{}")),
            "Invalid request method and/or path: POST /actions."
        );
        assert!(matches!(
            route("GET", "/vm/config/extra", ""),
            Err(RouteError::InvalidPathMethod { .. })
        ));
        assert!(matches!(
            route("PUT", "/drives/a/b", "{}"),
            Err(RouteError::InvalidPathMethod { .. })
        ));
        assert!(matches!(
            route("PUT", "/vm", r#"{"state":"Paused"}"#),
            Err(RouteError::InvalidPathMethod { .. })
        ));
    }

    #[test]
    fn put_and_patch_need_a_body() {
        assert_eq!(message(route("PUT", "/actions", "")), "Empty PUT request.");
        assert_eq!(message(route("PATCH", "/vm", "")), "Empty PATCH request.");
    }

    #[test]
    fn actions_and_vm_state() {
        assert_eq!(
            route("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#).unwrap(),
            ApiRequest::Action(ActionType::InstanceStart)
        );
        assert_eq!(
            route("PATCH", "/vm", r#"{"state":"Resumed"}"#).unwrap(),
            ApiRequest::PatchVmState(VmStateTarget::Resumed)
        );
        let err = message(route("PUT", "/actions", r#"{"action_type":"Reboot"}"#));
        assert!(err.contains("unknown variant `Reboot`"), "{err}");
    }

    #[test]
    fn balloon_routes() {
        let put = r#"{"amount_mib":64,"deflate_on_oom":false,"stats_polling_interval_s":1}"#;
        assert!(matches!(
            route("PUT", "/balloon", put).unwrap(),
            ApiRequest::Balloon(BalloonRequest::Put(_))
        ));
        assert!(matches!(
            route("PATCH", "/balloon", r#"{"amount_mib":8}"#).unwrap(),
            ApiRequest::Balloon(BalloonRequest::Patch(_))
        ));
        assert!(matches!(
            route(
                "PATCH",
                "/balloon/statistics",
                r#"{"stats_polling_interval_s":2}"#
            )
            .unwrap(),
            ApiRequest::Balloon(BalloonRequest::PatchStatistics(_))
        ));
        assert_eq!(
            route("GET", "/balloon/statistics", "").unwrap(),
            ApiRequest::Balloon(BalloonRequest::GetStatistics)
        );
        assert!(route("PATCH", "/balloon", r#"{"amount_mib":8,"x":1}"#).is_err());
        assert!(route("PUT", "/balloon/statistics", put).is_err());
    }

    #[test]
    fn vsock_is_firecrackers_shape() {
        assert_eq!(
            route(
                "PUT",
                "/vsock",
                r#"{"guest_cid":3,"uds_path":"/tmp/v.sock"}"#
            )
            .unwrap(),
            ApiRequest::PutVsock(Vsock {
                vsock_id: None,
                guest_cid: 3,
                uds_path: "/tmp/v.sock".into(),
            })
        );
        let with_id = r#"{"vsock_id":"v","guest_cid":3,"uds_path":"/v"}"#;
        assert!(route("PUT", "/vsock", with_id).is_ok());
        for bad in [
            r#"{"guest_cid":3}"#,
            r#"{"guest_cid":-1,"uds_path":"/v"}"#,
            r#"{"guest_cid":4294967296,"uds_path":"/v"}"#,
            r#"{"guest_cid":3,"uds_path":"/v","extra":1}"#,
        ] {
            assert!(route("PUT", "/vsock", bad).is_err(), "{bad}");
        }
        assert!(route("GET", "/vsock", "").is_err());
    }

    #[test]
    fn snapshot_requests() {
        let create = route(
            "PUT",
            "/snapshot/create",
            r#"{"snapshot_type":"Full","snapshot_path":"/s","mem_file_path":"/m"}"#,
        )
        .unwrap();
        assert!(matches!(create, ApiRequest::CreateSnapshot(ref p) if p.mem_file_path == "/m"));
        let load = route(
            "PUT",
            "/snapshot/load",
            r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"resume_vm":true}"#,
        )
        .unwrap();
        assert!(matches!(load, ApiRequest::LoadSnapshot(ref p) if p.resume_vm));
        let err = message(route(
            "PUT",
            "/snapshot/create",
            r#"{"snapshot_path":"/s"}"#,
        ));
        assert!(err.contains("mem_file_path"), "{err}");
        assert!(matches!(
            route("GET", "/snapshot/create", ""),
            Err(RouteError::InvalidPathMethod { .. })
        ));
    }

    #[test]
    fn ids_in_path_and_body() {
        let body = r#"{"drive_id":"rootfs","path_on_host":"/x","is_root_device":true}"#;
        assert!(matches!(
            route("PUT", "/drives/rootfs", body).unwrap(),
            ApiRequest::PutDrive(_)
        ));
        assert_eq!(
            message(route("PUT", "/drives/other", body)),
            "The id from the path does not match the id from the body!"
        );
        assert_eq!(
            message(route("PUT", "/drives/", body)),
            "The ID cannot be empty."
        );
        assert_eq!(
            message(route("PUT", "/drives", body)),
            "The ID cannot be empty."
        );
        assert_eq!(
            message(route("PUT", "/drives/a.b", body)),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        let net = r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#;
        assert!(matches!(
            route("PUT", "/network-interfaces/eth0", net).unwrap(),
            ApiRequest::PutNetworkInterface(_)
        ));
        assert_eq!(
            message(route("PUT", "/network-interfaces/eth1", net)),
            "The id from the path does not match the id from the body!"
        );
    }

    #[test]
    fn json_errors_name_the_problem() {
        let err = message(route("PUT", "/machine-config", r#"{"vcpu_count": 2}"#));
        assert!(err.contains("missing field `mem_size_mib`"), "{err}");
        let err = message(route(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": "2", "mem_size_mib": 128}"#,
        ));
        assert!(
            err.contains("invalid type: string \"2\", expected u8"),
            "{err}"
        );
        let err = message(route(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 128, "ht_enabled": false}"#,
        ));
        assert!(err.contains("unknown field `ht_enabled`"), "{err}");
        let err = message(route("PUT", "/boot-source", "{\"kernel_image_path\": "));
        assert!(
            err.starts_with("An error occurred when deserializing the json body of a request: "),
            "{err}"
        );
        let err = message(route("PATCH", "/machine-config", r#"{"vcpu_count": 300}"#));
        assert!(
            err.contains("invalid value: integer `300`, expected u8"),
            "{err}"
        );
        assert!(parse_request("PUT", "/actions", Some(&[0xff, 0xfe])).is_err());
        assert_eq!(
            message(route("PUT", "/actions", r#" ["InstanceStart"]"#)),
            "The request body must be a JSON object."
        );
        assert!(matches!(
            route("PUT", "/actions", "[1,"),
            Err(RouteError::Json(_))
        ));
    }
}

#[cfg(test)]
mod random_input_tests {
    use super::*;

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const SEEDS: [&str; 6] = [
        r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#,
        r#"{"kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": "/i"}"#,
        r#"{"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": true, "rate_limiter": {"ops": {"size": 1, "refill_time": 2}}}"#,
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}"#,
        r#"{"action_type": "InstanceStart"}"#,
        r#"{"state": "Paused"}"#,
    ];
    const ROUTES: [(&str, &str); 8] = [
        ("PUT", "/machine-config"),
        ("PATCH", "/machine-config"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/rootfs"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/actions"),
        ("PATCH", "/vm"),
        ("GET", "/"),
    ];

    /// Mutated bodies on every route: the router never panics, and every refusal has a
    /// message a client can act on.
    #[test]
    fn mutated_bodies_are_routed_or_refused_with_a_message() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut refused = 0;
        for _ in 0..20_000 {
            let mut body = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(body.len() + 1);
                match rng.below(4) {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = rng.next() as u8,
                    2 => {
                        let token = [
                            &b"["[..],
                            b"]",
                            b"{",
                            b"}",
                            b"\"",
                            b",",
                            b":",
                            b"null",
                            b"-1",
                            b"\\",
                        ];
                        let piece = token[rng.below(token.len())];
                        body.splice(at..at, piece.iter().copied());
                    }
                    _ => body.truncate(at),
                }
            }
            let (method, path) = ROUTES[rng.below(ROUTES.len())];
            let body = (!body.is_empty()).then_some(&body[..]);
            if let Err(err) = parse_request(method, path, body) {
                refused += 1;
                assert!(err.to_string().len() > 10, "{err:?}");
            }
        }
        assert!(
            refused > 10_000,
            "mutations should mostly break the bodies: {refused}"
        );
    }
}
