//! Fuzz the vhost-user backend with arbitrary frontend messages: any request code, flags
//! and body, with a memfd (guest memory) or an eventfd attached as the input says, and the
//! device's queues run between messages over guest memory whose contents come from the
//! input too. The backend (a virtio-blk device) must never panic, hang or touch memory
//! outside what the frontend mapped.
//!
//! Input: u16 length L, L bytes of guest memory, then records:
//! `0xff` runs every started queue; any other byte is a request code followed by a flags
//! byte, an fd selector (0 none, 1 memfd, 2 eventfd, 3 both), a u16 body length and the
//! body.
#![no_main]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const MEM_SIZE: u64 = 0x10000;
const MAX_BODY: usize = 0x1000;

fn disk_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vhost-user-fuzz-{}.raw", std::process::id()));
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        path
    })
}

/// Guest memory sealed against shrinking, as the backend requires.
fn memfd(contents: &[u8]) -> File {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: the name is a NUL-terminated literal; flags are constants.
    let fd = unsafe { libc::memfd_create(c"vhost-user-fuzz".as_ptr(), flags) };
    assert!(fd >= 0);
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.set_len(MEM_SIZE).unwrap();
    file.write_all(contents).unwrap();
    // SAFETY: F_ADD_SEALS on a descriptor `file` owns; no memory is passed.
    let sealed = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
    assert_eq!(sealed, 0);
    file
}

fn drain(sock: &mut UnixStream) {
    let mut buf = [0u8; 4096];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mem_len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let mem_len = mem_len.min(MEM_SIZE as usize);
    let guest = memfd(&data[2..2 + mem_len]);
    let mut rest = &data[2 + mem_len..];
    let events = EventFd::new(libc::EFD_NONBLOCK).unwrap();

    let image = block::open(disk_path(), &block::OpenOptions::default()).unwrap();
    let device = virtio::blk::Block::new(image, "fuzz");
    let backend = vhost_user::Backend::new(Box::new(device), 1, None).unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut connection = backend.connect(theirs).unwrap();

    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op == 0xff {
            connection.run_queues();
            continue;
        }
        if rest.len() < 4 {
            break;
        }
        let (flags, selector) = (rest[0], rest[1]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]))
            .min(MAX_BODY)
            .min(rest.len() - 4);
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        // Version 1, NEED_REPLY from the input; other bits only sometimes.
        let mut hdr_flags = 1 | u32::from(flags & 0x08);
        if flags & 0x80 != 0 {
            hdr_flags |= u32::from(flags & 0x74);
        }
        let mut message = Vec::with_capacity(12 + len);
        message.extend_from_slice(&u32::from(op).to_le_bytes());
        message.extend_from_slice(&hdr_flags.to_le_bytes());
        message.extend_from_slice(&(len as u32).to_le_bytes());
        message.extend_from_slice(body);
        let fds: Vec<RawFd> = match selector % 4 {
            0 => vec![],
            1 => vec![guest.as_raw_fd()],
            2 => vec![events.as_raw_fd()],
            _ => vec![guest.as_raw_fd(), events.as_raw_fd()],
        };
        if ours.send_with_fds(&[&message[..]], &fds).is_err() {
            break;
        }
        match connection.handle_request() {
            Ok(()) | Err(vhost::vhost_user::Error::ReqHandlerError(_)) => {}
            // The server closes the connection here.
            Err(_) => break,
        }
        drain(&mut ours);
    }
    drop(connection);
});
