//! `linux.resources` as the guest enforces it: a memory limit and reservation become the
//! container's `memory.max` and `memory.low`, a CFS quota its `cpu.max`, in a cgroup of
//! its own in the guest ([`Limits`]); a lone container's VM is sized to hold them
//! (`crate::vm`), and a pod's VM to hold the pod's resources its sandbox's annotations
//! give ([`pod_limits`]). Shares are relative weights among a host's containers and set
//! no limit; cpusets, realtime and swap beyond the limit (the VM has no swap) are refused.

use std::collections::HashMap;

use agent::protocol::Limits;
use serde::Deserialize;
use serde_json::Value;

use super::{unsupported, SpecError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Resources {
    #[allow(dead_code)]
    devices: Option<Value>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
}

/// `linux.resources.memory` (the CRI writes it, empty, for every container it is given
/// resources for).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Memory {
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
    /// cgroup v1 settings with no counterpart in the guest's cgroup v2: refused when set.
    swappiness: Option<u64>,
    #[serde(rename = "disableOOMKiller")]
    disable_oom_killer: Option<bool>,
    use_hierarchy: Option<bool>,
}

/// `linux.resources.cpu` (ctr fills it in).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Cpu {
    #[allow(dead_code)]
    shares: Option<u64>,
    quota: Option<i64>,
    period: Option<u64>,
    realtime_runtime: Option<i64>,
    realtime_period: Option<u64>,
    cpus: Option<String>,
    mems: Option<String>,
}

/// The CFS period when the spec gives a quota without one (the kernel's default).
const DEFAULT_PERIOD: u64 = 100_000;

/// A positive byte count, or none (0 and -1 mean no limit).
fn bytes(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0)
}

/// The limits the guest enforces; `None` when the spec sets none.
pub(super) fn limits(resources: Option<&Resources>) -> Result<Option<Limits>, SpecError> {
    let Some(r) = resources else { return Ok(None) };
    let mut limits = Limits {
        memory_max: None,
        memory_low: None,
        cpu_max: None,
    };
    if let Some(m) = &r.memory {
        if m.swappiness.is_some() || m.disable_oom_killer.is_some() || m.use_hierarchy.is_some() {
            return Err(unsupported(
                "linux.resources.memory: swappiness, disableOOMKiller and useHierarchy have no \
                 counterpart in the guest's cgroup v2",
            ));
        }
        limits.memory_max = bytes(m.limit);
        limits.memory_low = bytes(m.reservation);
        // Memory plus swap: no more than the limit itself, as the VM has no swap.
        if let Some(swap) = bytes(m.swap).filter(|&s| Some(s) != limits.memory_max) {
            return Err(unsupported(format!(
                "linux.resources.memory.swap {swap}: the VM has no swap (memory plus swap \
                 may only equal the limit)"
            )));
        }
    }
    if let Some(c) = &r.cpu {
        let pinned = c.cpus.as_ref().is_some_and(|v| !v.is_empty())
            || c.mems.as_ref().is_some_and(|v| !v.is_empty());
        let realtime =
            c.realtime_runtime.is_some_and(|v| v != 0) || c.realtime_period.is_some_and(|v| v != 0);
        if pinned || realtime {
            return Err(unsupported(
                "linux.resources.cpu: cpusets and realtime scheduling are not supported (the \
                 guest's CPUs are not the host's)",
            ));
        }
        let quota = c
            .quota
            .and_then(|q| u64::try_from(q).ok())
            .filter(|&q| q > 0);
        limits.cpu_max = quota.map(|q| (q, c.period.filter(|&p| p > 0).unwrap_or(DEFAULT_PERIOD)));
    }
    let none =
        limits.memory_max.is_none() && limits.memory_low.is_none() && limits.cpu_max.is_none();
    Ok((!none).then_some(limits))
}

/// The CRI's annotations on a pod's sandbox giving the pod's resources (the sum of its
/// containers' limits, which the kubelet passes since Kubernetes 1.23): memory in bytes, a
/// CFS quota and period in microseconds; 0 or absent means none.
const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

