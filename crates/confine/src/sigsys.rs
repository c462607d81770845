//! The SIGSYS handler: a seccomp filter traps a forbidden system call
//! (SECCOMP_RET_TRAP), and this handler writes which call and which thread to stderr with
//! async-signal-safe calls only (`write`, `_exit`), then ends the VMM.

use std::cell::Cell;

/// Exit status of a VMM stopped by its seccomp filter: what a shell reports for a process
/// killed by SIGSYS (128 + 31).
pub const EXIT_SECCOMP: i32 = 128 + libc::SIGSYS;

#[derive(Debug, thiserror::Error)]
#[error("cannot install the SIGSYS handler: {0}")]
pub struct SigsysError(#[source] std::io::Error);

thread_local! {
    /// The role of this thread, for the message; set when its filter is installed.
    static ROLE: Cell<&'static str> = const { Cell::new("unconfined") };
}

/// Name this thread's role in a later violation message.
pub(crate) fn set_role(name: &'static str) {
    ROLE.with(|r| r.set(name));
}

/// Install the handler for the whole process.
pub fn install() -> Result<(), SigsysError> {
    // SAFETY: a zeroed sigaction is valid; the fields used are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a valid sigset_t; the handler is async-signal-safe and
    // lives for the whole program.
    let rc = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(SigsysError(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Byte offset of `_sigsys._syscall` in siginfo_t on x86-64 (after si_signo, si_errno,
/// si_code, padding and `_call_addr`).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a full siginfo_t for SIGSYS; the field is an i32 at
        // this offset in the x86-64 layout.
        i64::from(unsafe {
            std::ptr::read_unaligned(info.cast::<u8>().add(SI_SYSCALL_OFFSET).cast::<i32>())
        })
    };
    let role = ROLE.with(|r| r.get());
    let mut msg = Message::default();
    msg.push(b"vessel: seccomp: the ");
    msg.push(role.as_bytes());
    msg.push(b" thread attempted the forbidden system call ");
    msg.push(crate::syscalls::name(nr).unwrap_or("unknown").as_bytes());
    msg.push(b" (");
    msg.push_number(nr);
    msg.push(b"); the VMM stops (--seccomp=log lets it run and logs to the kernel log)\n");
    // SAFETY: write and _exit are async-signal-safe; the buffer is valid for its length.
    unsafe {
        libc::write(libc::STDERR_FILENO, msg.buf.as_ptr().cast(), msg.len);
        libc::_exit(EXIT_SECCOMP);
    }
}

/// A fixed buffer built without allocating (allocation is not async-signal-safe).
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Message {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut v = n.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_formats_numbers_and_truncates() {
        let mut m = Message::default();
        m.push(b"nr ");
        m.push_number(135);
        m.push(b" ");
        m.push_number(-1);
        m.push(b" ");
        m.push_number(0);
        assert_eq!(&m.buf[..m.len], b"nr 135 -1 0");
        m.push(&[b'x'; 300]);
        assert_eq!(m.len, 256);
    }
}
