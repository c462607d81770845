//! Live migration between two vessel processes (`PUT /migration/send` to
//! `vessel run --incoming`): a counting guest moves mid-run and its count goes on in the
//! receiver without a gap, a repeat or a restart; the source exits 0. A migration that
//! fails, is cancelled or loses its receiver mid-way leaves the source's guest running; the
//! counting guest checks its memory pattern at the end wherever it ends (`memory=ok`).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::ApiVmm as Vmm;
use common::{counts, multiboot_guest, out_dir, wait_for};

/// How long a guest gets to count to the end after the move.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const STEPS: u64 = 20;
const DELAY: u64 = 100_000;
/// MiB of memory the counting guest keeps a pattern in, one 64 KiB stripe of it rewritten
/// each step (the guest checks it all at the end and prints `memory=ok`). Small: on a nested
/// host (kvm_pvm) this guest writes its memory at about 1 MiB/s.
const FILL_MIB: u64 = 2;

/// `vessel run --incoming URL` with its serial console in a file, killed when dropped.
struct Receiver {
    child: Child,
    stderr: BufReader<ChildStderr>,
    url: String,
    serial: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// A receiver on a unix socket in the output directory.
    fn spawn(name: &str) -> Receiver {
        let socket = out_dir().join(format!("{name}.migration"));
        let _ = std::fs::remove_file(&socket);
        Self::spawn_at(name, &format!("unix:{}", socket.display()))
    }

    /// A receiver listening at `url`, once it says it listens.
    fn spawn_at(name: &str, url: &str) -> Receiver {
        Self::spawn_with(name, url, &[])
    }

