//! virtio-net through the PCI transport over an in-memory backend: configuration, transmit,
//! merged and single receive buffers, backpressure both ways, link status, hostile chains.

mod harness;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use harness::vring::{Buf, F_NEXT, F_WRITE};
use harness::{Driver, Setup};
use virtio::net::{
    GuestOffloads, LinkHandle, Net, NetBackend, F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_HOST_TSO4,
    F_MAC, F_MRG_RXBUF, F_MTU, F_STATUS, NET_HDR_LEN, OFFLOAD_FEATURES, RX_QUEUE, TX_QUEUE,
};
use virtio::status;
use vmm_sys_util::eventfd::EventFd;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Default)]
struct Wire {
    to_guest: VecDeque<Vec<u8>>,
    from_guest: Vec<Vec<u8>>,
    full: bool,
}

struct MemBackend {
    wire: Arc<Mutex<Wire>>,
    fd: EventFd,
    mtu: Option<u16>,
}

impl NetBackend for MemBackend {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let Some(frame) = self.wire.lock().unwrap().to_guest.pop_front() else {
            return Ok(None);
        };
        buf[..frame.len()].copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        let mut wire = self.wire.lock().unwrap();
        if wire.full {
            return Ok(false);
        }
        wire.from_guest.push(frame.to_vec());
        Ok(true)
    }
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    fn mtu(&self) -> Option<u16> {
        self.mtu
    }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn plug() -> (Driver, Arc<Mutex<Wire>>, LinkHandle) {
    plug_mtu(None)
}

fn plug_mtu(mtu: Option<u16>) -> (Driver, Arc<Mutex<Wire>>, LinkHandle) {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let backend = MemBackend {
        wire: wire.clone(),
        fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        mtu,
    };
    let (net, link) = Net::new(Box::new(backend), MAC);
    (Driver::plug(Box::new(net)), wire, link)
}

fn net(setup: Setup) -> (Driver, Arc<Mutex<Wire>>, LinkHandle) {
    let (mut d, wire, link) = plug();
    d.init(setup);
    (d, wire, link)
}

/// A device whose driver did not take VIRTIO_NET_F_MRG_RXBUF.
fn net_single_buffers() -> (Driver, Arc<Mutex<Wire>>) {
    let (mut d, wire, _) = plug();
    d.probe();
    let wanted = d.device_features()
        & !(F_MRG_RXBUF | virtio::features::RING_EVENT_IDX | virtio::features::RING_INDIRECT_DESC);
    assert!(d.negotiate(wanted));
    d.setup_queues(Setup::default());
    (d, wire)
}

fn post_rx(d: &mut Driver, len: u32) -> (u16, u64) {
    let a = d.alloc(len as usize, 0xcc);
    let head = d.queues[RX_QUEUE].chain(&d.mem, &[Buf::w(a, len)]);
    d.queues[RX_QUEUE].offer(&d.mem, head);
    (head, a)
}

fn send_tx(d: &mut Driver, payload: &[u8]) -> u16 {
    let h = d.alloc(NET_HDR_LEN, 0);
    let a = d.alloc(payload.len(), 0);
    d.mem_write(a, payload);
    let head = d.queues[TX_QUEUE].chain(
        &d.mem,
        &[
            Buf::r(h, NET_HDR_LEN as u32),
            Buf::r(a, payload.len() as u32),
        ],
    );
    d.queues[TX_QUEUE].offer(&d.mem, head);
    head
}

#[test]
fn identity_mac_and_link_in_config() {
    let (mut d, _, link) = plug();
    assert_eq!(d.probe(), (0x1af4, 0x1041));
    let class = d.cfg_read32(8) >> 16;
    assert_eq!(class, 0x0200, "ethernet controller");
    let features = d.device_features();
    assert_eq!(
        features & (F_MAC | F_STATUS | F_MRG_RXBUF),
        F_MAC | F_STATUS | F_MRG_RXBUF
    );
    d.init(Setup::default());
    let mut cfg = [0u8; 10];
    d.device_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(&cfg[6..], &[1, 0, 1, 0], "link up, one queue pair");
    link.set_up(false);
    d.processor.signal_config_change();
    assert_eq!(d.msi.take(), vec![0]);
    d.device_config(6, &mut cfg[..2]);
    assert_eq!(&cfg[..2], &[0, 0]);
}

