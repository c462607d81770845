//! `vessel snapshot take/ls/restore/rm` on powered-off VMs, end to end through the vessel
//! binary: disk content at every snapshot, the tree, refusals, crash recovery, user images
//! never touched, and what `rm`, `clone` and `export` do with snapshot files. Disks are
//! written and read on the host with qemu-io / qemu-img; only the boot test needs KVM.

mod common;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{multiboot_guest, out_dir, vessel, TIMEOUT};

const SIZE: usize = 4 << 20;

use common::state_dir::TestState as State;

impl State {
    /// Run a command that must fail (1, or 2 when it is refused: docs/vm-definition.md);
    /// its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let r = self.vessel(args);
        assert!(
            matches!(r.status, Some(1 | 2)),
            "{args:?} should fail: {:?} {}",
            r.status,
            r.stdout
        );
        r.stderr
    }

    fn vm_dir(&self, vm: &str) -> PathBuf {
        self.0.join(vm)
    }

    fn inspect(&self, vm: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", vm, "--json"])).unwrap()
    }

    /// The VM's disks as vm.toml names them now: (path, format).
    fn disks(&self, vm: &str) -> Vec<(PathBuf, String)> {
        self.inspect(vm)["definition"]["disk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    PathBuf::from(d["path"].as_str().unwrap()),
                    d["format"].as_str().unwrap_or("raw").to_string(),
                )
            })
            .collect()
    }

    fn snapshots(&self, vm: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["snapshot", "ls", vm, "--json"])).unwrap()
    }

    /// The definition validates, every image vessel made passes `qemu-img check`, and the
    /// VM directory holds nothing but vm.toml, snapshots.toml, the lock, the VMM's logs and
    /// sockets, and the images that vm.toml or a snapshot references.
    fn consistent(&self, vm: &str) {
        let def = self.vm_dir(vm).join("vm.toml");
        let r = vessel(&["validate", def.to_str().unwrap()], TIMEOUT);
        assert_eq!(r.status, Some(0), "{}", r.stderr);
        let mut referenced: BTreeSet<PathBuf> =
            self.disks(vm).into_iter().map(|(p, _)| p).collect();
        for s in self.snapshots(vm)["snapshots"].as_array().unwrap() {
            for d in s["disks"].as_array().unwrap() {
                referenced.insert(PathBuf::from(d["image"].as_str().unwrap()));
            }
        }
        for entry in std::fs::read_dir(self.vm_dir(vm)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let vmm_files = [
                "serial.log",
                "vmm.log",
                "vmm.pid",
                "exit",
                "console.sock",
                "api.sock",
            ];
            if ["vm.toml", "snapshots.toml", "lock"].contains(&name.as_str())
                || vmm_files.contains(&name.as_str())
            {
                continue;
            }
            assert!(referenced.contains(&path), "orphaned file {path:?}");
            qemu_img(&["check", path.to_str().unwrap()]);
        }
        for p in &referenced {
            assert!(p.exists(), "referenced image {p:?} is missing");
        }
    }
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The virtual content of the image at `path` (through its backing chain).
fn content(path: &Path, format: &str) -> Vec<u8> {
    // Unique per image path: tests running in parallel read images of the same file name.
    let out = out_dir().join(format!(
        "{}.{:08x}.content",
        path.file_name().unwrap().to_string_lossy(),
        common::fnv1a(path.as_os_str().as_encoded_bytes())
    ));
    qemu_img(&[
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    data
}

/// What the two disks of a test VM should read: a raw user disk and a qcow2 user disk.
#[derive(Clone, PartialEq, Debug)]
struct Model([Vec<u8>; 2]);

struct Vm<'a> {
    st: &'a State,
    name: String,
    /// The user's images, as given to `create`, and their bytes at creation.
    user: Vec<(PathBuf, Vec<u8>, std::time::SystemTime)>,
    model: Model,
}

impl<'a> Vm<'a> {
    /// A VM with a raw and a qcow2 disk the user supplied (outside the VM directory), each
    /// holding a pattern, and a read-only third disk.
    fn new(st: &'a State, name: &str) -> Self {
        let kernel = st.0.join("kernel");
        std::fs::write(&kernel, b"not booted in these tests").unwrap();
        Self::with_kernel(st, name, &kernel, "")
    }

    fn with_kernel(st: &'a State, name: &str, kernel: &Path, cmdline: &str) -> Self {
        let raw = st.0.join(format!("{name}-user.raw"));
        let qcow = st.0.join(format!("{name}-user.qcow2"));
        let iso = st.0.join(format!("{name}-readonly.raw"));
        qemu_img(&["create", "-f", "raw", raw.to_str().unwrap(), "4M"]);
        qemu_img(&["create", "-f", "qcow2", qcow.to_str().unwrap(), "4M"]);
        qemu_img(&["create", "-f", "raw", iso.to_str().unwrap(), "1M"]);
        let file = st.0.join(format!("{name}.vm.toml"));
        std::fs::write(
            &file,
            format!(
                "name = \"{name}\"\nmemory = \"32M\"\n[boot]\nkernel = {kernel:?}\n\
                 cmdline = {cmdline:?}\n\n\
                 [[disk]]\npath = {raw:?}\nformat = \"raw\"\n\n\
                 [[disk]]\npath = {qcow:?}\nformat = \"qcow2\"\n\n\
                 [[disk]]\npath = {iso:?}\nformat = \"raw\"\nreadonly = true\n"
            ),
        )
        .unwrap();
        st.ok(&["create", name, "--from", file.to_str().unwrap()]);
        let mut vm = Vm {
            st,
            name: name.into(),
            user: Vec::new(),
            model: Model([vec![0; SIZE], vec![0; SIZE]]),
        };
        vm.write(0, 0xaa, 0, 1 << 20);
        vm.write(1, 0x11, 1 << 20, 512 << 10);
        for p in [raw, qcow, iso] {
            let bytes = std::fs::read(&p).unwrap();
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            vm.user.push((p, bytes, mtime));
        }
        vm
    }

    /// Write `len` bytes of `pattern` at `offset` of disk `disk` through the VM's current
    /// image, as the guest would.
    fn write(&mut self, disk: usize, pattern: u8, offset: usize, len: usize) {
        let (path, format) = self.st.disks(&self.name)[disk].clone();
        let out = Command::new("qemu-io")
            .args(["-f", &format, "-c"])
            .arg(format!("write -P {pattern:#x} {offset} {len}"))
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.model.0[disk][offset..offset + len].fill(pattern);
    }

    /// What the VM's disks read now.
    fn read(&self) -> Model {
        let disks = self.st.disks(&self.name);
        Model([
            content(&disks[0].0, &disks[0].1),
            content(&disks[1].0, &disks[1].1),
        ])
    }

    fn snapshot(&self, args: &[&str]) -> String {
        let mut all = vec!["snapshot", args[0], &self.name];
        all.extend_from_slice(&args[1..]);
        let out = self.st.ok(&all);
        self.st.consistent(&self.name);
        out
    }

    /// Restore snapshot `name`, which holds `want`; the disks must read it.
    fn restore(&mut self, name: &str, want: &Model) {
        self.snapshot(&["restore", name]);
        self.model = want.clone();
        self.assert_reads(want, &format!("restored {name}"));
    }

    fn assert_reads(&self, want: &Model, what: &str) {
        let got = self.read();
        for i in 0..2 {
            assert!(got.0[i] == want.0[i], "{what}: disk {i} differs");
        }
    }

    /// The images the user supplied are byte for byte what they were at creation.
    fn user_images_untouched(&self) {
        for (p, bytes, mtime) in &self.user {
            assert!(&std::fs::read(p).unwrap() == bytes, "{p:?} was modified");
            assert_eq!(
                std::fs::metadata(p).unwrap().modified().unwrap(),
                *mtime,
                "{p:?} was written"
            );
        }
    }
}

#[test]
fn restore_brings_back_each_snapshots_content_and_rm_keeps_the_others() {
    let st = State::new("snapshot-restore");
    let mut vm = Vm::new(&st, "box");
    let s0 = vm.model.clone();
    vm.snapshot(&["take", "s1", "--description", "fresh install"]);
    let disks = st.disks("box");
    assert!(disks[0].0.starts_with(st.vm_dir("box")), "{disks:?}");
    assert_eq!(disks[0].1, "qcow2");
    assert_eq!(disks[2].0, vm.user[2].0, "read-only disks are untouched");
    vm.assert_reads(&s0, "right after take");
    vm.write(0, 0xbb, 512 << 10, 1 << 20);
    vm.write(1, 0x22, 0, 64 << 10);
    let s1 = vm.model.clone();
    vm.snapshot(&["take", "s2"]);
    vm.write(0, 0xcc, 3 << 20, 4096);
    vm.write(1, 0x33, 1 << 20, 4096);
    vm.restore("s1", &s0);
    vm.restore("s2", &s1);
    vm.write(0, 0xdd, 2 << 20, 8192);
    let current = vm.model.clone();
    vm.snapshot(&["rm", "s1"]);
    vm.assert_reads(&current, "current after rm s1");
    let snaps = st.snapshots("box");
    assert_eq!(snaps["current"], "s2");
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(snaps["snapshots"][0]["parent"], serde_json::Value::Null);
    vm.restore("s2", &s1);
    vm.snapshot(&["rm", "s2"]);
    vm.assert_reads(&s1, "current after rm s2");
    assert_eq!(st.snapshots("box")["snapshots"], serde_json::json!([]));
    vm.user_images_untouched();
    let inspect = st.inspect("box");
    assert_eq!(inspect["snapshots"]["current"], serde_json::Value::Null);
}

#[test]
fn rm_in_the_middle_of_a_chain_merges_into_the_child() {
    let st = State::new("snapshot-middle");
    let mut vm = Vm::new(&st, "chain");
    let s0 = vm.model.clone();
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0xb1, 0, 256 << 10);
    vm.write(1, 0xb2, 2 << 20, 256 << 10);
    vm.snapshot(&["take", "s2"]);
    vm.write(0, 0xc1, 128 << 10, 256 << 10);
    vm.write(1, 0xc2, 3 << 20, 64 << 10);
    let s2 = vm.model.clone();
    vm.snapshot(&["take", "s3"]);
    vm.write(0, 0xd1, 64 << 10, 4096);
    let current = vm.model.clone();
    let out = vm.snapshot(&["rm", "s2"]);
    assert!(out.contains("merged into 2 image(s)"), "{out}");
    vm.assert_reads(&current, "current after rm s2");
    let snaps = st.snapshots("chain");
    let names: Vec<_> = snaps["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].clone(), s["parent"].clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            (serde_json::json!("s1"), serde_json::Value::Null),
            (serde_json::json!("s3"), serde_json::json!("s1"))
        ]
    );
    // The snapshot the current state hangs from: merged into the current overlays.
    let out = vm.snapshot(&["rm", "s3"]);
    assert!(out.contains("merged into 2 image(s)"), "{out}");
    vm.assert_reads(&current, "current after rm s3");
    assert_eq!(st.snapshots("chain")["current"], "s1");
    vm.snapshot(&["take", "again"]);
    vm.restore("s1", &s0);
    vm.restore("again", &current);
    assert_ne!(s2, current);
    vm.user_images_untouched();
}

