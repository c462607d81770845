//! The transport's snapshot state: a device restored from it into a fresh function over a
//! copy of guest memory goes on serving its rings, and state that does not fit the device
//! is refused.

mod harness;

use harness::vring::Buf;
use harness::{Driver, Setup, MEM_SIZE};
use virtio::rng::Rng;
use virtio::{DeviceState, StateError, VirtioPciState};
use vm_memory::{Bytes, GuestAddress};

fn used_rng() -> Driver {
    let mut d = Driver::plug(Box::new(Rng::new()));
    d.init(Setup::default());
    let a = d.alloc(64, 0);
    let head = d.queues[0].chain(&d.mem, &[Buf::w(a, 64)]);
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    assert_eq!(d.queues[0].take_used(&d.mem), vec![(u32::from(head), 64)]);
    assert_eq!(d.msi.take(), vec![1]);
    d
}

fn state_of(d: &Driver) -> VirtioPciState {
    d.dev.lock().unwrap().with_frozen_state(|s| s)
}

#[test]
fn a_restored_device_goes_on_where_it_was() {
    let mut old = used_rng();
    let state = state_of(&old);
    assert_eq!(state.queues[0].next_avail, 1);

    let mut new = Driver::plug(Box::new(Rng::new()));
    let mut ram = vec![0u8; MEM_SIZE];
    old.mem.read_slice(&mut ram, GuestAddress(0)).unwrap();
    new.mem.write_slice(&ram, GuestAddress(0)).unwrap();
    new.dev.lock().unwrap().restore_registers(&state).unwrap();
    assert_eq!(state_of(&new), state);
    // The MSI-X routes are published again on restore: vector 1 (queue 0) unmasked.
    let routes = new.msi.routes.lock().unwrap().clone();
    assert!(
        routes.iter().any(|&(v, _, masked)| v == 1 && !masked),
        "{routes:?}"
    );

    // The driver side carries on with the same rings.
    new.queues = std::mem::take(&mut old.queues);
    new.caps = old.caps;
    new.bar = old.bar;
    let b = new.alloc(32, 0);
    let head = new.queues[0].chain(&new.mem, &[Buf::w(b, 32)]);
    new.queues[0].offer(&new.mem, head);
    new.kick(0);
    assert_eq!(
        new.queues[0].take_used(&new.mem),
        vec![(u32::from(head), 32)]
    );
    assert_eq!(new.msi.take(), vec![1]);
}

#[test]
fn state_that_does_not_fit_the_device_is_refused() {
    let d = used_rng();
    let good = state_of(&d);
    let restore = |s: &VirtioPciState| {
        Driver::plug(Box::new(Rng::new()))
            .dev
            .lock()
            .unwrap()
            .restore_registers(s)
    };
    let refused = |s: &VirtioPciState, reason: &str| {
        let err = restore(s).unwrap_err().to_string();
        assert!(err.contains(reason), "{err} (expected: {reason})");
        err
    };
    let mut s = good.clone();
    s.version = 7;
    refused(&s, "version 7");
    let mut s = good.clone();
    s.device_type = 2;
    assert!(matches!(
        restore(&s),
        Err(StateError::DeviceType {
            found: 2,
            expected: 4
        })
    ));
    let mut s = good.clone();
    s.device = DeviceState::Console(virtio::console::ConsoleState {
        version: 1,
        cols: 80,
        rows: 25,
        input: vec![],
    });
    refused(&s, "device type 3");
    let mut s = good.clone();
    s.queues.push(s.queues[0].clone());
    assert!(matches!(restore(&s), Err(StateError::QueueCount { .. })));
    let mut s = good.clone();
    s.queues[0].size = u16::MAX;
    refused(&s, "queue 0: size 65535 above the maximum");
    let mut s = good.clone();
    s.queues[0].size = 3;
    refused(&s, "not a power of two");
    let mut s = good.clone();
    s.queues[0].desc = u64::MAX - 8;
    refused(&s, "queue 0: ");
    let mut s = good.clone();
    s.queues[0].driver = MEM_SIZE as u64 + 0x1000;
    refused(&s, "queue 0: ");
    let mut s = good.clone();
    s.driver_features |= 1 << 40;
    assert!(matches!(restore(&s), Err(StateError::Features(_))));
    let mut s = good.clone();
    s.config.regs.truncate(10);
    assert!(matches!(restore(&s), Err(StateError::Config)));
    let mut s = good.clone();
    s.interrupt.msix.entries.pop();
    assert!(matches!(restore(&s), Err(StateError::Interrupt)));
    let mut s = good;
    s.interrupt.config_vector = 77;
    assert!(matches!(restore(&s), Err(StateError::Interrupt)));
}
