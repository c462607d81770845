//! A built VM and its run: the vCPU threads, the I/O thread and the migration thread
//! started, the main thread confined to its event loop until the VM ends, then everything
//! stopped and joined. [`crate::builder`] builds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{Kvm, VmFd};

use arch::GuestMemory;
use devices::{ExitReason, VmExit};

use crate::builder::{self, RestoreMemory};
use crate::config::{HostResources, VmConfig};
use crate::console::RawTerminal;
use crate::device_manager::DeviceManager;
use crate::error::io_err;
pub use crate::error::VmError;
use crate::event_loop::{ControlSignals, SerialInput};
use crate::kick;
use crate::vcpu::VcpuRunner;

/// A VM, built and ready to run.
pub struct Vm {
    pub(crate) _kvm: Kvm,
    pub(crate) _vm: Arc<VmFd>,
    /// Guest RAM, kept mapped for as long as the KVM VM that was given its addresses.
    pub(crate) _mem: GuestMemory,
    /// What the VM was built from (for a restored VM: the saved machine on the host's
    /// side), NIC MACs chosen.
    pub(crate) cfg: VmConfig,
    /// Every device; the PCI buses keep the devices referenced until the process exits.
    pub(crate) devices: DeviceManager,
    pub(crate) exit: VmExit,
    pub(crate) serial_input: Option<SerialInput>,
    pub(crate) runners: Vec<VcpuRunner>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) handle: crate::control::VmHandle,
    /// Whether a front end took a [`Vm::handle`]: only then can a migration be asked
    /// for, and the VM gets a migration thread.
    pub(crate) handle_taken: AtomicBool,
    /// Called once the vCPU threads run (a migration receiver confirms the resume).
    pub(crate) on_started: Option<Box<dyn FnOnce() + Send>>,
}

impl Vm {
    /// Create the VM: KVM objects, guest memory, kernel and boot tables, devices, vCPUs.
    pub fn new(cfg: &VmConfig) -> Result<Self, VmError> {
        builder::build_for_boot(cfg)
    }

    /// Recreate the VM a snapshot was taken of, with its state and `mem_file` as its RAM,
    /// ready to run from where it was. `host` gives the host side (serial output, and the
    /// disks that may follow backing files outside their directory); the machine's shape
    /// comes from the snapshot, which must already be validated.
    pub fn restore(
        host: &HostResources,
        snapshot: &crate::snapshot::VmSnapshot,
        mem_file: &std::path::Path,
    ) -> Result<Self, VmError> {
        builder::build_from_state(host, snapshot, RestoreMemory::File(mem_file))
    }

    /// Recreate a VM received by live migration: its state and its RAM, already filled.
    pub fn restore_received(
        host: &HostResources,
        received: &crate::migration::Received,
    ) -> Result<Self, VmError> {
        builder::build_from_state(
            host,
            &received.snapshot,
            RestoreMemory::Filled(&received.mem),
        )
    }

    /// Runs `f` once the VM's vCPU threads have started.
    pub fn on_started(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.on_started = Some(f);
    }

    /// The configuration the VM was built from; for a restored VM, the saved machine with
    /// the host's console and emulator settings (what the API reports and confinement
    /// admits).
    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    /// A handle to pause, resume, stop or Ctrl-Alt-Del the VM from other threads.
    pub fn handle(&self) -> crate::control::VmHandle {
        self.handle_taken.store(true, Ordering::Relaxed);
        self.handle.clone()
    }

    /// Run the VM until it ends; returns why.
    pub fn run(mut self) -> Result<ExitReason, VmError> {
        kick::install_handler().map_err(io_err("installing the vCPU kick signal handler"))?;
        let signals = ControlSignals::block()?;
        let input = self.serial_input.take().unwrap_or(SerialInput::None);
        let _raw_terminal = if matches!(input, SerialInput::Stdin) {
            RawTerminal::stdin()
        } else {
            None
        };

        // A VM without virtio devices has nothing for an I/O thread to serve.
        let pci = &self.devices.pci;
        let _io_thread = if pci.processors.is_empty() && pci.backend_fds.is_empty() {
            None
        } else {
            let role = if self.cfg.machine.vsock.is_some() {
                confine::Role::IoVsock
            } else {
                confine::Role::Io
            };
            Some(
                crate::io_thread::IoThread::spawn(
                    pci.processors.clone(),
                    pci.backend_fds.clone(),
                    role,
                )
                .map_err(io_err("starting the I/O thread"))?,
            )
        };
        // A restored VM's queue servers (virtiofsd) get their queues now that its vCPUs are
        // about to run, not while it was built (a migration's sender may still have
        // cancelled); a VM restored paused gets them from VmHandle::resume.
        if !self.handle.gate.is_paused() {
            self.handle.snapshot.devices.resume_external();
        }
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for runner in self.runners {
            let name = format!("vcpu{}", runner.id);
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    crate::confinement::enter(confine::Role::Vcpu);
                    runner.run()
                })
                .map_err(io_err("spawning a vCPU thread"))?;
            threads.push(handle);
        }
        {
            use std::os::unix::thread::JoinHandleExt;
            let mut ids = self
                .handle
                .vcpu_threads
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ids.extend(threads.iter().map(|t| t.as_pthread_t()));
        }

        // The migration thread starts before this thread confines itself: its role has
        // sockets, which the main thread's has not. Without a handle nobody can ask for a
        // migration, and the VM saves the thread.
        if self.handle_taken.load(Ordering::Relaxed) {
            crate::migration::spawn_worker(self.handle.clone())
                .map_err(io_err("starting the migration thread"))?;
        }
        if let Some(started) = self.on_started.take() {
            started();
        }
        crate::confinement::enter(confine::Role::Main);
        let result = crate::event_loop::run(
            &self.exit,
            signals,
            self.devices.legacy.serial.clone(),
            input,
            &self.handle,
        );
        self.stop.store(true, Ordering::Release);
        self.handle.migration.close();
        self.handle.release_vcpus_for_exit();
        self.handle.kick_vcpus();
        for t in threads {
            let _ = t.join();
        }
        self.handle
            .vcpu_threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(uds) = self.cfg.machine.vsock.as_ref().map(|v| &v.uds) {
            // Only stale from now on; a later VM would replace it anyway.
            let _ = std::fs::remove_file(uds);
        }
        self.devices.shares.stop();
        result?;
        Ok(self.exit.reason().unwrap_or(ExitReason::Stopped))
    }
}