/// The pod's resources from its sandbox's annotations, which size the pod's VM (its
/// further containers run in it); `None` when they give none. A value that is not a
/// number is refused.
pub(super) fn pod_limits(
    annotations: Option<&HashMap<String, String>>,
) -> Result<Option<Limits>, SpecError> {
    let number = |key: &str| -> Result<Option<i64>, SpecError> {
        let Some(v) = annotations.and_then(|a| a.get(key)) else {
            return Ok(None);
        };
        let n = v.trim().parse::<i64>();
        n.map(Some)
            .map_err(|_| unsupported(format!("annotation {key}={v:?} is not a number")))
    };
    let memory_max = bytes(number(SANDBOX_MEMORY)?);
    let quota = bytes(number(SANDBOX_CPU_QUOTA)?);
    let period = bytes(number(SANDBOX_CPU_PERIOD)?).unwrap_or(DEFAULT_PERIOD);
    let limits = Limits {
        memory_max,
        memory_low: None,
        cpu_max: quota.map(|q| (q, period)),
    };
    if memory_max.is_none() && quota.is_none() {
        return Ok(None);
    }
    limits.validate()?;
    Ok(Some(limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(json: serde_json::Value) -> Result<Option<Limits>, SpecError> {
        let r: Resources = serde_json::from_value(json).unwrap();
        limits(Some(&r))
    }

    #[test]
    fn limits_and_quotas_become_the_guests_and_no_limit_is_none() {
        let l = from(serde_json::json!({
            "memory": {"limit": 268435456, "reservation": 134217728, "swap": 268435456},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000}
        }))
        .unwrap()
        .unwrap();
        assert_eq!(l.memory_max, Some(256 << 20));
        assert_eq!(l.memory_low, Some(128 << 20));
        assert_eq!(l.cpu_max, Some((50_000, 100_000)));
        let quota_only = from(serde_json::json!({"cpu": {"quota": 20000}})).unwrap();
        assert_eq!(quota_only.unwrap().cpu_max, Some((20_000, DEFAULT_PERIOD)));
        for none in [
            serde_json::json!({}),
            serde_json::json!({"memory": {}, "cpu": {"shares": 2, "period": 100000}}),
            serde_json::json!({"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}}),
        ] {
            assert_eq!(from(none.clone()).unwrap(), None, "{none}");
        }
    }

    #[test]
    fn cpusets_realtime_and_swap_are_refused() {
        for bad in [
            serde_json::json!({"cpu": {"cpus": "0-1"}}),
            serde_json::json!({"cpu": {"mems": "0"}}),
            serde_json::json!({"cpu": {"realtimeRuntime": 1000}}),
            serde_json::json!({"memory": {"limit": 1048576, "swap": 4194304}}),
            serde_json::json!({"memory": {"swap": 4194304}}),
            serde_json::json!({"memory": {"swappiness": 10}}),
            serde_json::json!({"memory": {"disableOOMKiller": true}}),
        ] {
            assert!(from(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pods_resources_come_from_its_sandboxs_annotations() {
        let notes = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let pod = notes(&[
            (SANDBOX_MEMORY, "536870912"),
            (SANDBOX_CPU_QUOTA, "150000"),
            (SANDBOX_CPU_PERIOD, "100000"),
            ("io.kubernetes.cri.sandbox-cpu-shares", "1536"),
        ]);
        let l = pod_limits(Some(&pod)).unwrap().unwrap();
        assert_eq!(
            (l.memory_max, l.cpu_max),
            (Some(512 << 20), Some((150_000, 100_000)))
        );
        // What the kubelet sends for a pod without limits, and older kubelets' nothing.
        let unlimited = notes(&[(SANDBOX_MEMORY, "0"), (SANDBOX_CPU_QUOTA, "0")]);
        assert_eq!(pod_limits(Some(&unlimited)).unwrap(), None);
        assert_eq!(pod_limits(None).unwrap(), None);
        let bad = notes(&[(SANDBOX_MEMORY, "lots")]);
        let err = pod_limits(Some(&bad)).unwrap_err().to_string();
        assert!(
            err.contains("io.kubernetes.cri.sandbox-memory=\"lots\""),
            "{err}"
        );
    }
}
