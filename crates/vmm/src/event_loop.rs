//! The VMM's main thread while the VM runs: waits for the VM to end, turns signals into
//! actions (SIGINT/SIGTERM stop the VM, SIGUSR1 asks the guest to shut down: ACPI power
//! button and Ctrl-Alt-Del), and
//! feeds the serial console from stdin or from the client of a background VM's console
//! socket. Like the I/O thread, it is an `event-manager` subscriber.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;

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
    #[error("the main event loop: {0}")]
    Events(#[from] event_manager::Error),
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

/// What a ready fd of the main loop is (its event's data).
const TOKEN_EXIT: u32 = 1;
const TOKEN_SIGNAL: u32 = 2;
const TOKEN_STDIN: u32 = 3;
const TOKEN_CONSOLE_LISTEN: u32 = 4;
const TOKEN_CONSOLE_CLIENT: u32 = 5;

/// How long the loop sleeps between looks at a full serial input queue.
const PAUSED_POLL_MS: i32 = 50;

/// Where serial input comes from.
pub enum SerialInput {
    None,
    Stdin,
    Socket(ConsoleSocket),
}

/// The main thread's subscriber.
struct MainLoop {
    exit: VmExit,
    signals: ControlSignals,
    handle: VmHandle,
    serial: Arc<Mutex<Serial>>,
    input: SerialInput,
    /// fd and token of the input currently taken out of the loop because the guest's
    /// input queue is full.
    paused: Option<(RawFd, u32)>,
    buf: Box<[u8; 4096]>,
    /// The fds `init` registers, and the first that failed.
    registrations: eventloop::Registrations,
}

fn watch(ops: &mut EventOps, fd: RawFd, token: u32) -> Result<(), event_manager::Error> {
    ops.add(Events::with_data_raw(fd, token, EventSet::IN))
}

fn unwatch(ops: &mut EventOps, fd: RawFd) {
    let _ = ops.remove(Events::empty_raw(fd));
}

impl eventloop::Registered for MainLoop {
    fn registrations(&mut self) -> &mut eventloop::Registrations {
        &mut self.registrations
    }
}

impl MutEventSubscriber for MainLoop {
    fn init(&mut self, ops: &mut EventOps) {
        let mut fds = vec![
            (self.exit.event().as_raw_fd(), TOKEN_EXIT),
            (self.signals.fd.as_raw_fd(), TOKEN_SIGNAL),
        ];
        match &self.input {
            SerialInput::Stdin => {
                if watch(ops, libc::STDIN_FILENO, TOKEN_STDIN).is_err() {
                    // e.g. stdin is a regular file: nothing to wait for
                    self.input = SerialInput::None;
                }
            }
            SerialInput::Socket(c) => fds.push((c.listener.as_raw_fd(), TOKEN_CONSOLE_LISTEN)),
            SerialInput::None => {}
        }
        for (fd, token) in fds {
            self.registrations.add(ops, fd, token, EventSet::IN);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_EXIT => {
                let _ = self.exit.event().read();
            }
            TOKEN_SIGNAL => {
                for sig in self.signals.take() {
                    if sig == libc::SIGUSR1 as u32 {
                        self.handle.request_shutdown();
                    } else {
                        self.exit.request(ExitReason::Stopped);
                    }
                }
            }
            TOKEN_STDIN => self.read_stdin(ops),
            TOKEN_CONSOLE_LISTEN => self.accept_console_client(ops),
            TOKEN_CONSOLE_CLIENT => self.read_console_client(ops),
            _ => {}
        }
    }
}

impl MainLoop {
    /// Queue input for the guest; stop reading `fd` while the serial queue is full.
    fn feed(&mut self, n: usize, fd: RawFd, token: u32, ops: &mut EventOps) {
        let mut s = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        s.queue_input(&self.buf[..n]);
        if !s.wants_input() {
            drop(s);
            unwatch(ops, fd);
            self.paused = Some((fd, token));
        }
    }

    /// The paused input to watch again, once the guest wants input.
    fn take_unpaused(&mut self) -> Option<(RawFd, u32)> {
        // The UART is locked only while an input waits (vCPUs write it all the time).
        self.paused?;
        let wants = self
            .serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wants_input();
        if wants {
            self.paused.take()
        } else {
            None
        }
    }

    /// Feeds what stdin has to the guest; stops polling stdin at its end.
    fn read_stdin(&mut self, ops: &mut EventOps) {
        let buf = &mut self.buf[..];
        // SAFETY: reading into a valid buffer from the stdin fd.
        let r = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if r > 0 {
            self.feed(r as usize, libc::STDIN_FILENO, TOKEN_STDIN, ops);
        } else if r == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            unwatch(ops, libc::STDIN_FILENO);
        }
    }

    /// A new console client replaces the one attached before.
    fn accept_console_client(&mut self, ops: &mut EventOps) {
        if let SerialInput::Socket(c) = &mut self.input {
            let old = c.reader_fd();
            if let Some(fd) = c.accept().map(|r| r.as_raw_fd()) {
                if let Some(old) = old {
                    unwatch(ops, old);
                }
                if let Err(e) = watch(ops, fd, TOKEN_CONSOLE_CLIENT) {
                    tracing::warn!("console client: {e}");
                }
            }
        }
    }

    /// Feeds the console client's input to the guest; forgets a client that left.
    fn read_console_client(&mut self, ops: &mut EventOps) {
        if let SerialInput::Socket(c) = &mut self.input {
            let fd = c.reader_fd();
            match (c.read_input(&mut self.buf[..]), fd) {
                (Some(0), _) | (_, None) => {}
                (Some(n), Some(fd)) => self.feed(n, fd, TOKEN_CONSOLE_CLIENT, ops),
                (None, Some(fd)) => unwatch(ops, fd),
            }
        }
    }
}

/// Run until the VM ends.
pub fn run(
    exit: &VmExit,
    signals: ControlSignals,
    serial: Arc<Mutex<Serial>>,
    input: SerialInput,
    handle: &VmHandle,
) -> Result<(), EventLoopError> {
    let (mut manager, id) = eventloop::start(MainLoop {
        exit: exit.clone(),
        signals,
        handle: handle.clone(),
        serial,
        input,
        paused: None,
        buf: Box::new([0; 4096]),
        registrations: Default::default(),
    })
    .map_err(|source| EventLoopError::Io {
        what: "starting the main event loop",
        source,
    })?;
    loop {
        if exit.reason().is_some() {
            return Ok(());
        }
        let main = manager.subscriber_mut(id)?;
        if let Some((fd, token)) = main.take_unpaused() {
            // The input may have gone while it was paused (a console client that left):
            // it is simply not watched again.
            if let Err(e) = watch(&mut manager.event_ops(id)?, fd, token) {
                tracing::debug!("serial input {fd} not watched again: {e}");
            }
        }
        let paused = manager.subscriber_mut(id)?.paused.is_some();
        match manager.run_with_timeout(if paused { PAUSED_POLL_MS } else { -1 }) {
            Ok(_) => {}
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EINTR => {}
            Err(e) => return Err(e.into()),
        }
    }
}