#[test]
fn restore_then_take_branches_the_tree() {
    let st = State::new("snapshot-branch");
    let mut vm = Vm::new(&st, "tree");
    vm.snapshot(&["take", "origin"]);
    vm.write(1, 0x03, 0, 4096);
    let base = vm.model.clone();
    vm.snapshot(&["take", "base"]);
    vm.write(0, 0x01, 0, 4096);
    let left = vm.model.clone();
    vm.snapshot(&["take", "left"]);
    vm.restore("base", &base);
    vm.write(0, 0x02, 0, 4096);
    let right = vm.model.clone();
    vm.snapshot(&["take", "right", "--description", "other branch"]);
    let text = st.ok(&["snapshot", "ls", "tree"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("`-- origin  ("), "{text}");
    assert!(lines[1].starts_with("    `-- base  ("), "{text}");
    assert!(lines[2].starts_with("        |-- left  ("), "{text}");
    assert!(
        lines[3].starts_with("        `-- right  (") && lines[3].ends_with("other branch"),
        "{text}"
    );
    assert_eq!(lines[4], "            `-- [current state]", "{text}");
    let json = st.snapshots("tree");
    assert_eq!(json["current"], "right");
    assert_eq!(
        json["snapshots"][1]["children"],
        serde_json::json!(["left", "right"])
    );
    assert_eq!(json["snapshots"][3]["description"], "other branch");
    vm.restore("left", &left);
    // Removing the branch point merges it into both branches.
    let out = vm.snapshot(&["rm", "base"]);
    assert!(out.contains("merged into 4 image(s)"), "{out}");
    assert_eq!(
        st.snapshots("tree")["snapshots"][0]["children"],
        serde_json::json!(["left", "right"])
    );
    vm.restore("right", &right);
    vm.restore("left", &left);
    vm.user_images_untouched();
}

#[test]
fn refusals_leave_the_vm_as_it_was() {
    let st = State::new("snapshot-refuse");
    let mut vm = Vm::new(&st, "strict");
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x44, 0, 4096);
    let meta = std::fs::read_to_string(st.vm_dir("strict").join("snapshots.toml")).unwrap();
    let def = std::fs::read_to_string(st.vm_dir("strict").join("vm.toml")).unwrap();
    let unchanged = |what: &str| {
        let m = std::fs::read_to_string(st.vm_dir("strict").join("snapshots.toml")).unwrap();
        let d = std::fs::read_to_string(st.vm_dir("strict").join("vm.toml")).unwrap();
        assert_eq!(m, meta, "{what} changed snapshots.toml");
        assert_eq!(d, def, "{what} changed vm.toml");
        st.consistent("strict");
    };
    let e = st.fails(&["snapshot", "take", "strict", "s1"]);
    assert!(e.contains("already exists"), "{e}");
    unchanged("duplicate name");
    for bad in ["", "a/b", "tab\there"] {
        let e = st.fails(&["snapshot", "take", "strict", bad]);
        assert!(e.contains("invalid snapshot name"), "{e}");
        unchanged("bad name");
    }
    for cmd in ["restore", "rm"] {
        let e = st.fails(&["snapshot", cmd, "strict", "nope"]);
        assert!(e.contains("no snapshot named 'nope'"), "{e}");
        unchanged("unknown snapshot");
    }
    let e = st.fails(&["snapshot", "ls", "ghost"]);
    assert!(e.contains("no VM named 'ghost'"), "{e}");
    // A running VMM holds the VM's lock; hold it the same way.
    let lock = std::fs::File::open(st.vm_dir("strict").join("lock")).unwrap();
    // SAFETY: flock on an open file descriptor.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    for args in [
        &["take", "strict", "s2"][..],
        &["restore", "strict", "s1"],
        &["rm", "strict", "s1"],
    ] {
        let mut all = vec!["snapshot"];
        all.extend_from_slice(args);
        let e = st.fails(&all);
        assert!(
            e.contains("is running") && e.contains("vessel stop strict"),
            "{e}"
        );
    }
    // ls works on a running VM.
    assert_eq!(st.snapshots("strict")["current"], "s1");
    drop(lock);
    unchanged("refusals of a running VM");
    vm.user_images_untouched();
}

