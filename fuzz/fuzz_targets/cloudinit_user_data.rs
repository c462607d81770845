//! Fuzz target: arbitrary extra user-data (and host name) through cloudinit::render must
//! give an error or a seed, never a panic; a rendered seed must also build an image.
#![no_main]

use cloudinit::{render, SeedConfig, SeedNic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (host, extra) = text.split_once('\u{0}').unwrap_or(("vm", &text));
    let config = SeedConfig {
        instance_id: "fuzz".into(),
        hostname: host.to_string(),
        ssh_authorized_keys: vec![extra.lines().next().unwrap_or("").to_string()],
        extra_user_data: Some(extra.to_string()),
        nics: vec![SeedNic {
            mac: [0x52, 0x54, 0, 0, 0, 1],
        }],
        default_user: None,
        mounts: Vec::new(),
    };
    let _ = render(&config);
    let mut no_key = config;
    no_key.ssh_authorized_keys.clear();
    if let Ok(files) = render(&no_key) {
        assert!(
            files.user_data.starts_with("#cloud-config\n")
                || files.user_data.starts_with("Content-Type: multipart/mixed")
        );
        if data.len() < 4096 {
            let _ = cloudinit::image::build_image(&files);
        }
    }
});
