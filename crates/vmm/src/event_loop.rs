//! The VMM's main thread while the VM runs: waits for the VM to end, turns signals into
//! actions (SIGINT/SIGTERM stop the VM, SIGUSR1 asks the guest to shut down: ACPI power
//! button and Ctrl-Alt-Del), and
//! feeds the serial console from stdin or from the client of a background VM's console
//! socket.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Mutex;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use devices::serial::Serial;
use devices::{ExitReason, VmExit};

use crate::console_socket::ConsoleSocket;
use crate::control::VmHandle;

#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> EventLoopError {
    move |source| EventLoopError::Io { what, source }
}

/// SIGINT, SIGTERM and SIGUSR1, blocked in every thread (threads spawned after this inherit
/// the mask) and read from a signalfd by the main loop.
pub struct ControlSignals {
    fd: File,
}

impl ControlSignals {
    pub fn block() -> Result<Self, EventLoopError> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the calls only modify it and this thread's mask.
        let fd = unsafe {
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io_err("blocking signals")(std::io::Error::last_os_error()));
            }
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        if fd < 0 {
            return Err(io_err("signalfd")(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new signalfd owned by nobody else.
        let fd = unsafe { File::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Signal numbers received since the last call.
    fn take(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while (&self.fd).read(&mut info).is_ok_and(|n| n == info.len()) {
            // ssi_signo is the first field of signalfd_siginfo.
            out.push(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]));
        }
        out
    }
}

const TOKEN_EXIT: u64 = 1;
const TOKEN_SIGNAL: u64 = 2;
const TOKEN_STDIN: u64 = 3;
const TOKEN_CONSOLE_LISTEN: u64 = 4;
const TOKEN_CONSOLE_CLIENT: u64 = 5;

/// Where serial input comes from.
pub enum SerialInput {
    None,
    Stdin,
    Socket(ConsoleSocket),
}

struct Loop<'a> {
    epoll: Epoll,
    serial: &'a Mutex<Serial>,
    input: SerialInput,
    /// fd and token of the input currently taken out of epoll because the guest's input
    /// queue is full.
    paused: Option<(RawFd, u64)>,
}

impl Loop<'_> {
    fn add(&self, fd: RawFd, token: u64) -> Result<(), EventLoopError> {
        self.epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(io_err("epoll_ctl"))
    }

    fn remove(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Queue input for the guest; stop reading `fd` while the serial queue is full.
    fn feed(&mut self, bytes: &[u8], fd: RawFd, token: u64) {
        let mut s = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        s.queue_input(bytes);
        if !s.wants_input() {
            drop(s);
            self.remove(fd);
            self.paused = Some((fd, token));
        }
    }

    fn maybe_unpause(&mut self) -> Result<(), EventLoopError> {
        if let Some((fd, token)) = self.paused {
            if self
                .serial
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .wants_input()
            {
                self.paused = None;
                self.add(fd, token)?;
            }
        }
        Ok(())
    }

    /// Feeds what stdin has to the guest; stops polling stdin at its end.
    fn read_stdin(&mut self, buf: &mut [u8]) {
        // SAFETY: reading into a valid buffer from the stdin fd.
        let r = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if r > 0 {
            self.feed(&buf[..r as usize], libc::STDIN_FILENO, TOKEN_STDIN);
        } else if r == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            self.remove(libc::STDIN_FILENO);
        }
    }

    /// A new console client replaces the one attached before.
    fn accept_console_client(&mut self) -> Result<(), EventLoopError> {
        if let SerialInput::Socket(c) = &mut self.input {
            let old = c.reader_fd();
            if let Some(fd) = c.accept().map(|r| r.as_raw_fd()) {
                if let Some(old) = old {
                    let _ = self
                        .epoll
                        .ctl(ControlOperation::Delete, old, EpollEvent::default());
                }
                self.add(fd, TOKEN_CONSOLE_CLIENT)?;
            }
        }
        Ok(())
    }

    /// Feeds the console client's input to the guest; forgets a client that left.
    fn read_console_client(&mut self, buf: &mut [u8]) {
        if let SerialInput::Socket(c) = &mut self.input {
            let fd = c.reader_fd();
            match (c.read_input(buf), fd) {
                (Some(0), _) | (_, None) => {}
                (Some(n), Some(fd)) => self.feed(&buf[..n], fd, TOKEN_CONSOLE_CLIENT),
                (None, Some(fd)) => self.remove(fd),
            }
        }
    }
}

/// Run until the VM ends.
pub fn run(
    exit: &VmExit,
    signals: &ControlSignals,
    serial: &Mutex<Serial>,
    input: SerialInput,
    handle: &VmHandle,
) -> Result<(), EventLoopError> {
    let mut lp = Loop {
        epoll: Epoll::new().map_err(io_err("epoll"))?,
        serial,
        input,
        paused: None,
    };
    lp.add(exit.event().as_raw_fd(), TOKEN_EXIT)?;
    lp.add(signals.fd.as_raw_fd(), TOKEN_SIGNAL)?;
    match &lp.input {
        SerialInput::Stdin => {
            if lp.add(libc::STDIN_FILENO, TOKEN_STDIN).is_err() {
                lp.input = SerialInput::None; // e.g. stdin is a regular file: nothing to wait for
            }
        }
        SerialInput::Socket(c) => lp.add(c.listener.as_raw_fd(), TOKEN_CONSOLE_LISTEN)?,
        SerialInput::None => {}
    }
    let mut events = vec![EpollEvent::default(); 8];
    let mut buf = [0u8; 4096];
    loop {
        if exit.reason().is_some() {
            return Ok(());
        }
        lp.maybe_unpause()?;
        let timeout = if lp.paused.is_some() { 50 } else { -1 };
        let n = match lp.epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("epoll_wait")(e)),
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_EXIT => {
                    let _ = exit.event().read();
                }
                TOKEN_SIGNAL => {
                    for sig in signals.take() {
                        if sig == libc::SIGUSR1 as u32 {
                            handle.request_shutdown();
                        } else {
                            exit.request(ExitReason::Stopped);
                        }
                    }
                }
                TOKEN_STDIN => lp.read_stdin(&mut buf),
                TOKEN_CONSOLE_LISTEN => lp.accept_console_client()?,
                TOKEN_CONSOLE_CLIENT => lp.read_console_client(&mut buf),
                _ => {}
            }
        }
    }
}
