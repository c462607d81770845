//! virtiofsd's state through vessel's frontend, against the real virtiofsd: a guest looks
//! a file up, the device is paused (queues stopped, state saved), a second virtiofsd for
//! the same directory loads the state (CHECK_DEVICE_STATE succeeds) and, with the queues
//! resumed at the saved indices over the same guest memory, answers for the inode the
//! first one had handed out. A damaged state fails the load with virtiofsd's refusal; one
//! naming a file removed from the host since loads, and that inode answers errors.
//!
//! Skipped like the other virtiofsd tests when it is not installed.

use virtio::external::{BackendState, BACKEND_STATE_VERSION};
use virtio::features::VERSION_1;
use virtio::{DeviceState, VirtioDevice as _};

use super::virtiofsd::{
    active_queues, binary, fuse, in_header, start, Started, FUSE_LOOKUP, ROOT_NODE,
};
use crate::fs::Share;
use crate::fs_device::{FsDevice, FsDeviceError};

const FUSE_GETATTR: u32 = 3;

/// The node id virtiofsd gives the root's entry `name`.
fn lookup(t: &mut Started, name: &str) -> u64 {
    let mut lookup = in_header(name.len() + 1, FUSE_LOOKUP, 2, ROOT_NODE);
    lookup.extend_from_slice(name.as_bytes());
    lookup.push(0);
    let (error, reply) = fuse(t, &lookup);
    assert_eq!(error, 0, "LOOKUP {name}");
    u64::from_le_bytes(reply[16..24].try_into().unwrap())
}

#[test]
fn a_new_virtiofsd_takes_over_the_saved_state() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), vec![7u8; 4321]).unwrap();
    let share = Share::new(&shared, "data", false).unwrap();
    let mut t = start(&binary, share.clone(), &dir.path().join("a.sock"));

    let node = lookup(&mut t, "hello");

    // FUSE_INIT and the LOOKUP went through the request queue.
    let mut bases = t.device.pause().unwrap();
    bases.sort();
    t.device.save().unwrap();
    assert_eq!(bases, [(0, 0), (1, 2)]);
    let DeviceState::Fs(saved) = t.device.save_state() else {
        panic!("not a virtio-fs state")
    };
    assert_eq!(saved.version, BACKEND_STATE_VERSION);
    assert!(!saved.state.is_empty());

    // A damaged state: the new virtiofsd refuses it and the restore fails.
    let damaged = BackendState {
        version: BACKEND_STATE_VERSION,
        state: b"not a virtiofsd state".to_vec(),
    };
    let err = FsDevice::restore(&binary, share.clone(), &dir.path().join("b.sock"), &damaged)
        .err()
        .expect("a damaged state was loaded");
    assert!(matches!(err, FsDeviceError::BackendState { .. }), "{err}");

    let restored = FsDevice::restore(&binary, share, &dir.path().join("c.sock"), &saved).unwrap();
    // The first virtiofsd goes; the second serves the same rings from where they were.
    t.device = restored;
    let queues = active_queues(&t.rings, &t.fds, &bases);
    t.device.activate(VERSION_1, &t.guest.mem, &queues).unwrap();
    drop(queues);
    let mut getattr = in_header(16, FUSE_GETATTR, 3, node);
    getattr.extend_from_slice(&[0; 16]);
    let (error, reply) = fuse(&mut t, &getattr);
    assert_eq!(error, 0, "the restored virtiofsd does not know node {node}");
    // fuse_out_header (16), attr_valid (8) + nsec and padding (8), ino (8), size (8).
    let size = u64::from_le_bytes(reply[40..48].try_into().unwrap());
    assert_eq!(size, 4321);
}

/// A file the guest had looked up and that is gone from the host when the state is loaded
/// (or one only an open, unlinked file held) does not fail the load
/// (`--migration-on-error=guest-error`): a suspended VM stays resumable, and the guest gets
/// errors for that inode alone.
#[test]
fn a_state_naming_a_file_that_is_gone_loads_and_the_inode_answers_errors() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("gone"), b"x").unwrap();
    let share = Share::new(&shared, "data", false).unwrap();
    let mut t = start(&binary, share.clone(), &dir.path().join("a.sock"));
    let node = lookup(&mut t, "gone");
    let mut bases = t.device.pause().unwrap();
    bases.sort();
    t.device.save().unwrap();
    let DeviceState::Fs(saved) = t.device.save_state() else {
        panic!("not a virtio-fs state")
    };
    std::fs::remove_file(shared.join("gone")).unwrap();
    t.device = FsDevice::restore(&binary, share, &dir.path().join("b.sock"), &saved)
        .expect("a state naming a removed file fails the load");
    let queues = active_queues(&t.rings, &t.fds, &bases);
    t.device.activate(VERSION_1, &t.guest.mem, &queues).unwrap();
    drop(queues);
    let mut getattr = in_header(16, FUSE_GETATTR, 3, node);
    getattr.extend_from_slice(&[0; 16]);
    let (error, _) = fuse(&mut t, &getattr);
    assert_ne!(error, 0, "the removed file's inode still answers");
}