    /// A receiver listening at `url` with `extra` arguments to `vessel run`.
    fn spawn_with(name: &str, url: &str, extra: &[&std::ffi::OsStr]) -> Receiver {
        let serial = out_dir().join(format!("{name}-serial.log"));
        let _ = std::fs::remove_file(&serial);
        let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .args(["run", "--incoming", url, "--serial"])
            .arg(format!("file:{}", serial.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains("waiting for a migration"), "{line}");
        Receiver {
            child,
            stderr,
            url: url.to_string(),
            serial,
        }
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Its exit status and stderr (waiting at most `timeout`).
    fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < timeout, "the receiver did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        let _ = self.stderr.read_to_string(&mut err);
        (status.code(), err)
    }
}

fn counter_guest() -> PathBuf {
    multiboot_guest(
        "counter",
        &["multiboot_header.S", "counter_guest.c"],
        "multiboot.ld",
    )
}

/// Configures and starts `kernel` with `mib` MiB and 1 vCPU.
fn boot(vmm: &Vmm, kernel: &Path, mib: u32) {
    boot_counting(vmm, kernel, mib, 1, STEPS);
}

/// [`boot`] with `vcpus` vCPUs, the guest counting to `steps` (and the counter guest
/// keeping its pattern in [`FILL_MIB`] MiB; the SMP guest ignores `fill`).
fn boot_counting(vmm: &Vmm, kernel: &Path, mib: u32, vcpus: u32, steps: u64) {
    let machine = format!(r#"{{"vcpu_count": {vcpus}, "mem_size_mib": {mib}}}"#);
    assert_eq!(vmm.call("PUT", "/machine-config", &machine).0, 204);
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": "steps={steps} delay={DELAY} fill={FILL_MIB}"}}"#,
        kernel.display().to_string()
    );
    assert_eq!(vmm.call("PUT", "/boot-source", &boot).0, 204);
    let (code, body) = vmm.call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(code, 204, "{body}");
}

/// `PUT /migration/send` with `body`; a source that dies on it fails the test with its
/// stderr.
fn send(source: &mut Vmm, body: &str) -> (u16, String) {
    let (code, reply) = source.call("PUT", "/migration/send", body);
    if code == 0 {
        panic!("the source died: {:?}", source.wait_exit(RUN_TIMEOUT));
    }
    (code, reply)
}

/// Migrates `source` to `receiver`; the call's time in ms. The source must exit 0.
fn migrate(source: &mut Vmm, receiver: &Receiver) -> f64 {
    migrate_with(source, receiver, "").0
}

/// Migrates `source` to `receiver` with `extra` fields in the request; the call's time in
/// ms and the source's stderr, which reports the migration. The source must exit 0.
fn migrate_with(source: &mut Vmm, receiver: &Receiver, extra: &str) -> (f64, String) {
    let body = format!(r#"{{"destination_url": {:?}{extra}}}"#, receiver.url);
    let started = Instant::now();
    let (code, reply) = send(source, &body);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(code, 204, "{reply}");
    let (status, err) = source.wait_exit(Duration::from_secs(30));
    assert_eq!(status, Some(0), "source stderr: {err}");
    assert!(err.contains("VM migrated to"), "{err}");
    (ms, err)
}

/// The number before " rounds" in the source's report.
fn rounds(report: &str) -> u32 {
    report
        .split(" rounds")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rounds in {report}"))
}

/// The receiver runs the guest to its end (debug-exit 21: status 43) without a restart;
/// the output of both processes together is one unbroken count.
fn finishes_the_count(receiver: &mut Receiver, before: &str) -> String {
    let (status, err) = receiver.wait_exit(RUN_TIMEOUT);
    let after = receiver.serial();
    assert_eq!(status, Some(43), "receiver stderr: {err}\nserial: {after}");
    assert!(!after.contains("guest up"), "the guest restarted: {after}");
    let all = counts(&format!("{before}{after}"));
    assert_eq!(
        all,
        (1..=STEPS).collect::<Vec<_>>(),
        "before: {before}\nafter: {after}"
    );
    assert!(
        !counts(&after).is_empty(),
        "nothing counted after the move: {after}"
    );
    after
}

/// The counter guest found every word of its memory pattern as it last wrote it.
fn memory_intact(serial: &str) {
    assert!(serial.contains("memory=ok"), "{serial}");
}

#[test]
fn a_counting_guest_moves_to_another_vmm_and_goes_on() {
    let mut source = Vmm::spawn("migration-source", &[]);
    boot(&source, &counter_guest(), 128);
    wait_for("the guest to count to 5", || {
        counts(&source.serial()).len() >= 5
    });
    let mut receiver = Receiver::spawn("migration-receiver");
    let ms = migrate(&mut source, &receiver);
    let before = source.serial();
    assert!(
        *counts(&before).last().unwrap() < STEPS,
        "the guest finished before the move"
    );
    let after = finishes_the_count(&mut receiver, &before);
    assert!(after.contains("counter done"), "{after}");
    memory_intact(&after);
    eprintln!("migration of a 128 MiB counting guest over a unix socket: {ms:.1} ms");
}

#[test]
fn a_guest_keeps_using_its_virtio_blk_disk_after_migration() {
    let kernel = multiboot_guest(
        "counter_blk",
        &["multiboot_header.S", "counter_blk_guest.c"],
        "multiboot.ld",
    );
    let mut source = Vmm::spawn("migration-blk-source", &[]);
    let disk = out_dir().join("migration-blk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": {:?}, "is_root_device": false, "is_read_only": false}}"#,
        disk.display().to_string()
    );
    let (code, body) = source.call("PUT", "/drives/data", &drive);
    assert_eq!(code, 204, "{body}");
    boot(&source, &kernel, 128);
    wait_for("the guest to count to 5", || {
        counts(&source.serial()).len() >= 5
    });
    let mut receiver = Receiver::spawn("migration-blk-receiver");
    // Pre-copy rounds (no downtime allowed, a slow link) while the guest reads and writes
    // its disk: the device model's writes to guest memory are logged too.
    let (ms, report) = migrate_with(
        &mut source,
        &receiver,
        r#", "max_downtime_ms": 0, "bandwidth_mib_s": 1"#,
    );
    // The copy while running and the one while paused at least (stop-and-copy: 1).
    assert!(rounds(&report) >= 2, "{report}");
    eprintln!("migration of a 128 MiB guest with a virtio-blk disk: {ms:.1} ms; {report}");
    let before = source.serial();
    let after = finishes_the_count(&mut receiver, &before);
    assert!(after.contains("disk verified"), "{after}");
    let image = std::fs::read(&disk).unwrap();
    for n in 1..=STEPS as usize {
        let sector = &image[n * 512..(n + 1) * 512];
        assert!(
            sector
                .chunks(4)
                .all(|w| u32::from_le_bytes(w.try_into().unwrap()) == n as u32),
            "sector {n}"
        );
    }
}

