//! The statistics polling timer: a non-blocking `timerfd` the I/O thread polls as the
//! balloon's backend fd; each expiry asks the driver for fresh statistics.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A periodic monotonic timer.
#[derive(Debug)]
pub struct StatsTimer {
    fd: OwnedFd,
}

impl StatsTimer {
    /// A disarmed timer.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Fire every `secs` seconds from now on; 0 disarms.
    pub fn set_interval(&self, secs: u16) -> std::io::Result<()> {
        let period = libc::timespec {
            tv_sec: libc::time_t::from(secs),
            tv_nsec: 0,
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        // SAFETY: `spec` is a valid itimerspec for the call's duration; the old value is
        // not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consume the expiries since the last call; whether there were any.
    pub fn take_expired(&self) -> bool {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `count`; the fd is non-blocking.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        n == 8 && u64::from_ne_bytes(count) > 0
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_when_armed_only() {
        let t = StatsTimer::new().unwrap();
        assert!(!t.take_expired());
        t.set_interval(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(t.take_expired());
        assert!(!t.take_expired());
        t.set_interval(0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.take_expired());
    }
}
