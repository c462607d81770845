//! Whether the integration tests of shared folders can run: virtiofsd found where vessel
//! looks for it (crates/vhost_user/src/virtiofsd.rs): `$VESSEL_VIRTIOFSD`, `virtiofsd` on
//! `PATH`, Debian's `/usr/libexec/virtiofsd`.

/// Whether vessel would find a virtiofsd.
pub fn installed() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("virtiofsd").is_file()));
    on_path
        || std::env::var_os("VESSEL_VIRTIOFSD").is_some()
        || std::path::Path::new("/usr/libexec/virtiofsd").is_file()
}