#[test]
fn a_failed_migration_leaves_the_source_running() {
    let mut source = Vmm::spawn("migration-fail-source", &[]);
    boot(&source, &counter_guest(), 64);
    wait_for("the guest to count to 3", || {
        counts(&source.serial()).len() >= 3
    });
    // Nobody listens there.
    let missing = out_dir().join("migration-nobody.sock");
    let _ = std::fs::remove_file(&missing);
    let body = format!(r#"{{"destination_url": "unix:{}"}}"#, missing.display());
    let (code, reply) = send(&mut source, &body);
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("cannot connect"), "{reply}");
    // A receiver that dies as soon as the sender connects.
    let listener = std::os::unix::net::UnixListener::bind(&missing).unwrap();
    let killer = std::thread::spawn(move || drop(listener.accept()));
    let (code, reply) = send(&mut source, &body);
    assert_eq!(code, 400, "{reply}");
    killer.join().unwrap();
    let _ = std::fs::remove_file(&missing);
    // Bad URLs and bodies.
    let (code, reply) = source.call(
        "PUT",
        "/migration/send",
        r#"{"destination_url": "ftp://x"}"#,
    );
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("invalid migration URL"), "{reply}");
    let (code, status) = common::api::curl(&source.sock, "GET", "/migration", None);
    assert_eq!(code, 200, "{status}");
    assert!(status.contains(r#""state":"failed""#), "{status}");
    let (code, reply) = source.call("PUT", "/migration/cancel", "{}");
    assert_eq!(code, 400, "{reply}");
    // The guest counted on through all of it and finishes here.
    let (status, err) = source.wait_exit(RUN_TIMEOUT);
    let serial = source.serial();
    assert_eq!(status, Some(43), "{err}\n{serial}");
    assert_eq!(counts(&serial), (1..=STEPS).collect::<Vec<_>>(), "{serial}");
    memory_intact(&serial);
}

/// With no downtime allowed, pre-copy goes round after round (up to its cap) while the
/// guest counts and writes its memory; over TCP on the loopback. The count still goes on
/// without a gap or a repeat.
#[test]
fn pre_copy_rounds_over_tcp_lose_nothing_the_guest_wrote() {
    let mut source = Vmm::spawn("migration-tcp-source", &[]);
    boot(&source, &counter_guest(), 256);
    wait_for("the guest to count to 3", || {
        counts(&source.serial()).len() >= 3
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut receiver =
        Receiver::spawn_at("migration-tcp-receiver", &format!("tcp:127.0.0.1:{port}"));
    let (ms, report) = migrate_with(
        &mut source,
        &receiver,
        r#", "max_downtime_ms": 0, "bandwidth_mib_s": 512"#,
    );
    // The copy while running and the one while paused at least (stop-and-copy: 1).
    assert!(rounds(&report) >= 2, "{report}");
    let before = source.serial();
    memory_intact(&finishes_the_count(&mut receiver, &before));
    eprintln!("pre-copy migration of a 256 MiB guest over TCP: {ms:.1} ms; {report}");
}

/// A migration to a receiver that stops reading is cancelled: the call fails with
/// "cancelled", `GET /migration` says so, and the guest counts on in the source.
#[test]
fn a_cancelled_migration_leaves_the_source_running() {
    let mut source = Vmm::spawn("migration-cancel-source", &[]);
    boot(&source, &counter_guest(), 256);
    wait_for("the guest to count to 3", || {
        counts(&source.serial()).len() >= 3
    });
    let socket = out_dir().join("migration-stuck.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let sock = source.sock.clone();
    let body = format!(
        r#"{{"destination_url": "unix:{}", "max_downtime_ms": 0}}"#,
        socket.display()
    );
    let call =
        std::thread::spawn(move || common::api::curl(&sock, "PUT", "/migration/send", Some(&body)));
    // Accepted, and never read.
    let (_stuck, _) = listener.accept().unwrap();
    wait_for("the migration to be under way", || {
        let (_, status) = common::api::curl(&source.sock, "GET", "/migration", None);
        status.contains(r#""state":"sending""#) || status.contains(r#""state":"paused""#)
    });
    let (code, reply) = source.call("PUT", "/migration/cancel", "{}");
    assert_eq!(code, 204, "{reply}");
    let (code, reply) = call.join().unwrap();
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("cancelled"), "{reply}");
    let (_, status) = common::api::curl(&source.sock, "GET", "/migration", None);
    assert!(status.contains(r#""state":"cancelled""#), "{status}");
    let _ = std::fs::remove_file(&socket);
    let (status, err) = source.wait_exit(RUN_TIMEOUT);
    let serial = source.serial();
    assert_eq!(status, Some(43), "{err}\n{serial}");
    assert_eq!(counts(&serial), (1..=STEPS).collect::<Vec<_>>(), "{serial}");
    memory_intact(&serial);
}

/// A VM loaded from a snapshot runs on its memory file mapped copy-on-write, where a page
/// not yet faulted in still holds the file's data: migrating it on must send those pages
/// too (the first copy skips untouched pages of anonymous memory only). The count goes on
/// in the receiver and the memory pattern is intact.
#[test]
fn a_vm_loaded_from_a_snapshot_migrates_with_all_its_memory() {
    let first = Vmm::spawn("migration-snap-first", &[]);
    boot(&first, &counter_guest(), 64);
    wait_for("the guest to count to 3", || {
        counts(&first.serial()).len() >= 3
    });
    let (state, mem) = (
        out_dir().join("migration-snap.state"),
        out_dir().join("migration-snap.mem"),
    );
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&mem);
    assert_eq!(first.call("PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let files = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    let (code, reply) = first.call("PUT", "/snapshot/create", &files);
    assert_eq!(code, 204, "{reply}");
    let before = first.serial();
    drop(first);
    let mut loaded = Vmm::spawn("migration-snap-loaded", &[]);
    let load = format!("{}, \"resume_vm\": true}}", files.trim_end_matches('}'));
    let (code, reply) = loaded.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 204, "{reply}");
    wait_for("the loaded guest to count on", || {
        !counts(&loaded.serial()).is_empty()
    });
    let mut receiver = Receiver::spawn("migration-snap-receiver");
    migrate(&mut loaded, &receiver);
    let before = format!("{before}{}", loaded.serial());
    memory_intact(&finishes_the_count(&mut receiver, &before));
}

/// A receiver killed (SIGKILL) while the memory is on its way fails the migration, and the
/// source's guest counts on to its end as if nothing happened.
#[test]
fn a_receiver_killed_mid_way_leaves_the_source_running() {
    let mut source = Vmm::spawn("migration-kill-source", &[]);
    boot(&source, &counter_guest(), 256);
    wait_for("the guest to count to 3", || {
        counts(&source.serial()).len() >= 3
    });
    let mut receiver = Receiver::spawn("migration-kill-receiver");
    let sock = source.sock.clone();
    // Slow enough (1 MiB/s for the guest's few MiB) that the kill lands in the first round.
    let body = format!(
        r#"{{"destination_url": "{}", "max_downtime_ms": 0, "bandwidth_mib_s": 1}}"#,
        receiver.url
    );
    let call =
        std::thread::spawn(move || common::api::curl(&sock, "PUT", "/migration/send", Some(&body)));
    wait_for("memory to be on its way", || {
        let (_, status) = common::api::curl(&source.sock, "GET", "/migration", None);
        serde_json::from_str::<serde_json::Value>(&status)
            .ok()
            .and_then(|s| s["sent_bytes"].as_u64())
            .is_some_and(|sent| sent > 256 << 10)
    });
    receiver.child.kill().unwrap();
    let (code, reply) = call.join().unwrap();
    assert_eq!(code, 400, "{reply}");
    let (_, status) = common::api::curl(&source.sock, "GET", "/migration", None);
    assert!(status.contains(r#""state":"failed""#), "{status}");
    let (status, err) = source.wait_exit(RUN_TIMEOUT);
    let serial = source.serial();
    assert_eq!(status, Some(43), "{err}\n{serial}");
    assert_eq!(counts(&serial), (1..=STEPS).collect::<Vec<_>>(), "{serial}");
    memory_intact(&serial);
}

/// Creates and starts the counting VM `migrant` in `st`; once it counted to 3, its serial
/// log so far.
fn start_migrant(st: &common::state_dir::TestState) -> String {
    let file = out_dir().join(format!(
        "migrant-{}.vm.toml",
        st.0.display().to_string().len()
    ));
    std::fs::write(
        &file,
        format!(
            "name = \"migrant\"\ncpus = 1\nmemory = \"64M\"\n\n[boot]\nkernel = {:?}\ncmdline = \"steps={STEPS} delay={DELAY} fill={FILL_MIB}\"\n",
            counter_guest()
        ),
    )
    .unwrap();
    st.ok(&["create", "migrant", "--from", file.to_str().unwrap()]);
    st.ok(&["start", "migrant"]);
    let serial =
        || std::fs::read_to_string(st.0.join("migrant").join("serial.log")).unwrap_or_default();
    wait_for("the guest to count to 3", || counts(&serial()).len() >= 3);
    serial()
}

/// `vessel migrate NAME --to URL` moves a background VM (`vessel start`) to a receiver,
/// showing progress; the VM's count goes on there.
#[test]
fn vessel_migrate_moves_a_background_vm() {
    let st = common::state_dir::TestState::new("migrate-cli");
    start_migrant(&st);
    let mut receiver = Receiver::spawn("migration-cli-receiver");
    let run = st.vessel(&["migrate", "migrant", "--to", &receiver.url]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("migrated to"), "{}", run.stderr);
    let before = std::fs::read_to_string(st.0.join("migrant").join("serial.log")).unwrap();
    memory_intact(&finishes_the_count(&mut receiver, &before));
    // Refused: a VM that does not exist.
    let run = st.vessel(&["migrate", "nosuchvm", "--to", &receiver.url]);
    assert_ne!(run.status, Some(0), "{}", run.stderr);
}

/// `vessel migrate NAME --to ssh:USER@127.0.0.1:PORT:/SOCKET` through a real OpenSSH server
/// (tests/common/sshd.rs) to `vessel run --incoming unix:/SOCKET`: the count goes on
/// there. Before, a key the server does not know fails with what ssh said and the VM runs
/// on here; `--ssh-option` without an ssh destination is a usage error.
#[test]
fn vessel_migrate_over_ssh_moves_a_background_vm() {
    let sshd = common::sshd::Sshd::start("migrate");
    let st = common::state_dir::TestState::new("migrate-ssh");
    start_migrant(&st);
    let mut receiver = Receiver::spawn("migration-ssh-receiver");
    let remote = receiver.url.strip_prefix("unix:").unwrap().to_string();
    let to = format!("ssh:{}@127.0.0.1:{}:{remote}", sshd.user, sshd.port);
    let migrate = |options: &[String]| {
        let mut args = vec!["migrate", "migrant", "--to", &to];
        for o in options {
            args.extend(["--ssh-option", o.as_str()]);
        }
        st.vessel(&args)
    };
    let run = migrate(&sshd.stranger_options);
    assert_eq!(run.status, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    assert_eq!(listed(&st, "migrant")["state"], "running");
    // Bad destinations: no socket path (usage error); ssh: over the API, which runs no ssh.
    let run = st.vessel(&["migrate", "migrant", "--to", "ssh:127.0.0.1"]);
    assert_eq!(run.status, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid ssh destination"),
        "{}",
        run.stderr
    );
    let sock = st.0.join("migrant").join("api.sock");
    let body = format!(r#"{{"destination_url": "{to}"}}"#);
    let (code, reply) = common::api::curl(&sock, "PUT", "/migration/send", Some(&body));
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("vessel migrate NAME --to ssh:"), "{reply}");
    let run = st.vessel(&[
        "migrate",
        "migrant",
        "--to",
        &receiver.url,
        "--ssh-option",
        "Port=22",
    ]);
    assert_eq!(run.status, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--ssh-option is for --to ssh:"),
        "{}",
        run.stderr
    );

    let run = migrate(&sshd.options);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("migrated to {to}")),
        "{}",
        run.stderr
    );
    assert!(
        !st.0.join("migrant").join("migration-ssh.sock").exists(),
        "the tunnel is closed"
    );
    let before = std::fs::read_to_string(st.0.join("migrant").join("serial.log")).unwrap();
    memory_intact(&finishes_the_count(&mut receiver, &before));
}

/// A VM definition of the counting guest named `name` with `mib` MiB and a vsock device
/// on the host socket `file`.sock, written to `file`.
fn migrant_file(name: &str, file: &str, mib: u32) -> PathBuf {
    let file = out_dir().join(file);
    let uds = file.with_extension("sock");
    let _ = std::fs::remove_file(&uds);
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\ncpus = 1\nmemory = \"{mib}M\"\n\n[boot]\nkernel = {:?}\ncmdline = \"steps={STEPS} delay={DELAY} fill={FILL_MIB}\"\n\n[vsock]\ncid = 3\nuds = {uds:?}\n",
            counter_guest()
        ),
    )
    .unwrap();
    file
}

/// `vessel inspect NAME --json`.
fn listed(st: &common::state_dir::TestState, name: &str) -> serde_json::Value {
    serde_json::from_str(&st.ok(&["inspect", name, "--json"])).unwrap()
}

/// `vessel start NAME --incoming URL` on a second state directory (a second host) takes a
/// background VM over from `vessel migrate`: `ls` says `incoming` until it arrives, and the
/// count goes on there to its end with the memory intact; the source records that its VM
/// left. A definition of another shape is refused on arrival (the source's VM counts on),
/// and `vessel stop` ends a wait.
#[test]
fn vessel_start_incoming_takes_a_background_vm_over() {
    let here = common::state_dir::TestState::new("incoming-source");
    let there = common::state_dir::TestState::new("incoming-receiver");
    let other = common::state_dir::TestState::new("incoming-misfit");
    let file = migrant_file("mover", "mover.vm.toml", 64);
    // The same VM with its vsock socket elsewhere, as on another host.
    let moved = migrant_file("mover", "mover-there.vm.toml", 64);
    let bigger = migrant_file("mover", "mover-128.vm.toml", 128);
    here.ok(&["create", "mover", "--from", file.to_str().unwrap()]);
    there.ok(&["create", "mover", "--from", moved.to_str().unwrap()]);
    other.ok(&["create", "mover", "--from", bigger.to_str().unwrap()]);
    here.ok(&["start", "mover"]);
    let serial = |st: &common::state_dir::TestState| {
        std::fs::read_to_string(st.0.join("mover").join("serial.log")).unwrap_or_default()
    };
    wait_for("the guest to count to 3", || {
        counts(&serial(&here)).len() >= 3
    });

    // A receiver whose definition has twice the memory refuses the VM; the source keeps it.
    let misfit = out_dir().join("incoming-misfit.sock");
    let _ = std::fs::remove_file(&misfit);
    let misfit_url = format!("unix:{}", misfit.display());
    let out = other.ok(&["start", "mover", "--incoming", &misfit_url]);
    assert!(out.contains("waits for a migration"), "{out}");
    assert_eq!(listed(&other, "mover")["state"], "incoming");
    let run = here.vessel(&["migrate", "mover", "--to", &misfit_url]);
    assert_ne!(run.status, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("128 MiB"), "{}", run.stderr);
    assert_eq!(listed(&here, "mover")["state"], "running");
    let refused = listed(&other, "mover");
    assert_eq!(refused["state"], "stopped", "{refused}");
    assert!(
        refused["last_exit"]
            .as_str()
            .unwrap()
            .contains("incoming migration failed"),
        "{refused}"
    );

    // A URL that is not one is a usage error, and nothing starts.
    let run = other.vessel(&["start", "mover", "--incoming", "ftp://x"]);
    assert_eq!(run.status, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid migration URL"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&other, "mover")["state"], "stopped");
    // `vessel stop` ends a wait.
    let out = other.ok(&["start", "mover", "--incoming", &misfit_url]);
    assert!(out.contains("waits for a migration"), "{out}");
    let out = other.ok(&["stop", "mover"]);
    assert!(out.contains("no longer waits"), "{out}");
    assert_eq!(listed(&other, "mover")["state"], "stopped");

    // The move.
    let socket = out_dir().join("incoming.sock");
    let _ = std::fs::remove_file(&socket);
    let url = format!("unix:{}", socket.display());
    there.ok(&["start", "mover", "--incoming", &url]);
    let run = here.vessel(&["migrate", "mover", "--to", &url]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    // The vsock listens where the receiving definition says.
    assert!(
        moved.with_extension("sock").exists(),
        "no vsock socket at the receiving definition's path"
    );
    wait_for("the guest to finish counting there", || {
        serial(&there).contains("counter done")
    });
    let (before, after) = (serial(&here), serial(&there));
    common::counted_on_across_a_move(&before, &after, STEPS);
    wait_for("the VM to end there", || {
        listed(&there, "mover")["state"] == "stopped"
    });
    let left = listed(&here, "mover");
    assert_eq!(left["state"], "stopped", "{left}");
    assert!(
        left["last_exit"].as_str().unwrap().contains("migrated"),
        "{left}"
    );
}

/// The AP's counts (`ap=M`) of a 2-vCPU counting guest's lines, in order.
fn ap_counts(serial: &str) -> Vec<u64> {
    serial
        .lines()
        .filter_map(|l| l.split_once(" ap=")?.1.trim().parse().ok())
        .collect()
}

/// A receiver started with `--api-sock` serves the VM it received, so the VM moves on: a
/// 2-vCPU guest (the BSP prints its step and the AP's count, which the AP keeps in memory)
/// hops through 20 receivers, one after the other, each process exiting 0 once its
/// successor runs the guest. The output of all of them together is one unbroken count from
/// 1, without a restart, and the AP's count never goes back and grows: neither vCPU lost
/// its place or its memory on the way.
#[test]
fn a_guest_hops_through_twenty_vmms_and_counts_on() {
    const HOPS: usize = 20;
    let kernel = multiboot_guest(
        "counter_smp",
        &[
            "multiboot_header.S",
            "smp_trampoline.S",
            "counter_smp_guest.c",
        ],
        "multiboot.ld",
    );
    let mut source = Vmm::spawn("migration-hop-source", &[]);
    boot_counting(&source, &kernel, 64, 2, 1_000_000);
    wait_for("the guest to count to 3", || {
        counts(&source.serial()).len() >= 3
    });
    let socket = |hop: usize| out_dir().join(format!("migration-hop-{hop}.api"));
    let spawn = |hop: usize| {
        let api = socket(hop);
        let _ = std::fs::remove_file(&api);
        let name = format!("migration-hop-{hop}");
        let migration = out_dir().join(format!("{name}.migration"));
        let _ = std::fs::remove_file(&migration);
        let url = format!("unix:{}", migration.display());
        Receiver::spawn_with(&name, &url, &["--api-sock".as_ref(), api.as_os_str()])
    };
    let started = Instant::now();
    let mut first = spawn(0);
    migrate(&mut source, &first);
    let mut output = source.serial();
    for hop in 1..HOPS {
        let next = spawn(hop);
        wait_for("the API socket of the received VM", || {
            socket(hop - 1).exists()
        });
        let body = format!(r#"{{"destination_url": {:?}}}"#, next.url);
        let (code, reply) =
            common::api::curl(&socket(hop - 1), "PUT", "/migration/send", Some(&body));
        assert_eq!(code, 204, "hop {hop}: {reply}");
        let (status, err) = first.wait_exit(Duration::from_secs(30));
        assert_eq!(status, Some(0), "hop {hop}: {err}");
        assert!(err.contains("VM migrated to"), "hop {hop}: {err}");
        let serial = first.serial();
        assert!(
            !serial.contains("guest up"),
            "hop {hop}: restarted: {serial}"
        );
        output.push_str(&serial);
        first = next;
    }
    // The last VMM still runs: a line it is writing may be cut short, so only whole lines.
    let whole_lines = |s: String| s[..s.rfind('\n').map_or(0, |i| i + 1)].to_string();
    wait_for("the last VMM to count", || {
        !counts(&whole_lines(first.serial())).is_empty()
    });
    output.push_str(&whole_lines(first.serial()));
    let all = counts(&output);
    let last = *all.last().unwrap();
    assert_eq!(all, (1..=last).collect::<Vec<_>>(), "{output}");
    let ap = ap_counts(&output);
    assert_eq!(ap.len(), all.len(), "{output}");
    assert!(
        ap.windows(2).all(|w| w[0] <= w[1]),
        "the AP's count: {ap:?}"
    );
    assert!(ap.last() > ap.first(), "the AP went on counting: {ap:?}");
    eprintln!(
        "{HOPS} migrations in {:.1} s; the guest counted to {last}",
        started.elapsed().as_secs_f64()
    );
}
