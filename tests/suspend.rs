//! `vessel suspend`, `vessel resume` and `vessel fork` of background VMs on KVM: a counting
//! guest is suspended mid-count (its VMM exits, `ls` says suspended), what would not match
//! its saved state is refused, and `resume` (or `start`) goes on with the next number —
//! never a gap, a repeat or a restart. `stop` discards a saved state; the next start boots
//! afresh. A forked guest that writes every count to its disk goes on in both VMs, each
//! on its own overlay over the image frozen at the fork. A guest with a shared folder is
//! suspended, resumed and forked too: virtiofsd's state is saved and a new virtiofsd for the
//! definition's directory loads it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::state_dir::TestState as State;
use common::{counts, multiboot_guest, out_dir, wait_for};

const STEPS: u64 = 40;

fn counter_guest() -> PathBuf {
    multiboot_guest(
        "counter",
        &["multiboot_header.S", "counter_guest.c"],
        "multiboot.ld",
    )
}

impl State {
    fn serial(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name).join("serial.log")).unwrap_or_default()
    }

    fn state_of(&self, name: &str) -> String {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&self.ok(&["ls", "--json"])).unwrap();
        all.iter()
            .find(|v| v["name"] == name)
            .map(|v| v["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// A stopped counting VM named `name`, with `extra` TOML after its `[boot]` table.
    fn counting_vm(&self, name: &str, extra: &str) {
        self.vm_of(name, &counter_guest(), extra);
    }

    /// A stopped VM named `name` booting `kernel` to count, `extra` after `[boot]`.
    fn vm_of(&self, name: &str, kernel: &std::path::Path, extra: &str) {
        let file = out_dir().join(format!("{name}.vm.toml"));
        let cmdline = format!("steps={STEPS} delay=100000");
        std::fs::write(
            &file,
            format!(
                "name = \"{name}\"\ncpus = 1\nmemory = \"64M\"\n\n[boot]\nkernel = {kernel:?}\ncmdline = {cmdline:?}\n{extra}"
            ),
        )
        .unwrap();
        self.ok(&["create", name, "--from", file.to_str().unwrap()]);
    }

    /// A usage error (exit 2) whose message says `what`.
    fn refused(&self, args: &[&str], what: &str) {
        let r = self.vessel(args);
        assert_eq!(r.status, Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(what), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn a_suspended_guest_resumes_where_it_was_and_counts_on() {
    let st = State::new("suspend");
    // A qcow2 overlay over a file in another directory, as an image VM's disk is: resuming
    // reopens it with the definition's leave to follow its backing file.
    let base = out_dir().join("suspend-base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let overlay = out_dir().join("suspend-overlay.qcow2");
    let _ = std::fs::remove_file(&overlay);
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(made.success());
    st.counting_vm(
        "c",
        &format!("\n[[disk]]\npath = {overlay:?}\nallow-external-backing = true\n"),
    );
    st.refused(&["suspend", "c"], "is not running");
    st.refused(&["resume", "c"], "is not suspended");
    st.ok(&["start", "c"]);
    wait_for("the guest to count to 5", || {
        counts(&st.serial("c")).len() >= 5
    });

    let out = st.ok(&["suspend", "c"]);
    assert!(out.contains("suspended VM 'c' in "), "{out}");
    assert_eq!(st.state_of("c"), "suspended");
    assert!(st.0.join("c/suspended/memory").is_file());
    let before = counts(&st.serial("c"));
    assert!(*before.last().unwrap() < STEPS, "the guest finished first");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counts(&st.serial("c")),
        before,
        "a suspended guest does not run"
    );

    st.refused(&["set", "c", "--cpus", "2"], "is suspended");
    st.refused(&["snapshot", "take", "c", "s1"], "is suspended");
    st.refused(&["clone", "c", "c2"], "is suspended");
    st.refused(&["suspend", "c"], "is not running");

    let out = st.ok(&["resume", "c"]);
    assert!(out.contains("resumed VM 'c'"), "{out}");
    assert!(
        !st.0.join("c/suspended").exists(),
        "the saved state is used up"
    );
    wait_for("the guest to count on", || {
        counts(&st.serial("c")).len() > before.len() + 2
    });

    // `start` of a suspended VM resumes it too.
    st.ok(&["suspend", "c"]);
    assert!(st.ok(&["start", "c"]).contains("resumed VM 'c'"));
    wait_for("the guest to finish", || st.state_of("c") == "stopped");
    let serial = st.serial("c");
    assert_eq!(
        counts(&serial),
        (1..=STEPS).collect::<Vec<_>>(),
        "one unbroken count:\n{serial}"
    );
    assert_eq!(serial.matches("counter guest up").count(), 1, "{serial}");
}

#[test]
fn stop_discards_a_saved_state_and_the_next_start_boots_afresh() {
    let st = State::new("suspend-stop");
    st.counting_vm("d", "");
    st.ok(&["start", "d"]);
    wait_for("the guest to count", || !counts(&st.serial("d")).is_empty());
    st.ok(&["suspend", "d"]);
    let out = st.ok(&["stop", "d"]);
    assert!(out.contains("saved state is discarded"), "{out}");
    assert_eq!(st.state_of("d"), "stopped");
    assert!(!st.0.join("d/suspended").exists());
    assert!(st.ok(&["start", "d"]).contains("started VM 'd'"));
    wait_for("a second boot", || {
        st.serial("d").matches("counter guest up").count() == 2
    });
    st.ok(&["stop", "d", "--force"]);
}

/// Sector `n` of `image` holds `n` in every word (what the counting guest writes).
fn sector_holds(image: &[u8], n: usize, value: u32) -> bool {
    image[n * 512..(n + 1) * 512]
        .chunks(4)
        .all(|w| u32::from_le_bytes(w.try_into().unwrap()) == value)
}

#[test]
fn a_forked_guest_counts_on_in_both_vms_each_on_its_own_disk() {
    let st = State::new("fork");
    let kernel = multiboot_guest(
        "counter_blk",
        &["multiboot_header.S", "counter_blk_guest.c"],
        "multiboot.ld",
    );
    let disk = out_dir().join("fork-source.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    st.vm_of(
        "a",
        &kernel,
        &format!("\n[[disk]]\npath = {disk:?}\nformat = \"raw\"\n"),
    );
    st.refused(&["fork", "a", "b"], "is not running");
    st.ok(&["start", "a"]);
    wait_for("the guest to count to 5", || {
        counts(&st.serial("a")).len() >= 5
    });
    st.refused(&["fork", "a", "a"], "already exists");

    let out = st.ok(&["fork", "a", "b"]);
    assert!(
        out.contains("forked VM 'a' to 'b' ('a' was paused "),
        "{out}"
    );
    assert_eq!(st.state_of("b"), "running");
    assert!(
        !st.0.join("b/suspended").exists(),
        "the fork runs from its saved state"
    );
    wait_for("both guests to finish", || {
        st.state_of("a") == "stopped" && st.state_of("b") == "stopped"
    });
    let (a, b) = (st.serial("a"), st.serial("b"));
    assert_eq!(counts(&a), (1..=STEPS).collect::<Vec<_>>(), "{a}");
    let forked_at = counts(&b)[0] - 1;
    assert!((5..STEPS).contains(&forked_at), "{b}");
    assert_eq!(
        counts(&b),
        (forked_at + 1..=STEPS).collect::<Vec<_>>(),
        "{b}"
    );
    // Each guest read back every sector at the end, those from before the fork through
    // its overlay.
    assert!(
        a.contains("disk verified") && b.contains("disk verified"),
        "{a}\n{b}"
    );
    assert!(!b.contains("counter guest up"), "the fork booted: {b}");

    // The image frozen at the fork has what was written before it, nothing after.
    let frozen = std::fs::read(&disk).unwrap();
    assert!(sector_holds(&frozen, 1, 1));
    assert!(
        sector_holds(&frozen, STEPS as usize, 0),
        "written after the fork"
    );
    let def = std::fs::read_to_string(st.0.join("a/vm.toml")).unwrap();
    assert!(def.contains("fork-source.fork-b.qcow2"), "{def}");
    let def = std::fs::read_to_string(st.0.join("b/vm.toml")).unwrap();
    assert!(
        def.contains("disk0-fork-source.qcow2") && def.contains("name = \"b\""),
        "{def}"
    );
}

#[test]
fn what_two_equal_guests_cannot_share_is_not_forked() {
    let st = State::new("fork-refused");
    st.counting_vm(
        "f",
        "\n[[nic]]\nmode = \"nat\"\nforward = [\"tcp:127.0.0.1:47123-:22\"]\n",
    );
    st.ok(&["start", "f"]);
    st.refused(&["fork", "f", "g"], "fixed host port");
    assert!(!st.0.join("g").exists());
    st.ok(&["stop", "f", "--force"]);
}

/// Whether the VMM finds a virtiofsd (as `vhost_user::virtiofsd::find` looks for it).
/// The counting guest does not mount its share (it speaks no FUSE): what is checked is
/// that the VM with a share is saved (virtiofsd's state with it), restored with a new
/// virtiofsd and runs on, suspended and resumed as well as forked.
#[test]
fn a_guest_with_a_shared_folder_is_suspended_resumed_and_forked() {
    if !common::virtiofsd::installed() {
        eprintln!("skipped: virtiofsd is not installed");
        return;
    }
    let st = State::new("suspend-share");
    let dir = out_dir().join("suspend-share-dir");
    std::fs::create_dir_all(&dir).unwrap();
    st.counting_vm(
        "s",
        &format!("\n[[share]]\ndir = {dir:?}\ntag = \"data\"\n"),
    );
    st.ok(&["start", "s"]);
    wait_for("the guest to count to 3", || {
        counts(&st.serial("s")).len() >= 3
    });
    let out = st.ok(&["suspend", "s"]);
    assert!(out.contains("suspended VM 's' in "), "{out}");
    assert_eq!(st.state_of("s"), "suspended");
    let before = *counts(&st.serial("s")).last().unwrap();
    assert!(before < STEPS, "the guest finished first");

    st.ok(&["resume", "s"]);
    wait_for("the resumed guest to count on", || {
        counts(&st.serial("s"))
            .last()
            .is_some_and(|&n| n > before + 2)
    });
    let out = st.ok(&["fork", "s", "t"]);
    assert!(out.contains("forked VM 's' to 't'"), "{out}");
    wait_for("both guests to finish", || {
        st.state_of("s") == "stopped" && st.state_of("t") == "stopped"
    });
    let (s, t) = (st.serial("s"), st.serial("t"));
    assert_eq!(counts(&s), (1..=STEPS).collect::<Vec<_>>(), "{s}");
    let forked_at = counts(&t)[0] - 1;
    assert_eq!(
        counts(&t),
        (forked_at + 1..=STEPS).collect::<Vec<_>>(),
        "{t}"
    );
}
