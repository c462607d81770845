//! The data path of one connection: a thread waiting on the rings' kick eventfds, the
//! session's wake eventfd and the device backend's fd, running the device's queues.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::handler::lock;
use crate::session::{Core, BACKEND_TOKEN, STOP_TOKEN, WAKE_TOKEN};

/// How often rings without a kick fd (VHOST_USER_VRING_NOFD_MASK) are polled.
const POLL_INTERVAL_MS: i32 = 1;

/// The running worker thread; dropping it stops and joins it.
pub(crate) struct Worker {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(core: Arc<Mutex<Core>>, epoll: Arc<Epoll>) -> std::io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        let handle = std::thread::Builder::new()
            .name("vhost-user".into())
            .spawn(move || {
                if let Err(e) = confine::enter(confine::Role::VhostUserWorker) {
                    eprintln!("vessel: error: confining the vhost-user worker: {e}");
                    std::process::exit(1);
                }
                serve(&core, &epoll)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(core: &Mutex<Core>, epoll: &Epoll) {
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        let timeout = {
            let core = lock(core);
            if core.has_pending() {
                0
            } else if core.has_polled() {
                POLL_INTERVAL_MS
            } else {
                -1
            }
        };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("vhost-user worker: epoll_wait: {e}");
                return;
            }
        };
        let mut core = lock(core);
        for ev in &events[..n] {
            match ev.data() {
                STOP_TOKEN => return,
                WAKE_TOKEN => core.drain_wake(),
                BACKEND_TOKEN => core.backend_ready(),
                queue => core.kicked(queue),
            }
        }
        core.run_pending();
    }
}
