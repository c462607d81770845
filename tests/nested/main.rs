//! Every test that boots Debian's kernel (scripts/make-guest.sh) under vessel on KVM, in one
//! test binary: where ring 0 is emulated (kvm_pvm, docs/nested-kvm.md) a boot costs minutes,
//! cargo runs test binaries one after another, and a binary's tests run side by side (one
//! per core) — so here two boots run at once. Quick tests of the nested-host emulation stay
//! in tests/boot_nested.rs. libtest starts tests in the order of their names. CI's run
//! boots three times (containerd, devices, mmds); the longer tests run on request
//! (`--ignored`: across_moves, balloon, cri), each saying why.

#[path = "../common/mod.rs"]
mod common;

mod across_moves;
mod balloon;
mod containerd;
mod cri;
mod devices;
mod mmds;
