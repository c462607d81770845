//! virtio-net behind vhost-user: the 12-byte virtio_net_hdr and MRG_RXBUF handled by the
//! same device model as on PCI, frames to and from a backend over a datagram socket.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use virtio::net::{DatagramBackend, F_MRG_RXBUF, NET_HDR_LEN, RX_QUEUE, TX_QUEUE};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::Backend;

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn frames_cross_with_the_net_header_and_mergeable_buffers() {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let (device, _link) = virtio::net::Net::new(
        Box::new(DatagramBackend::new(ours).unwrap()),
        [2, 0, 0, 0, 0, 1],
    );
    let fd = device.backend_fd();
    let backend = Arc::new(Backend::new(Box::new(device), 1, Some(fd)).unwrap());
    let (mut fe, served) = serve(&backend);
    let features = negotiate(&mut fe);
    // QEMU provides virtio-net's configuration itself.
    assert!(!fe
        .get_protocol_features()
        .unwrap()
        .contains(VhostUserProtocolFeatures::CONFIG));
    assert_ne!(features & F_MRG_RXBUF, 0);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let mut rx = Ring::new(0, QUEUE_SIZE);
    let mut tx = Ring::new(1, QUEUE_SIZE);
    let (rx_kick, rx_call) = start_ring(&mut fe, RX_QUEUE, &rx);
    let (tx_kick, tx_call) = start_ring(&mut fe, TX_QUEUE, &tx);

    // Transmit: header + 60-byte frame in one buffer; the backend gets the bare frame.
    let out = frame(60);
    guest
        .mem
        .write_slice(&[0; NET_HDR_LEN], GuestAddress(0x20000))
        .unwrap();
    guest
        .mem
        .write_slice(&out, GuestAddress(0x20000 + NET_HDR_LEN as u64))
        .unwrap();
    tx.push(&guest.mem, &[(0x20000, (NET_HDR_LEN + 60) as u32, false)]);
    tx_kick.write(1).unwrap();
    let mut got = vec![0u8; 2048];
    let n = peer.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &out[..]);
    assert!(readable(&tx_call, 5000));

    // Receive into two 64-byte buffers: a 100-byte frame (112 with the header) spans
    // both, and the header says so in num_buffers.
    rx.push(&guest.mem, &[(0x30000, 64, true)]);
    rx.push(&guest.mem, &[(0x31000, 64, true)]);
    rx_kick.write(1).unwrap();
    let incoming = frame(100);
    peer.send(&incoming).unwrap();
    assert!(readable(&rx_call, 5000), "no receive interrupt");
    rx.wait_used(&guest.mem, 2);
    assert_eq!(rx.used_elem(&guest.mem, 0), (0, 64));
    assert_eq!(rx.used_elem(&guest.mem, 1), (1, 48));
    let mut header = [0u8; NET_HDR_LEN];
    guest
        .mem
        .read_slice(&mut header, GuestAddress(0x30000))
        .unwrap();
    assert_eq!(
        u16::from_le_bytes([header[10], header[11]]),
        2,
        "num_buffers"
    );
    let mut first = vec![0u8; 64 - NET_HDR_LEN];
    guest
        .mem
        .read_slice(&mut first, GuestAddress(0x3000c))
        .unwrap();
    let mut second = vec![0u8; 48];
    guest
        .mem
        .read_slice(&mut second, GuestAddress(0x31000))
        .unwrap();
    assert_eq!([first, second].concat(), incoming);
    drop(fe);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
}