/// snapshots.toml as a TOML value, and the file's path.
fn meta_of(st: &State, vm: &str) -> (PathBuf, toml::Table) {
    let path = st.vm_dir(vm).join("snapshots.toml");
    let table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    (path, table)
}

#[test]
fn an_interrupted_command_is_finished_or_undone_by_the_next_one() {
    let st = State::new("snapshot-crash");
    let mut vm = Vm::new(&st, "fragile");
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x55, 0, 4096);
    let (meta_path, before) = meta_of(&st, "fragile");
    let def_path = st.vm_dir("fragile").join("vm.toml");
    let def_before = std::fs::read_to_string(&def_path).unwrap();
    vm.snapshot(&["take", "s2"]);
    let (_, after) = meta_of(&st, "fragile");
    let def_after = std::fs::read_to_string(&def_path).unwrap();
    // The state a crash leaves between writing the pending change and settling it.
    let mut pending = toml::Table::new();
    pending.insert("created".into(), after["current_layers"].clone());
    pending.insert("after".into(), toml::Value::Table(after.clone()));
    let mut crashed = before.clone();
    crashed.insert("pending".into(), toml::Value::Table(pending));
    let crashed = toml::to_string(&crashed).unwrap();

    // vm.toml was written: the change happened, the next command finishes it.
    std::fs::write(&meta_path, &crashed).unwrap();
    st.consistent("fragile");
    let (_, settled) = meta_of(&st, "fragile");
    assert_eq!(settled, after);

    // vm.toml was not written yet: the next command undoes the change.
    std::fs::write(&meta_path, &crashed).unwrap();
    std::fs::write(&def_path, &def_before).unwrap();
    let json = st.snapshots("fragile");
    assert_eq!(json["current"], "s1");
    assert_eq!(json["snapshots"].as_array().unwrap().len(), 1);
    let (_, undone) = meta_of(&st, "fragile");
    assert_eq!(undone["next_layer"], after["next_layer"]);
    for layer in after["current_layers"].as_array().unwrap() {
        assert!(
            !Path::new(layer.as_str().unwrap()).exists(),
            "{layer} left behind"
        );
    }
    st.consistent("fragile");
    vm.assert_reads(&vm.model.clone(), "after the undo");

    // A merge interrupted mid-way leaves its temporary file listed as garbage: the next
    // command deletes it, and nothing there but files vessel names itself.
    let tmp = st.vm_dir("fragile").join(".merge-layer-0-disk0.qcow2");
    let precious = st.vm_dir("fragile").join("precious.raw");
    std::fs::write(&tmp, b"half a merge").unwrap();
    std::fs::write(&precious, b"the user's").unwrap();
    let (_, mut table) = meta_of(&st, "fragile");
    table.insert(
        "garbage".into(),
        toml::Value::Array(vec![
            toml::Value::String(tmp.to_str().unwrap().into()),
            toml::Value::String(precious.to_str().unwrap().into()),
        ]),
    );
    std::fs::write(&meta_path, toml::to_string(&table).unwrap()).unwrap();
    st.ok(&["snapshot", "ls", "fragile"]);
    assert!(!tmp.exists());
    assert_eq!(std::fs::read(&precious).unwrap(), b"the user's");
    std::fs::remove_file(&precious).unwrap();
    st.consistent("fragile");
    assert_ne!(def_before, def_after);
    vm.user_images_untouched();
}

