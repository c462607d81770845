//! virtio-net in a VM snapshot, through the PCI transport: the device model's state (MAC,
//! link, receive chains it had taken) is saved with the transport's, a NIC restored from
//! it over a new backend saves the same state again, and it fills the receive chain it had
//! kept with the first frame of the new backend.

mod harness;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use harness::vring::Buf;
use harness::{Driver, Setup, MEM_SIZE};
use virtio::net::{Net, NetArgs, NetBackend, NET_HDR_LEN};
use virtio::{DeviceState, Persist, VirtioPciState};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

struct Frames {
    to_guest: Arc<Mutex<VecDeque<Vec<u8>>>>,
    fd: EventFd,
}

impl NetBackend for Frames {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let Some(frame) = self.to_guest.lock().unwrap().pop_front() else {
            return Ok(None);
        };
        buf[..frame.len()].copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
    fn send(&mut self, _frame: &[u8]) -> std::io::Result<bool> {
        Ok(true)
    }
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn backend(frames: &[Vec<u8>]) -> Box<dyn NetBackend> {
    Box::new(Frames {
        to_guest: Arc::new(Mutex::new(frames.iter().cloned().collect())),
        fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    })
}

fn state_of(d: &Driver) -> VirtioPciState {
    d.dev.lock().unwrap().with_frozen_state(|s| s)
}

#[test]
fn a_restored_nic_saves_the_same_state_and_fills_the_chain_it_had_kept() {
    // A 3000-byte frame does not fit the one 2048-byte buffer offered: the device keeps
    // that chain and waits for more.
    let (net, _) = Net::new(backend(&[vec![0xab; 3000]]), MAC);
    let mut old = Driver::plug(Box::new(net));
    old.init(Setup::default());
    let buf = old.alloc(2048, 0);
    let head = old.queues[0].chain(&old.mem, &[Buf::w(buf, 2048)]);
    old.queues[0].offer(&old.mem, head);
    old.kick(0);
    assert!(old.queues[0].take_used(&old.mem).is_empty());
    let state = state_of(&old);
    let DeviceState::Net(net_state) = &state.device else {
        panic!("{:?}", state.device)
    };
    assert_eq!(net_state.rx_heads, vec![head]);
    assert_eq!(net_state.mac, MAC);

    // Restored over a copy of guest memory, with a new backend holding a small frame.
    let restored = Net::restore(
        NetArgs {
            backend: backend(&[vec![0xcd; 100]]),
            mac: MAC,
        },
        net_state,
    )
    .unwrap();
    let mut new = Driver::plug(Box::new(restored));
    let mut ram = vec![0u8; MEM_SIZE];
    old.mem.read_slice(&mut ram, GuestAddress(0)).unwrap();
    new.mem.write_slice(&ram, GuestAddress(0)).unwrap();
    new.dev.lock().unwrap().restore_registers(&state).unwrap();
    assert_eq!(state_of(&new), state, "save -> restore -> save");
    let json = serde_json::to_vec(&state).unwrap();
    assert_eq!(serde_json::to_vec(&state_of(&new)).unwrap(), json);

    new.queues = std::mem::take(&mut old.queues);
    new.caps = old.caps;
    new.bar = old.bar;
    new.kick(0);
    assert_eq!(
        new.queues[0].take_used(&new.mem),
        vec![(u32::from(head), (NET_HDR_LEN + 100) as u32)]
    );
    let mut got = [0u8; 100];
    new.mem
        .read_slice(&mut got, GuestAddress(buf + NET_HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, [0xcd; 100]);
}

#[test]
fn a_nic_state_needs_the_configured_mac_and_a_net_device() {
    let (net, _) = Net::new(backend(&[]), MAC);
    let mut d = Driver::plug(Box::new(net));
    d.init(Setup::default());
    let state = state_of(&d);
    let DeviceState::Net(net_state) = &state.device else {
        panic!()
    };
    let other_mac = [0x52, 0x54, 0, 0, 0, 9];
    let err = Net::restore(
        NetArgs {
            backend: backend(&[]),
            mac: other_mac,
        },
        net_state,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("MAC"), "{err}");
    // The same transport state cannot be taken by another kind of device.
    let rng = Driver::plug(Box::new(virtio::rng::Rng::new()));
    let err = rng
        .dev
        .lock()
        .unwrap()
        .restore_registers(&state)
        .unwrap_err();
    assert!(err.to_string().contains("device type"), "{err}");
}
