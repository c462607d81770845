//! vessel-agent: the guest half of `containerd-shim-vessel-v2`. Plain Linux userspace code
//! (no KVM): it runs inside the microVM as PID 1 after a small `/init`, prepares the
//! container's root, runs the OCI process the shim sends, streams its output back and
//! reports its exit status, over the framed protocol in [`protocol`].

pub mod cgroup;
pub mod exec;
pub mod guest;
pub mod mounts;
pub mod pod;
pub mod process;
pub mod protocol;
pub mod session;
pub mod teardown;
