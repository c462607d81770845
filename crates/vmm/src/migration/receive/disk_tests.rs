//! `--copy-storage` streams: the disks go into the receiver's own images, checked; a stream
//! that does not match how the receiver takes its disks is refused.

use super::*;
use crate::migration::wire::{
    write_disk_data, write_disk_zero, write_disks, write_frame, write_memory, write_preamble,
};
use crate::snapshot::SavedDisk;
use block::DiskImage;

const DISK: u64 = 1 << 20;

/// The sample machine with `disks` disks.
fn machine(disks: usize) -> MachineState {
    let mut machine = crate::snapshot::sample_state().machine;
    machine.disks = (0..disks)
        .map(|i| SavedDisk {
            path: format!("/sender/disk{i}.raw").into(),
            read_only: false,
            id: None,
            format: Some("raw".into()),
        })
        .collect();
    machine
}

/// Preamble and machine, then `frames` writes the rest.
fn stream(machine: &MachineState, frames: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(
        &mut out,
        Kind::Machine,
        &serde_json::to_vec(machine).unwrap(),
    )
    .unwrap();
    frames(&mut out);
    out
}

/// A raw image of `size` bytes full of 0xff.
fn image(dir: &std::path::Path, name: &str, size: u64, read_only: bool) -> Box<dyn DiskImage> {
    let path = dir.join(name);
    if !path.exists() {
        std::fs::write(&path, vec![0xff; size as usize]).unwrap();
    }
    let opts = block::OpenOptions {
        read_only,
        format: Some(block::Format::Raw),
        allow_external_backing: false,
    };
    block::open(&path, &opts).unwrap()
}

/// The error receiving `bytes` fails with, its disks written into what `open` gives.
fn receive_into(bytes: &[u8], open: crate::migration::OpenTargets) -> MigrationError {
    match receive(
        &mut std::io::Cursor::new(bytes),
        1 << 30,
        Storage::Copied(open),
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

/// Receives `bytes` into `count` images of `size` bytes in `dir`.
fn copied(dir: &std::path::Path, bytes: &[u8], count: usize, size: u64) -> MigrationError {
    receive_into(bytes, &mut |m: &MachineState| {
        assert!(!m.disks.is_empty());
        Ok((0..count)
            .map(|i| image(dir, &format!("d{i}"), size, false))
            .collect())
    })
}

#[test]
fn disk_frames_are_written_into_the_receivers_images_at_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = stream(&machine(1), |out| {
        write_disks(out, &[DISK]).unwrap();
        write_disk_data(out, 0, 4096, &[7; 512]).unwrap();
        write_memory(out, 0x1000, &[1; 8]).unwrap();
        write_disk_zero(out, 0, 0, 512).unwrap();
        write_disk_zero(out, 0, 8192, 0).unwrap();
        // The stream breaks off here: what arrived is written, the receive fails.
    });
    let err = copied(dir.path(), &bytes, 1, DISK);
    assert!(matches!(err, MigrationError::Wire(_)), "{err}");
    let data = std::fs::read(dir.path().join("d0")).unwrap();
    assert_eq!(&data[..512], &[0; 512]);
    assert_eq!(&data[512..4096], &[0xff; 3584][..]);
    assert_eq!(&data[4096..4608], &[7; 512]);
    assert_eq!(&data[4608..], &vec![0xff; DISK as usize - 4608][..]);
}

#[test]
fn disk_frames_outside_the_disks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    type Frame = Box<dyn Fn(&mut Vec<u8>)>;
    let frames: Vec<Frame> = vec![
        Box::new(|o| write_disk_data(o, 0, DISK - 100, &[1; 512]).unwrap()),
        Box::new(|o| write_disk_data(o, 1, 0, &[1; 512]).unwrap()),
        Box::new(|o| write_disk_data(o, 0, u64::MAX - 10, &[1; 512]).unwrap()),
        Box::new(|o| write_disk_zero(o, 0, DISK, 1).unwrap()),
        Box::new(|o| write_disk_zero(o, 0, 1, u64::MAX).unwrap()),
        Box::new(|o| write_disk_zero(o, u32::MAX, 0, 1).unwrap()),
    ];
    for (i, frame) in frames.iter().enumerate() {
        let bytes = stream(&machine(1), |out| {
            write_disks(out, &[DISK]).unwrap();
            frame(out);
        });
        let err = copied(dir.path(), &bytes, 1, DISK);
        assert!(
            matches!(err, MigrationError::DiskRange { .. }),
            "frame {i}: {err}"
        );
    }
    assert!(std::fs::read(dir.path().join("d0"))
        .unwrap()
        .iter()
        .all(|&b| b == 0xff));
}

#[test]
fn targets_that_do_not_fit_the_arriving_disks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Sizes differ.
    let bytes = stream(&machine(1), |out| write_disks(out, &[2 * DISK]).unwrap());
    let err = copied(dir.path(), &bytes, 1, DISK);
    assert!(
        err.to_string().contains("create it with that size"),
        "{err}"
    );
    // The sender lists another number of disks than its machine has.
    let bytes = stream(&machine(1), |out| write_disks(out, &[DISK, DISK]).unwrap());
    let err = copied(dir.path(), &bytes, 1, DISK);
    assert!(matches!(err, MigrationError::DiskCopy(_)), "{err}");
    // The receiver has fewer images than disks arrive.
    let bytes = stream(&machine(2), |out| write_disks(out, &[DISK, DISK]).unwrap());
    let err = copied(dir.path(), &bytes, 1, DISK);
    assert!(err.to_string().contains("2 disks arrive"), "{err}");
    // A read-only target.
    let one_disk = stream(&machine(1), |out| write_disks(out, &[DISK]).unwrap());
    let err = receive_into(&one_disk, &mut |_| {
        Ok(vec![image(dir.path(), "ro", DISK, true)])
    });
    assert!(err.to_string().contains("read-only"), "{err}");
    // The receiver cannot open its images: its reason is the error.
    let err = receive_into(&one_disk, &mut |_| Err("no such file".into()));
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[test]
fn sender_and_receiver_must_agree_on_copying_the_disks() {
    let dir = tempfile::tempdir().unwrap();
    // The sender copies, the receiver expects shared storage.
    let bytes = stream(&machine(1), |out| write_disks(out, &[DISK]).unwrap());
    let err = receive(&mut std::io::Cursor::new(&bytes), 1 << 30, Storage::Shared)
        .err()
        .unwrap();
    assert!(matches!(err, MigrationError::UnexpectedDisks), "{err}");
    // The receiver waits for disks, the sender sends memory.
    let bytes = stream(&machine(1), |out| write_memory(out, 0, &[1]).unwrap());
    let err = copied(dir.path(), &bytes, 1, DISK);
    assert!(matches!(err, MigrationError::NoDisks), "{err}");
    // Disk frames without a Disks frame first, to a receiver on shared storage.
    let bytes = stream(&machine(1), |out| {
        write_memory(out, 0, &[1]).unwrap();
        write_disk_data(out, 0, 0, &[1; 512]).unwrap();
    });
    let err = receive(&mut std::io::Cursor::new(&bytes), 1 << 30, Storage::Shared)
        .err()
        .unwrap();
    assert!(matches!(err, MigrationError::Wire(_)), "{err}");
    // A second Disks frame later in a copying stream.
    let bytes = stream(&machine(1), |out| {
        write_disks(out, &[DISK]).unwrap();
        write_disks(out, &[DISK]).unwrap();
    });
    let err = copied(dir.path(), &bytes, 1, DISK);
    assert!(matches!(err, MigrationError::Wire(_)), "{err}");
}