#[test]
fn vessel_rm_deletes_the_snapshot_files_but_not_the_users_images() {
    let st = State::new("snapshot-rm");
    let mut vm = Vm::new(&st, "gone");
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x66, 0, 4096);
    vm.snapshot(&["take", "s2"]);
    st.ok(&["rm", "gone"]);
    assert!(!st.vm_dir("gone").exists());
    vm.user_images_untouched();

    // --keep-disks keeps the whole chain under the current disks.
    let mut vm = Vm::new(&st, "kept");
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x77, 0, 4096);
    vm.snapshot(&["take", "s2"]);
    vm.write(1, 0x78, 0, 4096);
    let disks = st.disks("kept");
    let want = vm.model.clone();
    st.ok(&["rm", "kept", "--keep-disks"]);
    assert!(!st.vm_dir("kept").join("vm.toml").exists());
    assert!(content(&disks[0].0, "qcow2") == want.0[0]);
    assert!(content(&disks[1].0, "qcow2") == want.0[1]);
    vm.user_images_untouched();
}

#[test]
fn clone_and_export_of_a_vm_with_snapshots_are_self_contained() {
    let st = State::new("snapshot-clone");
    let mut vm = Vm::new(&st, "src");
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x88, 0, 8192);
    let s2 = vm.model.clone();
    vm.snapshot(&["take", "s2"]);
    vm.write(1, 0x99, 4096, 8192);
    let want = vm.model.clone();
    let src_dir = st.vm_dir("src");

    st.ok(&["clone", "src", "full"]);
    for (i, (path, format)) in st.disks("full").iter().take(2).enumerate() {
        assert!(path.starts_with(st.vm_dir("full")), "{path:?}");
        let info = qemu_img(&["info", "--backing-chain", path.to_str().unwrap()]);
        assert!(!info.contains(src_dir.to_str().unwrap()), "{info}");
        assert!(content(path, format) == want.0[i], "clone disk {i}");
    }

    let archive = out_dir().join("snapshot-src.tar");
    let _ = std::fs::remove_file(&archive);
    st.ok(&["export", "src", archive.to_str().unwrap()]);
    st.ok(&["import", archive.to_str().unwrap(), "--name", "imported"]);
    for (i, (path, format)) in st.disks("imported").iter().take(2).enumerate() {
        assert!(path.starts_with(st.vm_dir("imported")), "{path:?}");
        assert!(content(path, format) == want.0[i], "imported disk {i}");
    }

    // A linked clone reads through the source's current overlays: restoring the source
    // would delete them, so it is refused until the clone is gone.
    st.ok(&["clone", "src", "linked", "--linked"]);
    let e = st.fails(&["snapshot", "restore", "src", "s1"]);
    assert!(e.contains("VM 'linked'"), "{e}");
    st.consistent("src");
    vm.assert_reads(&want, "after the refused restore");
    st.ok(&["rm", "linked"]);
    vm.restore("s2", &s2);
    vm.user_images_untouched();
}