#[test]
fn a_backend_mtu_is_offered_and_carried_both_ways() {
    // An MTU below IPv6's minimum is not offered at all; none means Ethernet's.
    for bad in [None, Some(576), Some(1279)] {
        let (mut d, _, _) = plug_mtu(bad);
        d.probe();
        assert_eq!(d.device_features() & F_MTU, 0, "{bad:?}");
    }
    let (mut d, wire, _) = plug_mtu(Some(65520));
    d.probe();
    assert_eq!(d.device_features() & F_MTU, F_MTU);
    d.init(Setup::default());
    let mut mtu = [0u8; 2];
    d.device_config(10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 65520);
    // A 65534-byte frame (MTU + Ethernet header) out and back in, over 4 KiB buffers.
    let big = frame(65534, 9);
    let head = send_tx(&mut d, &big);
    d.kick(TX_QUEUE as u16);
    assert_eq!(
        d.queues[TX_QUEUE].take_used(&d.mem),
        vec![(u32::from(head), 0)]
    );
    assert_eq!(wire.lock().unwrap().from_guest, vec![big.clone()]);
    let posted: Vec<(u16, u64)> = (0..17).map(|_| post_rx(&mut d, 4096)).collect();
    wire.lock().unwrap().to_guest.push_back(big.clone());
    d.kick(RX_QUEUE as u16);
    let used = d.queues[RX_QUEUE].take_used(&d.mem);
    assert_eq!(
        used.len(),
        17,
        "65546 bytes with the header take 17 buffers"
    );
    let mut got = Vec::new();
    for ((head, addr), (used_head, len)) in posted.iter().zip(&used) {
        assert_eq!(u32::from(*head), *used_head);
        got.extend(d.read_mem(*addr, *len as usize));
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 17, "num_buffers");
    assert_eq!(&got[NET_HDR_LEN..], &big[..]);
}

#[test]
fn transmit_strips_the_header() {
    let (mut d, wire, _) = net(Setup::default());
    let payload = frame(1514, 1);
    let head = send_tx(&mut d, &payload);
    d.kick(TX_QUEUE as u16);
    assert_eq!(
        d.queues[TX_QUEUE].take_used(&d.mem),
        vec![(u32::from(head), 0)]
    );
    assert_eq!(wire.lock().unwrap().from_guest, vec![payload]);
    assert_eq!(d.msi.take(), vec![2]);
}

#[test]
fn merged_receive_buffers() {
    let (mut d, wire, _) = net(Setup {
        event_idx: true,
        ..Setup::default()
    });
    let bufs: Vec<(u16, u64)> = (0..4).map(|_| post_rx(&mut d, 1526)).collect();
    d.kick(RX_QUEUE as u16);
    assert!(
        d.queues[RX_QUEUE].take_used(&d.mem).is_empty(),
        "nothing to receive yet"
    );
    let big = frame(3000, 9);
    let small = frame(60, 3);
    wire.lock()
        .unwrap()
        .to_guest
        .extend([big.clone(), small.clone()]);
    d.processor.process_queue(RX_QUEUE).unwrap();
    let used = d.queues[RX_QUEUE].take_used(&d.mem);
    let expect = vec![
        (u32::from(bufs[0].0), 1526),
        (u32::from(bufs[1].0), 3012 - 1526),
        (u32::from(bufs[2].0), 72),
    ];
    assert_eq!(used, expect);
    let first = d.read_mem(bufs[0].1, 1526);
    assert_eq!(&first[..10], &[0; 10]);
    assert_eq!(u16::from_le_bytes([first[10], first[11]]), 2, "num_buffers");
    let mut got = first[12..].to_vec();
    got.extend(d.read_mem(bufs[1].1, 3012 - 1526));
    assert_eq!(got, big);
    let third = d.read_mem(bufs[2].1, 72);
    assert_eq!(u16::from_le_bytes([third[10], third[11]]), 1);
    assert_eq!(&third[12..], &small[..]);
    assert_eq!(d.msi.take(), vec![1]);
}

