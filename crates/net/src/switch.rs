//! `internal:NAME`: a switch between the VMs on one name only, with no switch process.
//! Every port is a datagram unix socket in `$XDG_RUNTIME_DIR/vessel/net/NAME/` (or
//! `/run/vessel/net/NAME/` for root, `/tmp/vessel-UID/net/NAME/` otherwise). A port
//! learns which socket each source MAC came from; frames to a known MAC go to that
//! socket, others (broadcast, multicast, unknown) to every socket in the directory.
//! A socket whose owner died refuses datagrams and is removed. VMs on another name use
//! another directory and never see these frames.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Backend;

/// Ports looked at when flooding a frame, at most.
pub const MAX_PORTS: usize = 64;
/// Learned addresses kept at most (the table starts over when full).
pub const MAX_LEARNED: usize = 1024;
const SUFFIX: &str = ".port";

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("creating switch directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding switch port {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The directory of the switch `name`.
pub fn switch_dir(name: &str) -> PathBuf {
    runtime_dir().join("net").join(name)
}

/// Where vessel keeps per-user runtime state of its networks.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("vessel"),
        _ => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            if uid == 0 {
                PathBuf::from("/run/vessel")
            } else {
                PathBuf::from(format!("/tmp/vessel-{uid}"))
            }
        }
    }
}

/// One VM's port on a switch.
pub struct SwitchPort {
    socket: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
    learned: HashMap<[u8; 6], PathBuf>,
}

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

impl SwitchPort {
    /// Join the switch `name` (created on first use).
    pub fn join(name: &str) -> Result<Self, SwitchError> {
        Self::join_dir(&switch_dir(name))
    }

    /// Join the switch whose ports live in `dir`.
    pub fn join_dir(dir: &Path) -> Result<Self, SwitchError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SwitchError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        let n = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}{SUFFIX}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let bind_err = |source| SwitchError::Bind {
            path: path.clone(),
            source,
        };
        let socket = UnixDatagram::bind(&path).map_err(bind_err)?;
        socket.set_nonblocking(true).map_err(bind_err)?;
        Ok(Self {
            socket,
            dir: dir.to_owned(),
            path,
            learned: HashMap::new(),
        })
    }

    /// Send to one port; false when it is gone (and then forgotten).
    fn send_to(&self, frame: &[u8], peer: &Path) -> bool {
        match self.socket.send_to(frame, peer) {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                // Nobody reads this socket any more: its VM is gone.
                let _ = std::fs::remove_file(peer);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            // A full peer drops the frame, as a switch would.
            Err(_) => true,
        }
    }

    fn flood(&self, frame: &[u8]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten().take(MAX_PORTS) {
            let peer = entry.path();
            if peer != self.path && peer.to_string_lossy().ends_with(SUFFIX) {
                self.send_to(frame, &peer);
            }
        }
    }
}

impl Drop for SwitchPort {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Backend for SwitchPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.socket.recv_from(buf) {
                Ok((n, from)) => {
                    let (Some(src), Some(path)) = (buf.get(6..12), from.as_pathname()) else {
                        continue;
                    };
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(src);
                    if mac[0] & 1 == 0 {
                        if self.learned.len() >= MAX_LEARNED {
                            self.learned.clear();
                        }
                        self.learned.insert(mac, path.to_owned());
                    }
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        let Some(dst) = frame.get(..6) else {
            return Ok(true);
        };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(dst);
        if let Some(peer) = self.learned.get(&mac) {
            if self.send_to(frame, peer) {
                return Ok(true);
            }
            self.learned.remove(&mac);
        }
        self.flood(frame);
        Ok(true)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], body: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, body]);
        f
    }

    fn recv_all(p: &mut SwitchPort) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::new();
        while let Some(n) = p.recv(&mut buf).unwrap() {
            out.push(buf[..n].to_vec());
        }
        out
    }

    #[test]
    fn floods_learns_and_isolates() {
        let tmp = std::env::temp_dir().join(format!("vessel-switch-test-{}", std::process::id()));
        let (a_mac, b_mac, c_mac) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        let mut a = SwitchPort::join_dir(&tmp.join("one")).unwrap();
        let mut b = SwitchPort::join_dir(&tmp.join("one")).unwrap();
        let mut c = SwitchPort::join_dir(&tmp.join("one")).unwrap();
        let mut other = SwitchPort::join_dir(&tmp.join("two")).unwrap();
        // Broadcast from a reaches b and c, not the other switch.
        let bcast = frame([0xff; 6], a_mac, 1);
        a.send(&bcast).unwrap();
        assert_eq!(recv_all(&mut b), vec![bcast.clone()]);
        assert_eq!(recv_all(&mut c), vec![bcast.clone()]);
        assert!(recv_all(&mut other).is_empty());
        // b learned a: its reply goes to a alone.
        let reply = frame(a_mac, b_mac, 2);
        b.send(&reply).unwrap();
        assert_eq!(recv_all(&mut a), vec![reply]);
        assert!(recv_all(&mut c).is_empty());
        // c vanishes: its socket is removed when a frame to it is refused.
        c.send(&frame(a_mac, c_mac, 3)).unwrap();
        assert_eq!(recv_all(&mut a).len(), 1);
        let c_path = c.path.clone();
        drop(c);
        assert!(!c_path.exists());
        a.send(&frame(c_mac, a_mac, 4)).unwrap();
        assert_eq!(recv_all(&mut b).len(), 1, "unknown again: flooded");
        drop((a, b, other));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn stale_sockets_are_removed() {
        let tmp = std::env::temp_dir().join(format!("vessel-switch-stale-{}", std::process::id()));
        let a = SwitchPort::join_dir(&tmp).unwrap();
        // A socket file left by a VM that died without cleaning up.
        let stale = tmp.join(format!("99999-0{SUFFIX}"));
        drop(UnixDatagram::bind(&stale).unwrap());
        assert!(stale.exists());
        let mut a = a;
        a.send(&frame([0xff; 6], [2, 0, 0, 0, 0, 9], 0)).unwrap();
        assert!(!stale.exists());
        drop(a);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