#[test]
fn images_vessel_did_not_make_are_never_rewritten() {
    let st = State::new("snapshot-foreign");
    let mut vm = Vm::new(&st, "mixed");
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x12, 0, 4096);
    vm.snapshot(&["take", "s2"]);
    // The user points disk 0 at an overlay of their own over s2's image.
    let s2_image = st.snapshots("mixed")["snapshots"][1]["disks"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = st.0.join("mine.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        &s2_image,
        mine.to_str().unwrap(),
    ]);
    let def_path = st.vm_dir("mixed").join("vm.toml");
    let def = std::fs::read_to_string(&def_path).unwrap();
    let current = st.disks("mixed")[0].0.clone();
    std::fs::write(
        &def_path,
        def.replace(current.to_str().unwrap(), mine.to_str().unwrap()),
    )
    .unwrap();
    let before = std::fs::read(&mine).unwrap();
    let e = st.fails(&["snapshot", "rm", "mixed", "s2"]);
    assert!(e.contains("not made by vessel"), "{e}");
    assert!(std::fs::read(&mine).unwrap() == before);
    assert!(Path::new(&s2_image).exists());
    vm.user_images_untouched();

    // A VM whose only disk is read-only has nothing to snapshot.
    let file = st.0.join("ro.vm.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"ro\"\n[boot]\nkernel = {:?}\n[[disk]]\npath = {:?}\nreadonly = true\n",
            st.0.join("kernel"),
            vm.user[2].0
        ),
    )
    .unwrap();
    st.ok(&["create", "ro", "--from", file.to_str().unwrap()]);
    let e = st.fails(&["snapshot", "take", "ro", "s1"]);
    assert!(e.contains("no writable disk"), "{e}");
    assert_eq!(st.snapshots("ro")["snapshots"], serde_json::json!([]));
}