#[test]
fn frame_waits_for_enough_buffers() {
    let (mut d, wire, _) = net(Setup::default());
    let big = frame(4000, 5);
    wire.lock().unwrap().to_guest.push_back(big.clone());
    d.processor.process_queue(RX_QUEUE).unwrap();
    let (h0, a0) = post_rx(&mut d, 2048);
    d.kick(RX_QUEUE as u16);
    assert!(
        d.queues[RX_QUEUE].take_used(&d.mem).is_empty(),
        "one buffer is not enough"
    );
    let (h1, a1) = post_rx(&mut d, 2048);
    d.kick(RX_QUEUE as u16);
    assert_eq!(
        d.queues[RX_QUEUE].take_used(&d.mem),
        vec![(u32::from(h0), 2048), (u32::from(h1), 4012 - 2048)]
    );
    let mut got = d.read_mem(a0, 2048)[12..].to_vec();
    got.extend(d.read_mem(a1, 4012 - 2048));
    assert_eq!(got, big);
}

#[test]
fn single_buffers_drop_frames_that_do_not_fit() {
    let (mut d, wire) = net_single_buffers();
    let (head, a) = post_rx(&mut d, 1526);
    let too_big = frame(2000, 1);
    let fits = frame(1514, 2);
    wire.lock()
        .unwrap()
        .to_guest
        .extend([too_big, fits.clone()]);
    d.kick(RX_QUEUE as u16);
    assert_eq!(
        d.queues[RX_QUEUE].take_used(&d.mem),
        vec![(u32::from(head), 1526)]
    );
    let got = d.read_mem(a, 1526);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
    assert_eq!(&got[12..], &fits[..]);
}

#[test]
fn transmit_resumes_when_the_backend_drains() {
    let (mut d, wire, _) = net(Setup::default());
    wire.lock().unwrap().full = true;
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(100 + i, i as u8)).collect();
    for f in &frames {
        send_tx(&mut d, f);
    }
    d.kick(TX_QUEUE as u16);
    assert_eq!(
        d.queues[TX_QUEUE].take_used(&d.mem).len(),
        1,
        "the first frame is held"
    );
    assert!(wire.lock().unwrap().from_guest.is_empty());
    wire.lock().unwrap().full = false;
    // The I/O thread saw the backend's fd turn writable.
    d.processor.process_queue(TX_QUEUE).unwrap();
    assert_eq!(d.queues[TX_QUEUE].take_used(&d.mem).len(), 2);
    assert_eq!(wire.lock().unwrap().from_guest, frames);
}

#[test]
fn hostile_transmit_chains_are_dropped() {
    let (mut d, wire, _) = net(Setup::default());
    // A writable buffer in a transmit chain.
    let a = d.alloc(100, 0);
    let head = d.queues[TX_QUEUE].chain(&d.mem, &[Buf::r(a, 50), Buf::w(a + 50, 50)]);
    d.queues[TX_QUEUE].offer(&d.mem, head);
    // Shorter than header + Ethernet header.
    let head2 = d.queues[TX_QUEUE].chain(&d.mem, &[Buf::r(a, 20)]);
    d.queues[TX_QUEUE].offer(&d.mem, head2);
    // Larger than any frame: many descriptors over the same memory.
    let big = d.alloc(60_000, 0);
    let head3 = d.queues[TX_QUEUE].chain(&d.mem, &[Buf::r(big, 60_000), Buf::r(big, 60_000)]);
    d.queues[TX_QUEUE].offer(&d.mem, head3);
    // A descriptor loop.
    let q = &d.queues[TX_QUEUE];
    q.write_desc(&d.mem, q.desc, 10, a, 16, F_NEXT, 11);
    q.write_desc(&d.mem, q.desc, 11, a, 16, F_NEXT, 10);
    d.queues[TX_QUEUE].offer(&d.mem, 10);
    d.kick(TX_QUEUE as u16);
    let used = d.queues[TX_QUEUE].take_used(&d.mem);
    assert_eq!(used.len(), 4);
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert!(wire.lock().unwrap().from_guest.is_empty());
    assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    // Still transmits.
    let ok = frame(64, 4);
    send_tx(&mut d, &ok);
    d.kick(TX_QUEUE as u16);
    assert_eq!(wire.lock().unwrap().from_guest, vec![ok]);
}

