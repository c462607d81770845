//! Addresses of a network handed to VMs without a daemon: a file per address in a
//! directory; a VM owns an address while it holds an `flock` on its file (so a VMM that
//! dies, even by SIGKILL, frees it). The file records the MAC that last held it: a VM with
//! a fixed MAC gets its address back; others take the lowest free one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lease {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("every address of the network is leased (leases in {0})")]
    Full(PathBuf),
}

/// The addresses `a.b.c.first` to `a.b.c.last` of a /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRange {
    pub network: [u8; 3],
    pub first: u8,
    pub last: u8,
}

impl LeaseRange {
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.network;
        Ipv4Addr::new(a, b, c, host)
    }
}

/// An address of the network, held for as long as this value lives.
#[derive(Debug)]
pub struct Lease {
    addr: Ipv4Addr,
    _file: File,
}

impl Lease {
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Take an address of `range` from `dir`: the one `mac` held last if it is free, else
    /// the lowest free one.
    pub fn acquire(
        dir: &Path,
        range: LeaseRange,
        mac: Option<[u8; 6]>,
    ) -> Result<Self, LeaseError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LeaseError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        let hosts = range.first..=range.last;
        if let Some(mac) = mac {
            let want = mac_string(&mac);
            for host in hosts.clone() {
                let path = lease_path(dir, range, host);
                let held_by = std::fs::read_to_string(&path).unwrap_or_default();
                if held_by.trim() == want {
                    if let Some(lease) = Self::try_take(&path, range.addr(host), Some(mac))? {
                        return Ok(lease);
                    }
                }
            }
        }
        for host in hosts {
            if let Some(lease) =
                Self::try_take(&lease_path(dir, range, host), range.addr(host), mac)?
            {
                return Ok(lease);
            }
        }
        Err(LeaseError::Full(dir.to_owned()))
    }

    fn try_take(
        path: &Path,
        addr: Ipv4Addr,
        mac: Option<[u8; 6]>,
    ) -> Result<Option<Self>, LeaseError> {
        let err = |source| LeaseError::File {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        // SAFETY: flock on an fd this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(err(e))
            };
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        if let Some(mac) = mac {
            let record = format!("{}\n", mac_string(&mac));
            if previous != record {
                file.set_len(0).map_err(err)?;
                file.rewind().map_err(err)?;
                file.write_all(record.as_bytes()).map_err(err)?;
            }
        }
        Ok(Some(Self { addr, _file: file }))
    }
}

fn lease_path(dir: &Path, range: LeaseRange, host: u8) -> PathBuf {
    dir.join(range.addr(host).to_string())
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