fn wait_serial(st: &State, vm: &str, text: &str) {
    let log = st.vm_dir(vm).join("serial.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(start.elapsed() < TIMEOUT, "{vm}: no {text:?} in {log:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On KVM: a VM boots from its snapshot overlays (raw and qcow2 images below them), every
/// snapshot command refuses it while it runs, and it boots again after a restore.
#[test]
fn a_vm_boots_from_its_snapshots_and_is_refused_while_running() {
    let st = State::new("snapshot-boot");
    let kernel = multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    );
    let mut vm = Vm::with_kernel(&st, "live", &kernel, "service");
    let s1 = vm.model.clone();
    vm.snapshot(&["take", "s1"]);
    vm.write(0, 0x5e, 0, 4096);
    vm.snapshot(&["take", "s2"]);
    st.ok(&["start", "live"]);
    wait_serial(&st, "live", "service up\n");
    for args in [
        &["take", "live", "s3"][..],
        &["restore", "live", "s1"],
        &["rm", "live", "s1"],
    ] {
        let mut all = vec!["snapshot"];
        all.extend_from_slice(args);
        let e = st.fails(&all);
        assert!(
            e.contains("is running") && e.contains("vessel stop live"),
            "{e}"
        );
    }
    st.ok(&["stop", "live", "--force"]);
    vm.restore("s1", &s1);
    std::fs::remove_file(st.vm_dir("live").join("serial.log")).unwrap();
    st.ok(&["start", "live"]);
    wait_serial(&st, "live", "service up\n");
    st.ok(&["stop", "live", "--force"]);
    vm.snapshot(&["rm", "s2"]);
    vm.user_images_untouched();
}
