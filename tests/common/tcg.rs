//! Real Linux drivers against vessel's devices: the stock Debian cloud kernel and the
//! busybox initramfs of scripts/make-guest.sh, booted under QEMU's software CPU (TCG) with
//! vessel's vhost-user backends. The guest's /init runs tests/guests/tcg/NAME.sh
//! (`vessel.test=NAME`) and prints `VESSEL-RESULT key=value` lines and
//! `VESSEL-TEST-PASS NAME` / `VESSEL-TEST-FAIL NAME` on the serial console.
//!
//! Every process started here is killed when its handle is dropped, so a failing
//! assertion (a panic) never leaves QEMU or vessel behind.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";
/// Guest RAM; shared with the backend through a memfd (vhost-user maps it).
pub const GUEST_MIB: u32 = 512;
/// How long one guest may take from boot to power-off. A TCG boot takes ~2 s and the
/// heaviest script ~10 s on an idle 2-core machine; the margin is for loaded CI machines.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a backend may take to print that it listens.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel and initramfs to boot.
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The guest built by scripts/make-guest.sh (into $VESSEL_GUEST_DIR, default guest/ in the
/// repository; rebuilt when the test scripts changed), or None after printing why the test
/// is skipped: only when QEMU is missing and VESSEL_REQUIRE_TCG is not set.
pub fn guest() -> Option<&'static GuestImage> {
    let qemu_works = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !qemu_works {
        assert!(
            std::env::var_os("VESSEL_REQUIRE_TCG").is_none(),
            "VESSEL_REQUIRE_TCG is set but {QEMU} does not run (apt-get install qemu-system-x86)"
        );
        eprintln!("SKIPPED: {QEMU} is missing (apt-get install qemu-system-x86)");
        return None;
    }
    static GUEST: OnceLock<Result<GuestImage, String>> = OnceLock::new();
    match GUEST.get_or_init(build_guest) {
        Ok(g) => Some(g),
        Err(e) => panic!("{e}"),
    }
}

fn build_guest() -> Result<GuestImage, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("VESSEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("guest"));
    let out = Command::new(root.join("scripts/make-guest.sh"))
        .env("OUT", &dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run scripts/make-guest.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/make-guest.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(GuestImage {
        kernel: dir.join("bzImage"),
        initrd: dir.join("initramfs.cpio.gz"),
    })
}

/// Fail unless the host tool `tool` runs (it comes with `package`; scripts/test.sh installs it).
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is missing: apt-get install {package}");
}

