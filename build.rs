//! Link flags of the `vessel` and `vessel-vmm` executables.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+, binutils 2.38+): the dynamic
    // loader reads a few KiB at start instead of ~180 KiB of `.rela.dyn`, and those pages
    // stay out of every VMM's resident memory (docs/overhead.md).
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
