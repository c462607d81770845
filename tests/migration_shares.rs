//! Live migration of a VM with a shared folder (virtio-fs, docs/migration.md "Shared
//! folders"): a background VM whose definition has a share moves to `vessel start NAME
//! --incoming` on a state directory whose definition names the same directory. virtiofsd's
//! state travels with the VM; the counting guest (which does not mount the share) goes on
//! there without a gap, a repeat or a restart, with its memory intact. Skipped when
//! virtiofsd is not installed.

mod common;

use std::path::PathBuf;

use common::{counts, multiboot_guest, out_dir, wait_for};

const STEPS: u64 = 20;
const DELAY: u64 = 100_000;
/// MiB of memory the counting guest keeps a pattern in (it checks it all at the end and
/// prints `memory=ok`).
const FILL_MIB: u64 = 2;

fn counter_guest() -> PathBuf {
    multiboot_guest(
        "counter",
        &["multiboot_header.S", "counter_guest.c"],
        "multiboot.ld",
    )
}

/// A background VM with a shared folder moves to `vessel start NAME --incoming` (its
/// definition names the same directory, as shared storage on another host would): the
/// source's virtiofsd saves its state, a new virtiofsd on the receiver loads it, and the
/// count goes on there with the memory intact (a VM with shares is copied while paused:
/// virtiofsd's writes are in no dirty log). The counting guest does not mount the share.
#[test]
fn a_background_vm_with_a_shared_folder_moves_with_vessel_start_incoming() {
    if !common::virtiofsd::installed() {
        eprintln!("skipped: virtiofsd is not installed");
        return;
    }
    let here = common::state_dir::TestState::new("share-source");
    let there = common::state_dir::TestState::new("share-receiver");
    let dir = out_dir().join("migrated-share");
    std::fs::create_dir_all(&dir).unwrap();
    let def = |file: &str| {
        let file = out_dir().join(file);
        std::fs::write(
            &file,
            format!(
                "name = \"sharer\"\ncpus = 1\nmemory = \"64M\"\n\n[boot]\nkernel = {:?}\ncmdline = \"steps={STEPS} delay={DELAY} fill={FILL_MIB}\"\n\n[[share]]\ndir = {dir:?}\ntag = \"data\"\n",
                counter_guest()
            ),
        )
        .unwrap();
        file
    };
    here.ok(&[
        "create",
        "sharer",
        "--from",
        def("sharer.vm.toml").to_str().unwrap(),
    ]);
    there.ok(&[
        "create",
        "sharer",
        "--from",
        def("sharer-there.vm.toml").to_str().unwrap(),
    ]);
    here.ok(&["start", "sharer"]);
    let serial = |st: &common::state_dir::TestState| {
        std::fs::read_to_string(st.0.join("sharer").join("serial.log")).unwrap_or_default()
    };
    wait_for("the guest to count to 3", || {
        counts(&serial(&here)).len() >= 3
    });
    let socket = out_dir().join("incoming-share.sock");
    let _ = std::fs::remove_file(&socket);
    let url = format!("unix:{}", socket.display());
    there.ok(&["start", "sharer", "--incoming", &url]);
    let run = here.vessel(&["migrate", "sharer", "--to", &url]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    wait_for("the guest to finish counting there", || {
        serial(&there).contains("counter done")
    });
    let (before, after) = (serial(&here), serial(&there));
    common::counted_on_across_a_move(&before, &after, STEPS);
}
