//! The host side of the serial console: stdin in raw mode when it is a terminal (Ctrl-C
//! still raises SIGINT, which stops the VM), restored on every way out.

use std::io::IsTerminal;

/// Puts a terminal into raw input mode and restores it when dropped.
pub struct RawTerminal {
    fd: libc::c_int,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switch stdin to raw mode if it is a terminal; `None` otherwise.
    pub fn stdin() -> Option<Self> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open (stdin) and `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::IEXTEN);
        raw.c_iflag &= !(libc::ICRNL | libc::INLCR | libc::IGNCR | libc::IXON);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: valid fd and termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read from the same fd in `stdin()`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}
