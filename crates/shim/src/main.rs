//! `containerd-shim-vessel-v2`: containerd's shim v2 for the runtime
//! `io.containerd.vessel.v2`. Each container runs in its own vessel microVM; vessel-agent
//! in the guest runs its process (docs/kubernetes.md).

mod answer;
mod config;
mod container;
mod exec;
mod initramfs;
mod oci;
mod pod;
mod podnet;
mod rootfs;
mod service;
mod stats;
mod stream;
mod vm;
mod volumes;

fn main() {
    let config = containerd_shim::Config {
        // The shim waits for its own children (vessel); a reaper would take their status.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<service::Service>(service::RUNTIME_ID, Some(config));
}
