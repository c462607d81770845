//! Interrupt sinks that record what the device raised.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pci::{IntxLine, MsiInterrupt, MsiMessage};

#[derive(Default)]
pub struct RecordingMsi {
    pub fired: Mutex<Vec<u16>>,
    pub routes: Mutex<Vec<(u16, MsiMessage, bool)>>,
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
