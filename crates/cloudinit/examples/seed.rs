//! Writes a seed image: `cargo run -p cloudinit --example seed -- OUT.img HOSTNAME [USER-DATA-FILE]`,
//! with the key from `ssh-keygen`'s default `~/.ssh/id_ed25519.pub` if there is one.

use cloudinit::{render, write_seed_image, SeedConfig, SeedNic};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(hostname)) = (args.first(), args.get(1)) else {
        return Err("usage: seed OUT.img HOSTNAME [USER-DATA-FILE]".into());
    };
    let home = std::env::var("HOME").unwrap_or_default();
    let key = std::fs::read_to_string(Path::new(&home).join(".ssh/id_ed25519.pub")).ok();
    let extra = args.get(2).map(std::fs::read_to_string).transpose()?;
    let config = SeedConfig {
        instance_id: format!("{hostname}-1"),
        hostname: hostname.clone(),
        ssh_authorized_keys: key.into_iter().collect(),
        extra_user_data: extra,
        nics: vec![SeedNic {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        }],
        default_user: None,
        mounts: Vec::new(),
    };
    let files = render(&config)?;
    write_seed_image(&files, Path::new(out))?;
    Ok(())
}