#[test]
fn hostile_receive_chains_are_returned_unused() {
    let (mut d, wire, _) = net(Setup::default());
    let a = d.alloc(2048, 0xcc);
    // Readable buffer in a receive chain.
    let bad = d.queues[RX_QUEUE].chain(&d.mem, &[Buf::r(a, 2048)]);
    d.queues[RX_QUEUE].offer(&d.mem, bad);
    // Write-flagged descriptor pointing past guest memory.
    let q = &d.queues[RX_QUEUE];
    q.write_desc(
        &d.mem,
        q.desc,
        20,
        harness::MEM_SIZE as u64 - 16,
        4096,
        F_WRITE,
        0,
    );
    d.queues[RX_QUEUE].offer(&d.mem, 20);
    let (good, g) = post_rx(&mut d, 2048);
    wire.lock().unwrap().to_guest.push_back(frame(100, 7));
    d.kick(RX_QUEUE as u16);
    assert_eq!(
        d.queues[RX_QUEUE].take_used(&d.mem),
        vec![(u32::from(bad), 0), (20, 0), (u32::from(good), 112)]
    );
    assert_eq!(d.read_mem(a, 4), vec![0xcc; 4], "readable buffer untouched");
    assert_eq!(&d.read_mem(g, 112)[12..], &frame(100, 7)[..]);
}

#[test]
fn a_tiny_ring_cannot_wedge_receive() {
    // A mergeable frame larger than every buffer the ring can hold is dropped, and the
    // buffers serve the next frame.
    let (mut d, wire, _) = net(Setup {
        queue_size: Some(4),
        ..Setup::default()
    });
    let bufs: Vec<(u16, u64)> = (0..4).map(|_| post_rx(&mut d, 256)).collect();
    wire.lock()
        .unwrap()
        .to_guest
        .extend([frame(9000, 1), frame(200, 2)]);
    d.kick(RX_QUEUE as u16);
    assert_eq!(
        d.queues[RX_QUEUE].take_used(&d.mem),
        vec![(u32::from(bufs[0].0), 212)]
    );
}

#[test]
fn reset_forgets_kept_buffers() {
    let (mut d, wire, _) = net(Setup::default());
    post_rx(&mut d, 1000);
    wire.lock().unwrap().to_guest.push_back(frame(3000, 1));
    d.kick(RX_QUEUE as u16);
    d.init(Setup::default());
    let (head, a) = post_rx(&mut d, 2048);
    wire.lock().unwrap().to_guest.push_back(frame(64, 2));
    d.kick(RX_QUEUE as u16);
    assert_eq!(
        d.queues[RX_QUEUE].take_used(&d.mem),
        vec![(u32::from(head), 76)]
    );
    assert_eq!(&d.read_mem(a, 76)[12..], &frame(64, 2)[..]);
}

/// A backend with a virtio-net header (as a tap with IFF_VNET_HDR): records headers and
/// the offloads the guest accepted.
#[derive(Default)]
struct HeaderWire {
    to_guest: VecDeque<([u8; NET_HDR_LEN], Vec<u8>)>,
    from_guest: Vec<([u8; NET_HDR_LEN], Vec<u8>)>,
    offloads: Vec<GuestOffloads>,
}

struct HeaderBackend {
    wire: Arc<Mutex<HeaderWire>>,
    fd: EventFd,
}

