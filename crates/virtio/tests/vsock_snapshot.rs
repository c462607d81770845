//! virtio-vsock in a VM snapshot, through the PCI transport: the device's state (CID and
//! the receive chain it held) is saved with the transport's; a device restored from it
//! saves the same state, sends the guest one transport-reset event in its first event
//! buffer, and fills the receive chain it had held once a host connection brings data.

mod harness;

use std::io::Write;
use std::os::unix::net::UnixStream;

use harness::vring::Buf;
use harness::{Driver, Setup, MEM_SIZE};
use virtio::vsock::{Header, Vsock, VsockArgs, EVENT_QUEUE, HDR_LEN, HOST_CID, RX_QUEUE, TX_QUEUE};
use virtio::{DeviceState, Persist, VirtioPciState};
use vm_memory::{Bytes, GuestAddress};

const CID: u64 = 5;

fn state_of(d: &Driver) -> VirtioPciState {
    d.dev.lock().unwrap().with_frozen_state(|s| s)
}

#[test]
fn a_restored_vsock_resets_the_guests_connections_and_keeps_its_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mut old = Driver::plug(Box::new(Vsock::new(CID, &uds).unwrap()));
    old.init(Setup::default());
    // One receive buffer (the device takes it only when it has a packet) and one event
    // buffer, as Linux's driver posts them.
    let rx = old.alloc(4096, 0);
    let rx_head = old.queues[RX_QUEUE].chain(&old.mem, &[Buf::w(rx, 4096)]);
    old.queues[RX_QUEUE].offer(&old.mem, rx_head);
    let ev = old.alloc(4, 0xff);
    let ev_head = old.queues[EVENT_QUEUE].chain(&old.mem, &[Buf::w(ev, 4)]);
    old.queues[EVENT_QUEUE].offer(&old.mem, ev_head);
    old.kick(RX_QUEUE as u16);
    old.kick(EVENT_QUEUE as u16);
    assert!(
        old.queues[EVENT_QUEUE].take_used(&old.mem).is_empty(),
        "no event at boot"
    );

    let state = state_of(&old);
    let DeviceState::Vsock(vsock_state) = &state.device else {
        panic!("{:?}", state.device)
    };
    assert_eq!(vsock_state.cid, CID);

    // Restored as another process would (the old device still holds its socket here, so
    // the new one listens at another path).
    let uds = dir.path().join("restored.sock");
    let restored = Vsock::restore(
        VsockArgs {
            cid: CID,
            uds: uds.clone(),
        },
        vsock_state,
    )
    .unwrap();
    let mut new = Driver::plug(Box::new(restored));
    let mut ram = vec![0u8; MEM_SIZE];
    old.mem.read_slice(&mut ram, GuestAddress(0)).unwrap();
    new.mem.write_slice(&ram, GuestAddress(0)).unwrap();
    new.dev.lock().unwrap().restore_registers(&state).unwrap();
    assert_eq!(state_of(&new), state, "save -> restore -> save");
    new.queues = std::mem::take(&mut old.queues);
    new.caps = old.caps;
    new.bar = old.bar;

    // The I/O thread runs every queue when the device's fd is readable (it is, at once).
    for q in [RX_QUEUE, TX_QUEUE, EVENT_QUEUE] {
        new.kick(q as u16);
    }
    assert_eq!(
        new.queues[EVENT_QUEUE].take_used(&new.mem),
        vec![(u32::from(ev_head), 4)]
    );
    assert_eq!(new.read_mem(ev, 4), 0u32.to_le_bytes(), "TRANSPORT_RESET");
    // Only once.
    let ev2_head = new.queues[EVENT_QUEUE].chain(&new.mem, &[Buf::w(ev, 4)]);
    new.queues[EVENT_QUEUE].offer(&new.mem, ev2_head);
    new.kick(EVENT_QUEUE as u16);
    assert!(new.queues[EVENT_QUEUE].take_used(&new.mem).is_empty());

    // A host client connects to guest port 1234: the request goes out in the receive
    // buffer posted before the snapshot.
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    let mut used = Vec::new();
    for _ in 0..200 {
        new.kick(RX_QUEUE as u16);
        used = new.queues[RX_QUEUE].take_used(&new.mem);
        if !used.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(used, vec![(u32::from(rx_head), HDR_LEN as u32)]);
    let bytes: [u8; HDR_LEN] = new.read_mem(rx, HDR_LEN).try_into().unwrap();
    let hdr = Header::from_bytes(&bytes);
    assert_eq!(
        (hdr.src_cid, hdr.dst_cid, hdr.dst_port),
        (HOST_CID, CID, 1234)
    );
}

#[test]
fn a_vsock_state_needs_the_configured_cid() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Vsock::new(CID, &dir.path().join("a.sock")).unwrap();
    let state = dev.save();
    let err = Vsock::restore(
        VsockArgs {
            cid: CID + 1,
            uds: dir.path().join("b.sock"),
        },
        &state,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("guest CID"), "{err}");
}