/// Run a host command; panic with its output unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hex sha256 of a host file (coreutils sha256sum).
pub fn sha256_file(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Text a child process writes, collected by a reader thread, with a condition variable
/// to wait for a line.
#[derive(Clone, Default)]
struct Transcript(Arc<(Mutex<String>, Condvar)>);

impl Transcript {
    fn collect(&self, pipe: impl Read + Send + 'static) -> JoinHandle<()> {
        let this = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let (text, cv) = &*this.0;
                        let mut text = text.lock().unwrap_or_else(|p| p.into_inner());
                        // QEMU's serial output has \r\n; keep plain lines.
                        text.push_str(&String::from_utf8_lossy(&line).replace('\r', ""));
                        cv.notify_all();
                    }
                }
            }
            let (text, cv) = &*this.0;
            // Wake waiters: the writer is gone.
            let _g = text.lock().unwrap_or_else(|p| p.into_inner());
            cv.notify_all();
        })
    }

    fn text(&self) -> String {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait until some line contains `needle`, or `gone()` says the writer exited, or `timeout`.
    fn wait_for(&self, needle: &str, timeout: Duration, mut gone: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (text, cv) = &*self.0;
        let mut guard = text.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if guard.contains(needle) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if gone() {
                // Give the reader threads a moment to take the last bytes.
                let (g, _) = cv
                    .wait_timeout(guard, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner());
                return g.contains(needle);
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            guard = cv
                .wait_timeout(guard, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on the pid of a child we have not reaped yet; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Have the child killed when the thread that started it (the test) goes away, even if
/// the test process itself is killed before the handles' Drop runs.
pub fn die_with_test(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `vessel vhost-user-blk` / `vessel vhost-user-net`.
pub struct Backend {
    child: Child,
    log: Transcript,
    pub socket: PathBuf,
    exited: Option<ExitStatus>,
}

impl Backend {
    /// Start `vessel vhost-user-KIND --socket SOCKET ARGS…` and wait until it listens.
    pub fn start(kind: &str, socket: &Path, args: &[&str]) -> Backend {
        let _ = std::fs::remove_file(socket);
        let child = die_with_test(&mut Command::new(env!("CARGO_BIN_EXE_vessel")))
            .arg(format!("vhost-user-{kind}"))
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vessel");
        let mut backend = Backend {
            child,
            log: Transcript::default(),
            socket: socket.to_owned(),
            exited: None,
        };
        backend
            .log
            .collect(backend.child.stdout.take().expect("stdout"));
        backend
            .log
            .collect(backend.child.stderr.take().expect("stderr"));
        let want = format!("vessel: vhost-user-{kind} listening on");
        let child = &mut backend.child;
        let listening = backend.log.wait_for(&want, LISTEN_TIMEOUT, || {
            child.try_wait().is_ok_and(|s| s.is_some())
        });
        assert!(
            listening,
            "vessel vhost-user-{kind} {args:?} did not print {want:?}:\n{}",
            backend.log.text()
        );
        backend
    }

    /// What the backend printed so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exited.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait for the exit status (the contract: exit 0).
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        signal(&self.child, libc::SIGTERM);
        let status = wait_timeout(&mut self.child, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "vessel did not exit within 10 s of SIGTERM:\n{}",
                self.log.text()
            )
        });
        self.exited = Some(status);
        status
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// QEMU arguments attaching a vhost-user-blk disk served on `socket` (vessel's device has one
/// queue; QEMU would ask for one per vCPU).
/// The chardev is named after the socket file, so one guest can have several disks.
pub fn vhost_user_blk(socket: &Path) -> Vec<String> {
    let id = format!(
        "blk-{}",
        socket.file_stem().unwrap_or_default().to_string_lossy()
    );
    vec![
        "-chardev".into(),
        format!("socket,id={id},path={}", socket.display()),
        "-device".into(),
        format!("vhost-user-blk-pci,chardev={id},num-queues=1"),
    ]
}

/// QEMU arguments attaching a vhost-user-net NIC served on `socket`.
///
/// `vectors=0` (INTx instead of MSI-X): Debian 12's QEMU 7.2 under TCG segfaults when the
/// guest driver sets DRIVER_OK on a vhost-user virtio-net-pci with MSI-X (backtrace:
/// virtio_set_status → vhost_net_start → msix_set_vector_notifiers), before any vring is
/// started — also with every ctrl_* feature off, on pc and q35; vhost-user-blk-pci is not
/// affected. Interrupts are QEMU's side of the call eventfds: the backend is the same.
pub fn vhost_user_net(socket: &Path, mac: &str) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=net0,path={}", socket.display()),
        "-netdev".into(),
        "vhost-user,id=net0,chardev=net0".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={mac},vectors=0"),
    ]
}

/// VESSEL_TCG_REFERENCE=qemu runs the same guest scripts against QEMU's own virtio-blk and
/// user-mode network instead of vessel: a failure there is the guest's or the host's, not
/// vessel's.
pub fn reference_mode() -> bool {
    std::env::var("VESSEL_TCG_REFERENCE").is_ok_and(|v| v == "qemu")
}

/// The device under test: vessel's backend and the QEMU arguments connecting to it (or, in
/// reference mode, QEMU's own device and no backend).
pub struct Served {
    pub backend: Option<Backend>,
    pub qemu_args: Vec<String>,
}

impl Served {
    /// A disk: `vessel vhost-user-blk --disk IMAGE,format=FORMAT[,readonly=on]`.
    pub fn blk(socket: &Path, image: &Path, format: &str, readonly: bool) -> Served {
        Self::blk_with(socket, image, format, readonly, "")
    }

    /// An overlay vessel made on a stored image: it names its base by absolute path, which
    /// vessel allows for its own overlays (`allow-external-backing=on`).
    pub fn blk_overlay(socket: &Path, image: &Path, format: &str) -> Served {
        Self::blk_with(socket, image, format, false, ",allow-external-backing=on")
    }

    fn blk_with(socket: &Path, image: &Path, format: &str, readonly: bool, opts: &str) -> Served {
        let ro = if readonly { ",readonly=on" } else { "" };
        if reference_mode() {
            let id = format!(
                "d-{}",
                socket.file_stem().unwrap_or_default().to_string_lossy()
            );
            let drive = format!(
                "file={},if=none,id={id},format={format}{ro}",
                image.display()
            );
            return Served {
                backend: None,
                qemu_args: vec![
                    "-drive".into(),
                    drive,
                    "-device".into(),
                    format!("virtio-blk-pci,drive={id}"),
                ],
            };
        }
        let disk = format!("{},format={format}{ro}{opts}", image.display());
        Served {
            backend: Some(Backend::start("blk", socket, &["--disk", &disk])),
            qemu_args: vhost_user_blk(socket),
        }
    }

    /// A NIC on vessel's NAT: `vessel vhost-user-net --nic
    /// nat,host-loopback=on[,forward=tcp:127.0.0.1:HOST-:GUEST]`. The guests fetch from a
    /// host server on the loopback through the gateway, so they opt in to reaching it.
    pub fn nat(socket: &Path, mac: &str, forward: Option<(u16, u16)>) -> Served {
        if reference_mode() {
            let fwd = forward
                .map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"))
                .unwrap_or_default();
            return Served {
                backend: None,
                qemu_args: vec![
                    "-netdev".into(),
                    format!("user,id=net0{fwd}"),
                    "-device".into(),
                    format!("virtio-net-pci,netdev=net0,mac={mac}"),
                ],
            };
        }
        let mut nic = format!("nat,mac={mac},host-loopback=on");
        if let Some((h, g)) = forward {
            nic.push_str(&format!(",forward=tcp:127.0.0.1:{h}-:{g}"));
        }
        Served {
            backend: Some(Backend::start("net", socket, &["--nic", &nic])),
            qemu_args: vhost_user_net(socket, mac),
        }
    }

    /// The backend's output ("" in reference mode).
    pub fn log(&self) -> String {
        self.backend.as_ref().map(Backend::log).unwrap_or_default()
    }

    /// Whether the backend still runs (always true in reference mode).
    pub fn is_running(&mut self) -> bool {
        self.backend.as_mut().is_none_or(Backend::is_running)
    }

    /// SIGTERM the backend and require exit status 0.
    pub fn stop(&mut self) {
        if let Some(b) = self.backend.as_mut() {
            let status = b.terminate();
            assert!(
                status.success(),
                "vessel exited with {status} after SIGTERM:\n{}",
                b.log()
            );
        }
    }
}

/// One QEMU process running the test guest.
pub struct Qemu {
    child: Child,
    serial: Transcript,
    readers: Vec<JoinHandle<()>>,
    test: String,
    exited: Option<ExitStatus>,
}

impl Qemu {
    /// Boot `guest` running tests/guests/tcg/`test`.sh; `params` are extra `vessel.KEY=VALUE`
    /// kernel parameters for the script, `devices` the QEMU arguments of the devices under test.
    pub fn boot(
        guest: &GuestImage,
        test: &str,
        params: &[(&str, String)],
        devices: &[String],
    ) -> Qemu {
        Self::boot_with(guest, test, params, "", devices)
    }

    /// [`Qemu::boot`] with `kernel_args` added to the kernel command line.
    pub fn boot_with(
        guest: &GuestImage,
        test: &str,
        params: &[(&str, String)],
        kernel_args: &str,
        devices: &[String],
    ) -> Qemu {
        let mut cmdline = format!("console=ttyS0 quiet panic=-1 vessel.test={test} {kernel_args}");
        for (key, value) in params {
            cmdline.push_str(&format!(" vessel.{key}={value}"));
        }
        let mem = format!("memory-backend-memfd,id=mem,size={GUEST_MIB}M,share=on");
        let mut child = die_with_test(&mut Command::new(QEMU))
            .args(["-accel", "tcg", "-m", &format!("{GUEST_MIB}")])
            .args(["-object", &mem, "-numa", "node,memdev=mem"])
            // No default NIC/VGA; serial on stdout. virtio-rng (QEMU's own) seeds the
            // guest's CRNG: without it mkfs.ext4 blocks ~4 s in getrandom under TCG.
            .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
            .args(["-device", "virtio-rng-pci"])
            .args(devices)
            .arg("-kernel")
            .arg(&guest.kernel)
            .arg("-initrd")
            .arg(&guest.initrd)
            .args(["-append", &cmdline, "-no-reboot"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
        let serial = Transcript::default();
        let readers = vec![
            serial.collect(child.stdout.take().expect("stdout")),
            serial.collect(child.stderr.take().expect("stderr")),
        ];
        Qemu {
            child,
            serial,
            readers,
            test: test.to_owned(),
            exited: None,
        }
    }

    /// The serial console (and QEMU's own messages) so far.
    pub fn output(&self) -> String {
        self.serial.text()
    }

    /// Wait until the guest prints `marker`; panic (killing QEMU) after `timeout` or if
    /// QEMU exits first.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) {
        let child = &mut self.child;
        let seen = self.serial.wait_for(marker, timeout, || {
            child.try_wait().is_ok_and(|s| s.is_some())
        });
        assert!(
            seen,
            "guest {} did not print {marker:?} within {timeout:?}:\n{}",
            self.test,
            self.serial.text()
        );
    }

    /// SIGKILL QEMU now (as a crash would) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// Wait for the guest to power off and QEMU to exit; the transcript of the run.
    pub fn finish(mut self) -> GuestRun {
        let status = wait_timeout(&mut self.child, GUEST_TIMEOUT);
        let Some(status) = status else {
            panic!(
                "guest {} still running after {GUEST_TIMEOUT:?}:\n{}",
                self.test,
                self.serial.text()
            );
        };
        self.exited = Some(status);
        // The reader threads hold the last lines until they see EOF.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        GuestRun {
            test: self.test.clone(),
            status,
            output: self.serial.text(),
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished guest printed.
pub struct GuestRun {
    pub test: String,
    pub status: ExitStatus,
    pub output: String,
}

impl GuestRun {
    /// Fail unless the guest script passed and QEMU exited cleanly; the device's backend
    /// log is shown on failure too.
    pub fn expect_pass(&self, served: &Served) -> &Self {
        let passed = self
            .output
            .contains(&format!("VESSEL-TEST-PASS {}\n", self.test));
        assert!(
            passed && self.status.success(),
            "guest test {} did not pass (QEMU {}):\n{}\n--- vessel:\n{}",
            self.test,
            self.status,
            self.output,
            served.log()
        );
        self
    }

    /// The value of the guest's `VESSEL-RESULT key=value` line.
    pub fn result(&self, key: &str) -> String {
        guest_result(&self.output, key)
    }
}

/// The value of the `VESSEL-RESULT key=value` line in a guest's console `output` (a test
/// script's result, see tests/guests/tcg/lib.sh); fails the test when there is none.
pub fn guest_result(output: &str, key: &str) -> String {
    let prefix = format!("VESSEL-RESULT {key}=");
    output
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(&prefix))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("guest printed no {prefix}…:\n{output}"))
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race accepted in tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}
