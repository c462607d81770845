//! virtio-net's snapshot state: the configuration space the guest read (MAC, link status,
//! MTU), whether offloads were offered, and the receive chains the device had taken from
//! the ring but not filled yet. The backend is not saved: the VMM opens it again from the
//! NIC's configuration and passes it in. A frame in flight (received and waiting for
//! buffers, or refused by a full backend) is not kept: it is lost, as on a wire.

use serde::{Deserialize, Serialize};
use vm_memory::GuestMemoryMmap;

use super::{Net, NetBackend, RxChain, QUEUE_SIZE};
use crate::chain_io::split;
use crate::persist::{check_version, Persist, PersistError};
use crate::queue::{Queue, QueueError};

/// Format version of [`NetState`].
pub const NET_STATE_VERSION: u32 = 1;
const DEVICE: &str = "virtio-net";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub version: u32,
    pub mac: [u8; 6],
    pub link_up: bool,
    /// The MTU offered with VIRTIO_NET_F_MTU (None: not offered).
    pub mtu: Option<u16>,
    /// Whether checksum/segmentation offloads were offered (a backend with a vnet header).
    pub offloads: bool,
    /// Heads of receive chains taken from the ring and not yet returned, in ring order.
    pub rx_heads: Vec<u16>,
}

/// What the host gives a restored NIC: its backend, opened again, and the MAC its
/// configuration names (the saved one must be the same).
pub struct NetArgs {
    pub backend: Box<dyn NetBackend>,
    pub mac: [u8; 6],
}