impl NetBackend for HeaderBackend {
    fn recv(&mut self, _buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        unreachable!("the device asks a header backend for headers")
    }
    fn send(&mut self, _frame: &[u8]) -> std::io::Result<bool> {
        unreachable!("the device gives a header backend headers")
    }
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    fn offloads(&self) -> bool {
        true
    }
    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> std::io::Result<Option<usize>> {
        let Some((h, frame)) = self.wire.lock().unwrap().to_guest.pop_front() else {
            return Ok(None);
        };
        *header = h;
        buf[..frame.len()].copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
    fn send_with_header(
        &mut self,
        header: &[u8; NET_HDR_LEN],
        frame: &[u8],
    ) -> std::io::Result<bool> {
        self.wire
            .lock()
            .unwrap()
            .from_guest
            .push((*header, frame.to_vec()));
        Ok(true)
    }
    fn set_guest_offloads(&mut self, offloads: GuestOffloads) -> std::io::Result<()> {
        self.wire.lock().unwrap().offloads.push(offloads);
        Ok(())
    }
}

/// A header backend's device, the driver taking `features` (plus VERSION_1 and MRG_RXBUF).
fn offload_net(features: u64) -> (Driver, Arc<Mutex<HeaderWire>>) {
    let wire = Arc::new(Mutex::new(HeaderWire::default()));
    let backend = HeaderBackend {
        wire: wire.clone(),
        fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    };
    let (net, _) = Net::new(Box::new(backend), MAC);
    let mut d = Driver::plug(Box::new(net));
    d.probe();
    assert_eq!(d.device_features() & OFFLOAD_FEATURES, OFFLOAD_FEATURES);
    let wanted = features | F_MRG_RXBUF | (d.device_features() & (1 << 32));
    assert!(d.negotiate(wanted));
    d.setup_queues(Setup::default());
    (d, wire)
}

/// A header: flags, gso type, gso size, checksum start and offset.
fn header(flags: u8, gso: u8, gso_size: u16, start: u16, offset: u16) -> [u8; NET_HDR_LEN] {
    let mut h = [0u8; NET_HDR_LEN];
    h[0] = flags;
    h[1] = gso;
    h[2..4].copy_from_slice(&54u16.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&start.to_le_bytes());
    h[8..10].copy_from_slice(&offset.to_le_bytes());
    h
}

fn send_tx_with(d: &mut Driver, h: &[u8; NET_HDR_LEN], payload: &[u8]) {
    let ha = d.alloc(NET_HDR_LEN, 0);
    d.mem_write(ha, h);
    let a = d.alloc(payload.len(), 0);
    d.mem_write(a, payload);
    let head = d.queues[TX_QUEUE].chain(
        &d.mem,
        &[
            Buf::r(ha, NET_HDR_LEN as u32),
            Buf::r(a, payload.len() as u32),
        ],
    );
    d.queues[TX_QUEUE].offer(&d.mem, head);
    d.kick(TX_QUEUE as u16);
}

#[test]
fn offloads_pass_headers_the_driver_negotiated() {
    let all = F_CSUM | F_HOST_TSO4 | F_GUEST_CSUM | F_GUEST_TSO4;
    let (mut d, wire) = offload_net(all);
    assert_eq!(
        wire.lock().unwrap().offloads.last(),
        Some(&GuestOffloads {
            csum: true,
            tso4: true,
            tso6: false,
            ecn: false
        }),
        "the backend learns what the guest accepts (after the reset's none)"
    );
    // A TSO frame with a partial checksum goes out with its header (num_buffers zeroed).
    let big = frame(20_000, 3);
    let mut h = header(1, 1, 1448, 34, 16);
    h[10] = 7;
    send_tx_with(&mut d, &h, &big);
    h[10] = 0;
    assert_eq!(wire.lock().unwrap().from_guest, vec![(h, big.clone())]);
    // One coming in keeps its header; num_buffers is the device's.
    let _posted: Vec<(u16, u64)> = (0..6).map(|_| post_rx(&mut d, 4096)).collect();
    let rx_h = header(1, 1, 1448, 34, 16);
    wire.lock().unwrap().to_guest.push_back((rx_h, big.clone()));
    d.kick(RX_QUEUE as u16);
    let used = d.queues[RX_QUEUE].take_used(&d.mem);
    assert_eq!(used.len(), 5);
    let first = d.read_mem(_posted[0].1, NET_HDR_LEN);
    assert_eq!(&first[..10], &rx_h[..10]);
    assert_eq!(u16::from_le_bytes([first[10], first[11]]), 5);
}

#[test]
fn headers_beyond_the_negotiated_offloads_are_refused() {
    // The driver took checksum offload only, no TSO either way.
    let (mut d, wire) = offload_net(F_CSUM | F_GUEST_CSUM);
    let payload = frame(1514, 4);
    for bad in [
        header(1, 1, 1448, 34, 16), // TSO not negotiated
        header(0, 0x81, 0, 0, 0),   // ECN without HOST_ECN (and without TSO)
        header(1, 0, 0, 1500, 16),  // checksum field past the frame's end
        header(4, 0, 0, 0, 0),      // unknown flag
        header(0, 3, 1448, 0, 0),   // UDP fragmentation offload, never offered
    ] {
        send_tx_with(&mut d, &bad, &payload);
    }
    assert!(wire.lock().unwrap().from_guest.is_empty());
    // A plain partial checksum is fine.
    let ok = header(1, 0, 0, 34, 16);
    send_tx_with(&mut d, &ok, &payload);
    assert_eq!(wire.lock().unwrap().from_guest.len(), 1);

    // Received GSO frames the guest did not accept are dropped, not delivered.
    post_rx(&mut d, 4096);
    wire.lock()
        .unwrap()
        .to_guest
        .push_back((header(1, 1, 1448, 34, 16), payload.clone()));
    d.kick(RX_QUEUE as u16);
    assert!(d.queues[RX_QUEUE].take_used(&d.mem).is_empty());
}

#[test]
fn without_guest_csum_data_valid_is_cleared() {
    let (mut d, wire) = offload_net(0);
    assert_eq!(
        wire.lock().unwrap().offloads.last(),
        Some(&GuestOffloads::default())
    );
    let (_, addr) = post_rx(&mut d, 4096);
    let payload = frame(100, 5);
    wire.lock()
        .unwrap()
        .to_guest
        .push_back((header(2, 0, 0, 0, 0), payload));
    d.kick(RX_QUEUE as u16);
    assert_eq!(d.queues[RX_QUEUE].take_used(&d.mem).len(), 1);
    assert_eq!(d.read_mem(addr, 1)[0], 0, "DATA_VALID only for GUEST_CSUM");
}

#[test]
fn rate_limited_frames_wait_both_ways_until_the_limit_allows() {
    use virtio::rate_limiter::{BucketConfig, Limits, RateLimiterHandle};
    let one_frame = Limits {
        bandwidth: None,
        ops: Some(BucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 1 << 40,
        }),
    };
    let rx = RateLimiterHandle::new(one_frame).unwrap();
    let tx = RateLimiterHandle::new(one_frame).unwrap();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let backend = MemBackend {
        wire: wire.clone(),
        fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        mtu: None,
    };
    let (net, _) = Net::new(Box::new(backend), MAC);
    let net = net.with_rate_limiters(Some(rx.clone()), Some(tx.clone()));
    let mut d = Driver::plug(Box::new(net));
    d.init(Setup::default());
    // Transmit: the first frame goes, the second waits in the device.
    let (a, b) = (frame(100, 1), frame(100, 2));
    send_tx(&mut d, &a);
    send_tx(&mut d, &b);
    d.kick(TX_QUEUE as u16);
    d.kick(TX_QUEUE as u16);
    assert_eq!(wire.lock().unwrap().from_guest, vec![a.clone()]);
    // Receive: the first frame is delivered, the second stays with the backend.
    let (c, e) = (frame(80, 3), frame(80, 4));
    wire.lock().unwrap().to_guest.extend([c.clone(), e.clone()]);
    post_rx(&mut d, 1526);
    post_rx(&mut d, 1526);
    d.kick(RX_QUEUE as u16);
    assert_eq!(d.queues[RX_QUEUE].take_used(&d.mem).len(), 1);
    // Lifting the limits (PATCH) lets both through when the queues run again (the
    // limiter's timer fires at once; the I/O thread would run every queue).
    let unlimited = Some(BucketConfig::default());
    rx.update(None, unlimited);
    tx.update(None, unlimited);
    d.processor.process_queue(TX_QUEUE).unwrap();
    d.processor.process_queue(RX_QUEUE).unwrap();
    assert_eq!(wire.lock().unwrap().from_guest, vec![a, b]);
    assert_eq!(d.queues[RX_QUEUE].take_used(&d.mem).len(), 1);
    assert!(wire.lock().unwrap().to_guest.is_empty());
}
