//! containerd's Task.Stats: the agent reads the container's cgroup v2 counters in the guest
//! when asked ([`HostMessage::Stats`](agent::protocol::HostMessage::Stats)), and the shim
//! hands them to containerd as cgroup v2 `Metrics` (what `ctr task metrics` prints and the
//! CRI's ContainerStats reads), as runc's shim does for a container on a cgroup v2 host.

use agent::protocol::CgroupStats;
use containerd_shim::protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

/// The type URL containerd's typeurl registry knows cgroup v2 metrics by (the message's
/// protobuf name, without a prefix).
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The agent's counters as cgroup v2 `Metrics`.
pub fn metrics(s: &CgroupStats) -> Metrics {
    let cpu = CPUStat {
        usage_usec: s.cpu_usage_usec,
        user_usec: s.cpu_user_usec,
        system_usec: s.cpu_system_usec,
        nr_periods: s.cpu_nr_periods,
        nr_throttled: s.cpu_nr_throttled,
        throttled_usec: s.cpu_throttled_usec,
        ..Default::default()
    };
    let memory = MemoryStat {
        usage: s.memory_usage,
        usage_limit: s.memory_limit,
        anon: s.anon,
        file: s.file,
        kernel_stack: s.kernel_stack,
        slab: s.slab,
        sock: s.sock,
        shmem: s.shmem,
        file_mapped: s.file_mapped,
        file_dirty: s.file_dirty,
        inactive_anon: s.inactive_anon,
        active_anon: s.active_anon,
        inactive_file: s.inactive_file,
        active_file: s.active_file,
        unevictable: s.unevictable,
        pgfault: s.pgfault,
        pgmajfault: s.pgmajfault,
        ..Default::default()
    };
    let pids = PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    };
    Metrics {
        cpu: MessageField::some(cpu),
        memory: MessageField::some(memory),
        pids: MessageField::some(pids),
        ..Default::default()
    }
}

/// `metrics` packed for containerd's StatsResponse.
pub fn to_any(metrics: &Metrics) -> Result<Any, String> {
    let value = metrics.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(Any {
        type_url: METRICS_TYPE_URL.into(),
        value,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_cgroup_v2_metrics_under_containerds_type_url() {
        let stats = CgroupStats {
            cpu_usage_usec: 1500,
            cpu_nr_throttled: 2,
            memory_usage: 4 << 20,
            memory_limit: 200 << 20,
            inactive_file: 1 << 20,
            pids_current: 3,
            ..CgroupStats::default()
        };
        let any = to_any(&metrics(&stats)).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let back = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.cpu.usage_usec, 1500);
        assert_eq!(back.cpu.nr_throttled, 2);
        assert_eq!(back.memory.usage, 4 << 20);
        assert_eq!(back.memory.usage_limit, 200 << 20);
        assert_eq!(back.memory.inactive_file, 1 << 20);
        assert_eq!(back.pids.current, 3);
    }
}