fn mismatch(what: &'static str, saved: String, configured: String) -> PersistError {
    PersistError::Mismatch {
        device: DEVICE,
        what,
        saved,
        configured,
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

fn mtu_text(mtu: Option<u16>) -> String {
    mtu.map_or_else(|| "none (1500)".to_string(), |m| m.to_string())
}

/// Receive heads are ring slots: fewer than the queue's size, each once.
fn check_rx_heads(heads: &[u16]) -> Result<(), PersistError> {
    let invalid = |reason: String| PersistError::Invalid {
        device: DEVICE,
        reason,
    };
    if heads.len() > usize::from(QUEUE_SIZE) {
        return Err(invalid(format!(
            "{} kept receive chains, more than a {QUEUE_SIZE}-entry ring holds",
            heads.len()
        )));
    }
    let mut seen = [false; QUEUE_SIZE as usize];
    for &head in heads {
        let slot = seen
            .get_mut(usize::from(head))
            .ok_or_else(|| invalid(format!("receive chain head {head} is beyond the ring")))?;
        if *slot {
            return Err(invalid(format!("receive chain head {head} is kept twice")));
        }
        *slot = true;
    }
    Ok(())
}

impl Persist for Net {
    type State = NetState;
    type ConstructorArgs = NetArgs;
    type Error = PersistError;

    fn save(&self) -> NetState {
        let kept = self.rx_chains.iter().map(|c| c.head);
        NetState {
            version: NET_STATE_VERSION,
            mac: self.mac,
            link_up: self.link.load(std::sync::atomic::Ordering::SeqCst),
            mtu: self.mtu(),
            offloads: self.backend.offloads(),
            rx_heads: self.restored_rx.iter().copied().chain(kept).collect(),
        }
    }

    fn restore(args: NetArgs, state: &NetState) -> Result<Self, PersistError> {
        check_version(DEVICE, state.version, NET_STATE_VERSION)?;
        if state.mac != args.mac {
            return Err(mismatch("MAC", mac_text(&state.mac), mac_text(&args.mac)));
        }
        check_rx_heads(&state.rx_heads)?;
        let (mut net, link) = Net::new(args.backend, args.mac);
        if state.mtu != net.mtu() {
            return Err(mismatch("MTU", mtu_text(state.mtu), mtu_text(net.mtu())));
        }
        if state.offloads != net.backend.offloads() {
            let offloads = |on: bool| if on { "on" } else { "off" }.to_string();
            return Err(mismatch(
                "offloads (a backend with a virtio-net header)",
                offloads(state.offloads),
                offloads(net.backend.offloads()),
            ));
        }
        link.set_up(state.link_up);
        net.restored_rx = state.rx_heads.clone();
        // The guest may now run behind another port (a migration, a load elsewhere).
        super::announce::announce(net.backend.as_mut(), net.mac);
        Ok(net)
    }
}

impl Net {
    /// Takes the receive chains a restored device had kept back into `rx_chains`, read
    /// again from the (restored) ring. Heads beyond this ring cannot be returned and are
    /// forgotten; chains that are no longer usable go back to the driver unused.
    pub(super) fn take_restored_chains(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<(), QueueError> {
        for head in std::mem::take(&mut self.restored_rx) {
            if head >= queue.size() {
                continue;
            }
            let mut segs = Vec::new();
            let usable = queue.read_chain(mem, head, &mut segs).is_ok() && {
                let (readable, writable) = split(&segs);
                readable.is_empty() && !writable.is_empty()
            };
            if !usable {
                queue.add_used(mem, head, 0)?;
                continue;
            }
            let capacity = segs.iter().map(|s| u64::from(s.len)).sum();
            self.rx_chains.push_back(RxChain {
                head,
                segs,
                capacity,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::{Arc, Mutex};

    struct Wire {
        mtu: Option<u16>,
        offloads: bool,
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl NetBackend for Wire {
        fn recv(&mut self, _buf: &mut [u8]) -> io::Result<Option<usize>> {
            Ok(None)
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
            self.sent.lock().unwrap().push(frame.to_vec());
            Ok(true)
        }
        fn as_raw_fd(&self) -> RawFd {
            -1
        }
        fn mtu(&self) -> Option<u16> {
            self.mtu
        }
        fn offloads(&self) -> bool {
            self.offloads
        }
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn args(mtu: Option<u16>, mac: [u8; 6]) -> NetArgs {
        NetArgs {
            backend: Box::new(Wire {
                mtu,
                offloads: false,
                sent: Arc::default(),
            }),
            mac,
        }
    }

    fn saved() -> NetState {
        let (mut net, link) = Net::new(
            Box::new(Wire {
                mtu: Some(65520),
                offloads: false,
                sent: Arc::default(),
            }),
            MAC,
        );
        link.set_up(false);
        net.restored_rx = vec![3, 1, 2];
        net.save()
    }

    #[test]
    fn save_restore_save_is_the_same_state() {
        let state = saved();
        assert_eq!(state.rx_heads, vec![3, 1, 2]);
        assert!(!state.link_up);
        let net = Net::restore(args(Some(65520), MAC), &state).unwrap();
        assert_eq!(net.save(), state);
        let json = serde_json::to_vec(&state).unwrap();
        let back: NetState = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            Net::restore(args(Some(65520), MAC), &back).unwrap().save(),
            state
        );
    }

    #[test]
    fn a_restored_nic_announces_its_mac_once_on_its_backend() {
        let sent = Arc::default();
        let wire = Wire {
            mtu: Some(65520),
            offloads: false,
            sent: Arc::clone(&sent),
        };
        let args = NetArgs {
            backend: Box::new(wire),
            mac: MAC,
        };
        Net::restore(args, &saved()).unwrap();
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0], super::super::announce::rarp_frame(MAC));
    }

    #[test]
    fn hostile_or_mismatched_states_are_refused_with_the_reason() {
        let restore = |s: &NetState, a| Net::restore(a, s).map(|_| ()).unwrap_err().to_string();
        let mut s = saved();
        s.version = 2;
        assert!(restore(&s, args(Some(65520), MAC)).contains("version 2"));
        let err = restore(&saved(), args(Some(65520), [0x52, 0x54, 0, 0, 0, 1]));
        assert!(
            err.contains("MAC 52:54:00:12:34:56") && err.contains("52:54:00:00:00:01"),
            "{err}"
        );
        let err = restore(&saved(), args(None, MAC));
        assert!(err.contains("MTU 65520"), "{err}");
        let mut a = args(Some(65520), MAC);
        a.backend = Box::new(Wire {
            mtu: Some(65520),
            offloads: true,
            sent: Arc::default(),
        });
        assert!(restore(&saved(), a).contains("offloads"));
        let mut s = saved();
        s.rx_heads = vec![QUEUE_SIZE];
        assert!(restore(&s, args(Some(65520), MAC)).contains("beyond the ring"));
        s.rx_heads = vec![4, 4];
        assert!(restore(&s, args(Some(65520), MAC)).contains("twice"));
        s.rx_heads = vec![0; usize::from(QUEUE_SIZE) + 1];
        assert!(restore(&s, args(Some(65520), MAC)).contains("more than"));
    }
}
