//! Interrupt sinks that record what the device raised.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pci::{IntxLine, MsiInterrupt, MsiMessage};
use vmm_sys_util::eventfd::EventFd;

pub struct RecordingMsi {
    pub fired: Mutex<Vec<u16>>,
    pub routes: Mutex<Vec<(u16, MsiMessage, bool)>>,
    /// One eventfd per vector, as KVM's irqfds (handed to external queue servers).
    pub irqfds: Vec<EventFd>,
}

impl Default for RecordingMsi {
    fn default() -> Self {
        Self {
            fired: Mutex::default(),
            routes: Mutex::default(),
            irqfds: (0..16)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
                .collect(),
        }
    }
}

impl RecordingMsi {
    pub fn take(&self) -> Vec<u16> {
        std::mem::take(&mut *self.fired.lock().unwrap())
    }
}

impl MsiInterrupt for RecordingMsi {
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool) {
        self.routes.lock().unwrap().push((vector, msg, masked));
    }
    fn trigger(&self, vector: u16) {
        self.fired.lock().unwrap().push(vector);
    }
    fn irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.irqfds.get(usize::from(vector))
    }
}

#[derive(Default)]
pub struct RecordingIntx {
    pub level: AtomicBool,
}

impl RecordingIntx {
    pub fn asserted(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }
}

impl IntxLine for RecordingIntx {
    fn set_level(&self, asserted: bool) {
        self.level.store(asserted, Ordering::SeqCst);
    }
}
