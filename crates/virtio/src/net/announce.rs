//! The frame a restored NIC sends once to say where its MAC address is now: a broadcast
//! RARP request from the guest's address, as QEMU sends after a migration or a snapshot
//! load, so that switches and bridges on the new host learn the guest's port before the
//! guest sends anything.

use super::{NetBackend, NET_HDR_LEN};

/// Ethernet's minimum frame without its FCS: the announcement is padded to it.
const FRAME_LEN: usize = 60;
const ETHERTYPE_RARP: u16 = 0x8035;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
/// RFC 903's "request reverse".
const RARP_OP_REQUEST_REVERSE: u16 = 3;

/// The RARP request announcing `mac`: broadcast, from `mac`, asking for `mac`'s address.
pub(super) fn rarp_frame(mac: [u8; 6]) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    frame[0..6].fill(0xff);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    frame[14..16].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
    frame[16..18].copy_from_slice(&ARP_PTYPE_IPV4.to_be_bytes());
    frame[18] = 6; // hardware address length
    frame[19] = 4; // protocol address length
    frame[20..22].copy_from_slice(&RARP_OP_REQUEST_REVERSE.to_be_bytes());
    frame[22..28].copy_from_slice(&mac); // sender hardware address
                                         // Sender protocol address 28..32: 0.0.0.0.
    frame[32..38].copy_from_slice(&mac); // target hardware address
                                         // Target protocol address 38..42: 0.0.0.0; the rest is padding.
    frame
}

/// Sends the announcement of `mac` on `backend`, once and best effort: a backend that
/// cannot take it now (or fails) only costs the switches a later lesson.
pub(super) fn announce(backend: &mut dyn NetBackend, mac: [u8; 6]) {
    let frame = rarp_frame(mac);
    let sent = if backend.offloads() {
        backend.send_with_header(&[0; NET_HDR_LEN], &frame)
    } else {
        backend.send(&frame)
    };
    match sent {
        Ok(true) => tracing::debug!("virtio-net: announced the restored NIC's MAC (RARP)"),
        Ok(false) => tracing::debug!("virtio-net: backend busy; the MAC was not announced"),
        Err(e) => tracing::warn!("virtio-net: announcing the restored NIC's MAC: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_is_qemus_rarp_request() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let frame = rarp_frame(mac);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(&frame[12..14], &[0x80, 0x35]);
        assert_eq!(&frame[14..22], &[0, 1, 8, 0, 6, 4, 0, 3]);
        assert_eq!(&frame[22..28], &mac);
        assert_eq!(&frame[28..32], &[0; 4]);
        assert_eq!(&frame[32..38], &mac);
        assert!(frame[38..].iter().all(|&b| b == 0));
    }
}
