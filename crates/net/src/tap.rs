//! A Linux tap device as a backend (`tap:NAME`): open `/dev/net/tun` with
//! IFF_TAP|IFF_NO_PI (optionally IFF_VNET_HDR), or adopt an already open tap fd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use virtio::net::{GuestOffloads, NET_HDR_LEN};

use crate::Backend;

/// `virtio_net_hdr_v1` length when the tap carries one (TUNSETVNETHDRSZ).
const VNET_HDR_LEN: usize = NET_HDR_LEN;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("opening /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    #[error("creating or attaching tap {name:?} needs CAP_NET_ADMIN (run as root, or give the binary cap_net_admin, or pre-create the tap owned by your user with `ip tuntap add {name} mode tap user $USER`)")]
    NoNetAdmin { name: String },
    #[error("tap {name:?}: {source}")]
    SetIff {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("tap interface name {0:?} is longer than 15 bytes")]
    NameTooLong(String),
    #[error("setting the tap's vnet header size: {0}")]
    VnetHdr(#[source] io::Error),
    #[error("making the tap fd non-blocking: {0}")]
    NonBlocking(#[source] io::Error),
}

/// Frames to and from a tap device.
pub struct TapBackend {
    fd: OwnedFd,
    vnet_hdr: bool,
    name: String,
}

/// `struct ifreq` with the name and the flags union member.
#[repr(C)]
pub(crate) struct IfReqFlags {
    pub(crate) name: [u8; libc::IFNAMSIZ],
    pub(crate) flags: libc::c_short,
    pub(crate) _pad: [u8; 22],
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd the caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl TapBackend {
    /// Create (or attach to, if it exists and we may) the tap `name`. With `vnet_hdr`
    /// the tap exchanges frames with a virtio-net header (all offloads left off).
    pub fn open(name: &str, vnet_hdr: bool) -> Result<Self, TapError> {
        if name.len() >= libc::IFNAMSIZ {
            return Err(TapError::NameTooLong(name.to_owned()));
        }
        // SAFETY: a NUL-terminated path literal; the returned fd is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TapError::OpenTun(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly opened fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | if vnet_hdr { IFF_VNET_HDR } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as
        // (and is as large as); it lives across the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EPERM) {
                TapError::NoNetAdmin {
                    name: name.to_owned(),
                }
            } else {
                TapError::SetIff {
                    name: name.to_owned(),
                    source: err,
                }
            });
        }
        // The kernel fills in the name (e.g. for a `vsl%d` pattern).
        let end = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        let actual = String::from_utf8_lossy(&req.name[..end]).into_owned();
        Self::adopt(fd, vnet_hdr, &actual)
    }

    /// Use an already configured tap fd (e.g. passed by a management tool, or opened in
    /// another network namespace). `vnet_hdr` must match how it was opened.
    pub fn from_fd(fd: OwnedFd, vnet_hdr: bool) -> Result<Self, TapError> {
        set_nonblocking(fd.as_raw_fd()).map_err(TapError::NonBlocking)?;
        Self::adopt(fd, vnet_hdr, "")
    }

    fn adopt(fd: OwnedFd, vnet_hdr: bool, name: &str) -> Result<Self, TapError> {
        if vnet_hdr {
            let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, valid for the call.
            if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
                return Err(TapError::VnetHdr(io::Error::last_os_error()));
            }
        }
        Ok(Self {
            fd,
            vnet_hdr,
            name: name.to_owned(),
        })
    }

    /// Give up the tap fd (to hand it to another process or thread).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The interface name given to [`Self::open`] (empty for an adopted fd).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl TapBackend {
    /// Read one frame, its virtio-net header (when the tap has one) into `hdr`.
    fn read_frame(
        &mut self,
        hdr: &mut [u8; VNET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: if self.vnet_hdr { VNET_HDR_LEN } else { 0 },
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs describe live, writable buffers of the given lengths.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_mut_ptr(), 2) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if would_block(&err) {
                Ok(None)
            } else {
                Err(err)
            };
        }
        let head = iov[0].iov_len;
        Ok(Some((n as usize).saturating_sub(head)))
    }

    /// Write one frame behind `hdr` (when the tap has a virtio-net header).
    fn write_frame(&mut self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<bool> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: if self.vnet_hdr { VNET_HDR_LEN } else { 0 },
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs describe live buffers the kernel only reads.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if would_block(&err) {
                Ok(false)
            } else {
                Err(err)
            };
        }
        Ok(true)
    }
}

/// TUN_F_* bits for TUNSETOFFLOAD: what the reader of the tap (the guest) accepts.
fn tun_offload_flags(o: GuestOffloads) -> libc::c_uint {
    let mut flags = 0;
    if o.csum {
        flags |= TUN_F_CSUM;
        // Segmentation offloads need checksum offload (the kernel refuses them alone).
        if o.tso4 {
            flags |= TUN_F_TSO4;
        }
        if o.tso6 {
            flags |= TUN_F_TSO6;
        }
        if o.ecn && (o.tso4 || o.tso6) {
            flags |= TUN_F_TSO_ECN;
        }
    }
    flags
}

impl Backend for TapBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        self.read_frame(&mut hdr, buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.write_frame(&[0u8; VNET_HDR_LEN], frame)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn offloads(&self) -> bool {
        self.vnet_hdr
    }

    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        header.fill(0);
        self.read_frame(header, buf)
    }

    fn send_with_header(&mut self, header: &[u8; NET_HDR_LEN], frame: &[u8]) -> io::Result<bool> {
        self.write_frame(header, frame)
    }

    fn set_guest_offloads(&mut self, offloads: GuestOffloads) -> io::Result<()> {
        if !self.vnet_hdr {
            return Ok(());
        }
        let flags = tun_offload_flags(offloads);
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flags_follow_the_guest() {
        assert_eq!(tun_offload_flags(GuestOffloads::default()), 0);
        let all = GuestOffloads {
            csum: true,
            tso4: true,
            tso6: true,
            ecn: true,
        };
        assert_eq!(
            tun_offload_flags(all),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        );
        let no_csum = GuestOffloads { csum: false, ..all };
        assert_eq!(tun_offload_flags(no_csum), 0, "TSO needs checksum offload");
    }
}
