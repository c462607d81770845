//! Booting the built image under QEMU's software CPU (TCG): the kernel and initrd dumped
//! from the image with debugfs, the disk on virtio-blk-pci, a restricted user-mode NIC on
//! virtio-net-pci, and the serial console read until cloud-init has finished.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{run_ok, tool_path, Built};

/// What the console showed.
#[derive(Debug)]
pub struct Boot {
    /// Everything the guest printed.
    pub console: String,
    /// Time from starting QEMU to cloud-init's final stage.
    pub elapsed: Duration,
}

/// Kills the QEMU child process when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Dump `from` out of the image's file system to `to`.
fn dump(b: &Built, from: &str, to: &Path) {
    run_ok(
        Command::new(tool_path("debugfs"))
            .args(["-R", &format!("dump {from} {}", to.display())])
            .arg(&b.partition),
    );
    assert!(
        to.metadata().is_ok_and(|m| m.len() > 1 << 20),
        "dumping {from} failed"
    );
}

/// Boot `b` and wait (up to `deadline`) for cloud-init's "finished at" line.
pub fn boot(b: &Built, deadline: Duration) -> Boot {
    let dir = b.image.parent().unwrap();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    dump(
        b,
        &format!("/boot/vmlinuz-{}", b.manifest.kernel_version),
        &kernel,
    );
    dump(
        b,
        &format!("/boot/initrd.img-{}", b.manifest.kernel_version),
        &initrd,
    );
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            &format!("{} panic=-1", b.manifest.kernel_cmdline),
        ])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", b.image.display()))
        .args(["-snapshot", "-nic", "user,model=virtio-net-pci,restrict=on"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let stdout = child.stdout.take().unwrap();
    let _guard = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut console = String::new();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
                if line.contains("Cloud-init v.") && line.contains("finished at") {
                    break;
                }
            }
            Err(_) => panic!("no cloud-init final line within {deadline:?}; console:\n{console}"),
        }
    }
    // Give getty a moment in case its prompt comes after cloud-init's final line.
    let settle = Instant::now();
    while !console.contains("login:") && settle.elapsed() < Duration::from_secs(60) {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            console.push_str(&line);
            console.push('\n');
        }
    }
    let elapsed = start.elapsed();
    std::fs::write(dir.join("console.log"), &console).unwrap();
    Boot { console, elapsed }
}
