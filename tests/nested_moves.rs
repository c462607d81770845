//! A Linux guest's disk writes, network stream and console across `vessel suspend` +
//! `vessel resume` (a snapshot and a restore of a background VM) and `vessel migrate` to a
//! managed receiver in a second state directory (a second host with shared storage):
//! Debian's kernel with the nested-host profile, a raw virtio-blk disk, a `nat` NIC
//! (passt) and a virtio-console. The guest script (tests/guests/tcg/nested-reconnect.sh)
//! counts once a second into its disk, its console and a TCP connection to a host
//! listener. After each move the guest counts on where it was — no reboot, no restart of
//! the count — reconnects to the host (the fresh passt does not know the old connection:
//! docs/snapshots.md), its console lines keep landing in the same file, and every count it
//! sent is on the disk.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::nested::{debian_guest, nested_cmdline};
use common::out_dir;
use common::state_dir::TestState as State;

/// The modules the guest needs (and what they depend on), in load order: module loading is
/// slow where ring 0 is emulated, so the others stay out.
const MODULES: &str = "virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,\
                       virtio_pci,virtio_blk,failover,net_failover,virtio_net,virtio_console";

/// Ticks read from the guest in each phase.
const TICKS: usize = 3;

/// Waits up to `limit` for the guest to connect.
fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < limit,
                    "the guest did not connect within {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The numbers of the next [`TICKS`] "tick N" lines of the guest's next connection.
fn next_ticks(listener: &TcpListener, limit: Duration) -> Vec<u64> {
    let stream = accept_within(listener, limit);
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    (0..TICKS)
        .map(|_| {
            let line = lines.next().expect("the stream ended").expect("read");
            line.strip_prefix("tick ")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_else(|| panic!("not a tick: {line:?}"))
        })
        .collect()
}

/// What the guest wrote in block `n` of its disk, up to the line's end.
fn disk_line(disk: &[u8], n: u64) -> String {
    let block = disk
        .get(n as usize * 512..(n as usize + 1) * 512)
        .unwrap_or_default();
    let end = block.iter().position(|&b| b == b'\n').unwrap_or(0);
    String::from_utf8_lossy(&block[..end]).into_owned()
}

fn serial(st: &State) -> String {
    std::fs::read_to_string(st.0.join("linux").join("serial.log")).unwrap_or_default()
}

/// The VM definition: 256 MiB, one vCPU, `disk`, a nat NIC reaching the host's loopback,
/// the console in `console`, the guest counting to the host's `port`.
fn definition(disk: &Path, console: &Path, port: u16) -> std::path::PathBuf {
    let (kernel, initrd) = debian_guest();
    let cmdline = format!(
        "{} vessel.test=nested-reconnect vessel.port={port} vessel.modules={MODULES}",
        nested_cmdline()
    );
    let file = out_dir().join("nested-moves.vm.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"linux\"\ncpus = 1\nmemory = \"256M\"\nconsole2 = {console:?}\n\n\
             [boot]\nkernel = {kernel:?}\ninitrd = {initrd:?}\ncmdline = {cmdline:?}\n\n\
             [[disk]]\npath = {disk:?}\nformat = \"raw\"\n\n\
             [[nic]]\nmode = \"nat\"\nhost_loopback = true\n"
        ),
    )
    .unwrap();
    file
}

#[test]
fn debian_guest_counts_on_through_suspend_resume_and_a_migration() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let disk = out_dir().join("nested-moves.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let console = out_dir().join("nested-moves-console.log");
    let _ = std::fs::remove_file(&console);
    let file = definition(&disk, &console, port);
    let (here, there) = (State::new("moves-here"), State::new("moves-there"));
    for st in [&here, &there] {
        st.ok(&["create", "linux", "--from", file.to_str().unwrap()]);
    }
    let started = Instant::now();
    here.ok(&["start", "linux"]);
    let booted = next_ticks(&listener, Duration::from_secs(30 * 60));
    eprintln!("guest counting after {:?}", started.elapsed());

    let moved = Instant::now();
    here.ok(&["suspend", "linux"]);
    eprintln!("suspended in {:?}", moved.elapsed());
    let moved = Instant::now();
    here.ok(&["resume", "linux"]);
    let resumed = next_ticks(&listener, Duration::from_secs(10 * 60));
    eprintln!("reconnected {:?} after the resume", moved.elapsed());

    let socket = out_dir().join("nested-moves.migration");
    let _ = std::fs::remove_file(&socket);
    let url = format!("unix:{}", socket.display());
    there.ok(&["start", "linux", "--incoming", &url]);
    let moved = Instant::now();
    here.ok(&["migrate", "linux", "--to", &url]);
    eprintln!("migrated in {:?}", moved.elapsed());
    let migrated = next_ticks(&listener, Duration::from_secs(10 * 60));
    eprintln!("reconnected {:?} after the migration", moved.elapsed());
    there.ok(&["stop", "linux", "--force"]);

    let all: Vec<u64> = [&booted, &resumed, &migrated]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "the count went on: {booted:?}, resumed {resumed:?}, migrated {migrated:?}"
    );
    let (source, receiver) = (serial(&here), serial(&there));
    assert_eq!(
        source.matches("VESSEL-TEST-BEGIN").count(),
        1,
        "the guest booted once:\n{source}"
    );
    assert!(
        !receiver.contains("VESSEL-GUEST-READY"),
        "the guest booted again:\n{receiver}"
    );
    assert!(receiver.contains("VESSEL-RECONNECT"), "{receiver}");
    assert!(
        !format!("{source}{receiver}").contains("VESSEL-ERROR"),
        "{source}{receiver}"
    );
    let console = std::fs::read_to_string(&console).unwrap();
    let disk = std::fs::read(&disk).unwrap();
    for &n in &all {
        assert!(
            console.lines().any(|l| l == format!("console tick {n}")),
            "console tick {n} missing from the console file:\n{console}"
        );
        assert_eq!(
            disk_line(&disk, n),
            format!("tick {n}"),
            "block {n} of the disk"
        );
    }
}
