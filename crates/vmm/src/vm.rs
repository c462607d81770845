//! Assembling a VM on KVM and running it until it ends.

use std::io::Write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use vmm_sys_util::eventfd::EventFd;

use arch::layout;
use arch::memory_map::RamLayout;
use arch::GuestMemory;
use devices::acpi_pm::AcpiPm;
use devices::cmos::{Cmos, CMOS_LEN, CMOS_PORT};
use devices::debug_exit::{DebugExit, DEBUG_EXIT_LEN, DEBUG_EXIT_PORT};
use devices::i8042::{I8042Port, I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use devices::serial::{Serial, SERIAL_PORT_LEN};
use devices::{Bus, ExitReason, Persist, VmExit};

use crate::config::{SerialMode, VmConfig};
use crate::console::RawTerminal;
use crate::console_log::{ConsoleLog, CONSOLE_LOG_LIMIT};
use crate::console_socket::ConsoleSocket;
use crate::event_loop::{ControlSignals, SerialInput};
use crate::kick;
use crate::vcpu::{self, VcpuRunner};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and accessible to this user?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM lacks a capability vessel needs: {0:?}")]
    MissingCapability(Cap),
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{cpus} vCPUs requested but this host's KVM allows at most {max}")]
    TooManyCpus { cpus: u8, max: usize },
    #[error("invalid memory size: {0}")]
    Memory(#[from] arch::memory_map::MemoryMapError),
    #[error("cannot allocate {size} bytes of guest memory: {source}")]
    GuestMemory {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is a {kind}, not a regular file")]
    NotRegularFile {
        what: &'static str,
        path: std::path::PathBuf,
        kind: &'static str,
    },
    #[error("{what} {path} is {size} bytes, more than the {limit} bytes allowed")]
    BootFileTooLarge {
        what: &'static str,
        path: std::path::PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot open serial output {path}: {source}")]
    SerialFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Boot(#[from] arch::boot::BootError),
    #[error(transparent)]
    Acpi(#[from] arch::acpi::AcpiError),
    #[error(transparent)]
    MpTable(#[from] arch::mptable::MpTableError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error("device set-up: {0}")]
    Bus(#[from] devices::BusError),
    #[error("disk {path}: {source}")]
    Disk {
        path: std::path::PathBuf,
        #[source]
        source: block::Error,
    },
    #[error("{0}")]
    RateLimiter(#[source] virtio::rate_limiter::RateLimiterError),
    #[error("disk {path}: its size ({size} bytes) is not a multiple of 512-byte sectors")]
    DiskSize { path: std::path::PathBuf, size: u64 },
    #[error("disk id '{0}' is longer than the 20 bytes virtio-blk allows")]
    DiskId(String),
    #[error("network interface {index} ({mode}): {source}")]
    Nic {
        index: usize,
        mode: String,
        #[source]
        source: net::NetError,
    },
    #[error("cannot open console output {path}: {source}")]
    ConsoleFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock: {0}")]
    Vsock(#[source] virtio::vsock::VsockError),
    #[error("shared folder: {0}")]
    Shares(#[from] crate::shares::SharesError),
    #[error("shared guest memory for shared folders: {0}")]
    SharedMemory(#[from] crate::shared_memory::SharedMemoryError),
    #[error("balloon: {0}")]
    Balloon(String),
    #[error("PCI: {0}")]
    Pci(#[from] crate::pci_devices::PciSetupError),
    #[error(transparent)]
    EventLoop(#[from] crate::event_loop::EventLoopError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

/// A VM, built and ready to run.
pub struct Vm {
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    pci: crate::pci_devices::PciPlatform,
    /// Guest RAM, kept mapped for as long as the KVM VM that was given its addresses.
    _mem: GuestMemory,
    exit: VmExit,
    serial: Arc<Mutex<Serial>>,
    serial_input: Option<SerialInput>,
    runners: Vec<VcpuRunner>,
    stop: Arc<AtomicBool>,
    handle: crate::control::VmHandle,
    /// The vsock device's listening socket, removed when the VM ends (the device itself
    /// stays referenced by the PCI buses until the process exits).
    vsock_uds: Option<std::path::PathBuf>,
    /// The shares' virtiofsd processes, stopped when the VM ends.
    shares: crate::shares::ShareDaemons,
    /// Called once the vCPU threads run (a migration receiver confirms the resume).
    on_started: Option<Box<dyn FnOnce() + Send>>,
}

/// Where a restored VM's RAM comes from.
#[derive(Clone, Copy)]
enum RestoreMemory<'a> {
    /// A snapshot's memory file, read into fresh RAM.
    File(&'a std::path::Path),
    /// RAM already filled (by a migration stream), laid out for the snapshot's machine.
    Filled(&'a GuestMemory),
}

impl Vm {
    /// Create the VM: KVM objects, guest memory, kernel and boot tables, devices, vCPUs.
    pub fn new(cfg: &VmConfig) -> Result<Self, VmError> {
        Self::build(cfg, None)
    }

    /// Recreate the VM a snapshot was taken of, with its state and `mem_file` as its RAM,
    /// ready to run from where it was. `cfg` gives the host side (serial output, and the
    /// disks that may follow backing files outside their directory); the machine's shape
    /// comes from the snapshot, which must already be validated.
    pub fn restore(
        cfg: &VmConfig,
        snapshot: &crate::snapshot::VmSnapshot,
        mem_file: &std::path::Path,
    ) -> Result<Self, VmError> {
        Self::restore_from(cfg, snapshot, RestoreMemory::File(mem_file))
    }

    /// Recreate a VM received by live migration: its state and its RAM, already filled.
    pub fn restore_received(
        cfg: &VmConfig,
        received: &crate::migration::Received,
    ) -> Result<Self, VmError> {
        Self::restore_from(
            cfg,
            &received.snapshot,
            RestoreMemory::Filled(&received.mem),
        )
    }

    /// Runs `f` once the VM's vCPU threads have started.
    pub fn on_started(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.on_started = Some(f);
    }

    fn restore_from(
        cfg: &VmConfig,
        snapshot: &crate::snapshot::VmSnapshot,
        memory: RestoreMemory<'_>,
    ) -> Result<Self, VmError> {
        snapshot.check_disk_files()?;
        let mut disks = Vec::new();
        for d in &snapshot.machine.disks {
            let format = match &d.format {
                Some(name) => {
                    Some(
                        name.parse::<block::Format>()
                            .map_err(|source| VmError::Disk {
                                path: d.path.clone(),
                                source,
                            })?,
                    )
                }
                None => None,
            };
            disks.push(crate::config::DiskConfig {
                path: d.path.clone(),
                read_only: d.read_only,
                id: d.id.clone(),
                format,
                // A snapshot file cannot grant this: images it names follow only names
                // inside their own directory, unless the host's own configuration grants
                // it for that disk (a resumed VM's definition).
                allow_external_backing: cfg
                    .disks
                    .iter()
                    .any(|h| h.path == d.path && h.allow_external_backing),
                // Flushes are honoured after a restore whatever the saved VM did: the
                // guest's acked features stay a subset of the offered ones.
                honour_flush: true,
                // Limits are not saved in snapshots.
                rate_limit: Default::default(),
            });
        }
        let nics = snapshot
            .machine
            .nics
            .iter()
            .map(crate::snapshot::SavedNic::to_config)
            .collect::<Result<_, _>>()?;
        let cfg = VmConfig {
            memory: snapshot.machine.memory,
            cpus: snapshot.machine.cpus,
            disks,
            nics,
            rng: snapshot.machine.rng,
            console2: snapshot.machine.console.clone(),
            vsock: snapshot.machine.vsock.clone(),
            // A VM with shares is never snapshotted (unsupported_device).
            shares: Vec::new(),
            balloon: snapshot.machine.balloon,
            mmds: None,
            ..cfg.clone()
        };
        Self::build(&cfg, Some((snapshot, memory)))
    }

    fn build(
        cfg: &VmConfig,
        restore: Option<(&crate::snapshot::VmSnapshot, RestoreMemory<'_>)>,
    ) -> Result<Self, VmError> {
        // Each NIC's MAC is chosen once: the device and the snapshot's record share it.
        let cfg = &crate::snapshot::with_nic_macs(cfg);
        let layout = RamLayout::new(cfg.memory)?;
        let (kernel, initrd) = if restore.is_some() {
            (Vec::new(), None)
        } else {
            use crate::boot_files::{read_boot_file, MAX_INITRD_BYTES, MAX_KERNEL_BYTES};
            let kernel = read_boot_file(&cfg.kernel, "kernel", MAX_KERNEL_BYTES)?;
            let initrd_limit = MAX_INITRD_BYTES.min(cfg.memory);
            let initrd = match &cfg.initrd {
                Some(p) => Some(read_boot_file(p, "initrd", initrd_limit)?),
                None => None,
            };
            (kernel, initrd)
        };
        let mut console_socket = None;
        let serial_out: Box<dyn Write + Send> = match &cfg.serial {
            SerialMode::Stdio => Box::new(std::io::stdout()),
            SerialMode::File(path) => {
                Box::new(ConsoleLog::open(path, CONSOLE_LOG_LIMIT).map_err(|source| {
                    VmError::SerialFile {
                        path: path.clone(),
                        source,
                    }
                })?)
            }
            SerialMode::None => Box::new(std::io::sink()),
            SerialMode::Background { log, socket } => {
                let (sock, out) =
                    ConsoleSocket::bind(socket, log).map_err(|source| VmError::SerialFile {
                        path: socket.clone(),
                        source,
                    })?;
                console_socket = Some(sock);
                Box::new(out)
            }
        };

        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for cap in [
            Cap::Irqchip,
            Cap::Irqfd,
            Cap::Ioeventfd,
            Cap::UserMemory,
            Cap::SetTssAddr,
            Cap::ExtCpuid,
            Cap::ImmediateExit,
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(cap));
            }
        }
        let max_cpus = kvm
            .get_max_vcpus()
            .min(usize::from(crate::config::MAX_CPUS));
        if usize::from(cfg.cpus) > max_cpus || cfg.cpus == 0 {
            return Err(VmError::TooManyCpus {
                cpus: cfg.cpus,
                max: max_cpus,
            });
        }
        let saved_virtio = restore.map(|(snapshot, _)| snapshot.devices.virtio.as_slice());
        let crate::virtio_devices::VirtioDevices {
            devices: mut virtio_devices,
            balloon,
            limiters,
        } = crate::virtio_devices::virtio_devices(cfg, saved_virtio)?;
        // virtiofsd starts now, before the VMM is confined.
        let (share_devices, shares) = crate::shares::start(&cfg.shares)?;
        virtio_devices.extend(share_devices);
        let vm = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
        vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;

        let ranges: Vec<_> = layout
            .ranges
            .iter()
            .map(|&(a, s)| (vm_memory::GuestAddress(a), s as usize))
            .collect();
        let mem = match restore {
            // Laid out by the receiver from the same machine (`RamLayout` of its size).
            Some((_, RestoreMemory::Filled(mem))) => mem.clone(),
            // The snapshot's memory file, mapped copy-on-write (a VM with shares is never
            // snapshotted).
            Some((_, RestoreMemory::File(mem_file))) => {
                crate::snapshot::restore_memory(&ranges, mem_file)?.0
            }
            None if cfg.shares.is_empty() => {
                GuestMemory::from_ranges(&ranges).map_err(|source| VmError::GuestMemory {
                    size: cfg.memory,
                    source,
                })?
            }
            // virtiofsd maps guest memory itself.
            None => crate::shared_memory::shared_guest_memory(&ranges)?,
        };
        for (slot, region) in mem.iter().enumerate() {
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the host mapping described belongs to `mem`, which the Vm keeps alive
            // for as long as the KVM VM exists (both are fields of Vm; vCPU threads are
            // joined before either is dropped).
            unsafe { vm.set_user_memory_region(region_desc) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }

        let (entry, with_pit) = match restore {
            Some((snapshot, _)) => (None, snapshot.machine.pit),
            None => {
                // The PCI host bridge (`\_SB_.PCI0`) and its ECAM window (MCFG): without
                // them an ACPI guest such as Linux scans no PCI bus and sees none of the
                // virtio devices.
                let acpi = arch::acpi::AcpiConfig {
                    cpus: cfg.cpus,
                    extra_dsdt: arch::acpi_pci::host_bridge_aml(arch::layout::PCI_ECAM_START),
                    extra_tables: vec![arch::acpi_pci::mcfg(arch::layout::PCI_ECAM_START)],
                };
                let acpi = arch::acpi::setup_acpi(&mem, &acpi)?;
                arch::mptable::setup_mptable(&mem, cfg.cpus)?;
                let initrd_name = cfg
                    .initrd
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let boot = arch::boot::load(
                    &mem,
                    &layout,
                    &arch::boot::BootConfig {
                        kernel: &kernel,
                        initrd: initrd.as_deref(),
                        initrd_name: &initrd_name,
                        kernel_name: &cfg.kernel.to_string_lossy(),
                        cmdline: &cfg.cmdline,
                        rsdp_addr: acpi.rsdp_addr,
                        acpi_end: acpi.end,
                    },
                )?;
                (Some(boot.entry), cfg.pit.wanted(boot.format))
            }
        };
        if with_pit {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        }

        let exit = VmExit::new().map_err(io_err("eventfd"))?;
        let serial_irq = EventFd::new(0).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&serial_irq, layout::COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD (serial)"))?;
        let serial = match restore {
            Some((snapshot, _)) => Serial::restore(
                devices::serial::SerialArgs {
                    interrupt: serial_irq,
                    output: serial_out,
                },
                &snapshot.devices.serial,
            )
            .map_err(crate::snapshot::SnapshotError::from)?,
            None => Serial::new(serial_irq, serial_out),
        };
        let serial = Arc::new(Mutex::new(serial));
        let pio = Bus::new();
        if !with_pit {
            pio.insert(
                Arc::new(Mutex::new(devices::port61::Port61)),
                u64::from(devices::port61::PORT61),
                1,
            )?;
        }
        pio.insert(
            serial.clone(),
            u64::from(layout::COM1_PORT),
            u64::from(SERIAL_PORT_LEN),
        )?;
        let power_button = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&power_button, arch::acpi::GED_GSI)
            .map_err(kvm_err("KVM_IRQFD (power button)"))?;
        let kbd_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&kbd_irq, 1)
            .map_err(kvm_err("KVM_IRQFD (keyboard)"))?;
        let keyboard = match restore {
            Some((snapshot, _)) => I8042::restore(
                devices::i8042::I8042Args {
                    exit: exit.clone(),
                    irq: Some(kbd_irq),
                },
                &snapshot.devices.i8042,
            )
            .map_err(crate::snapshot::SnapshotError::from)?,
            None => I8042::new(exit.clone()).with_interrupt(kbd_irq),
        };
        let i8042 = Arc::new(Mutex::new(keyboard));
        for (port, is_command) in [(I8042_DATA_PORT, false), (I8042_COMMAND_PORT, true)] {
            let dev = Arc::new(Mutex::new(I8042Port {
                controller: i8042.clone(),
                is_command,
            }));
            pio.insert(dev, u64::from(port), 1)?;
        }
        let above_4g = layout.total() - layout.low_end();
        let rtc = match restore {
            Some((snapshot, _)) => Cmos::restore(
                devices::cmos::CmosArgs {
                    clock: devices::cmos::WallClock::now,
                },
                &snapshot.devices.cmos,
            )
            .map_err(crate::snapshot::SnapshotError::from)?,
            None => Cmos::new(layout.low_end(), above_4g),
        };
        let cmos = Arc::new(Mutex::new(rtc));
        pio.insert(cmos.clone(), u64::from(CMOS_PORT), u64::from(CMOS_LEN))?;
        pio.insert(
            Arc::new(Mutex::new(DebugExit::new(exit.clone()))),
            u64::from(DEBUG_EXIT_PORT),
            u64::from(DEBUG_EXIT_LEN),
        )?;
        pio.insert(
            Arc::new(Mutex::new(AcpiPm::new(exit.clone()))),
            u64::from(layout::ACPI_PM_PORT_BASE),
            u64::from(layout::ACPI_PM_PORT_LEN),
        )?;
        let mmio = Arc::new(Bus::new());
        let pci = crate::pci_devices::setup(&vm, &mem, &pio, &mmio, virtio_devices, saved_virtio)?;
        let devices = limiters.into_controls(&pci.processors);
        let pio = Arc::new(pio);

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(crate::control::PauseGate::default());
        let msr_indices = Arc::new(
            kvm.get_msr_index_list()
                .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
                .as_slice()
                .to_vec(),
        );
        let xsave2_size = usize::try_from(vm.check_extension_int(Cap::Xsave2)).unwrap_or(0);
        let fallback = cfg.emulator_fixups.fallback();
        let mut runners = Vec::with_capacity(usize::from(cfg.cpus));
        for id in 0..cfg.cpus {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let entry = if id == 0 { entry } else { None };
            vcpu::configure(&fd, id, cfg.cpus, &supported, tsc_deadline, &mem, entry)?;
            runners.push(VcpuRunner {
                id,
                vcpu: fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                mem: mem.clone(),
                exit: exit.clone(),
                stop: stop.clone(),
                gate: gate.clone(),
                msr_indices: msr_indices.clone(),
                xsave2_size,
                fallback,
            });
        }
        if let Some((snapshot, _)) = restore {
            snapshot.vm.restore(&vm)?;
            for (runner, state) in runners.iter().zip(&snapshot.vcpus) {
                crate::snapshot::restore_vcpu(
                    &runner.vcpu,
                    usize::from(runner.id),
                    state,
                    xsave2_size,
                )?;
            }
        }
        let balloon_control = balloon.and_then(|(index, handle)| {
            let processor = pci.processors.get(index)?.clone();
            Some(crate::BalloonControl::new(handle, processor))
        });
        let snapshot_source = crate::snapshot::SnapshotSource {
            page_map: crate::page_map::PageMap::open(),
            vm: vm.clone(),
            mem: mem.clone(),
            serial: serial.clone(),
            i8042: i8042.clone(),
            cmos,
            virtio: pci.devices.clone(),
            machine: crate::snapshot::MachineState {
                memory: cfg.memory,
                cpus: cfg.cpus,
                pit: with_pit,
                disks: cfg
                    .disks
                    .iter()
                    .map(|d| crate::snapshot::SavedDisk {
                        path: d.path.clone(),
                        read_only: d.read_only,
                        id: d.id.clone(),
                        format: d.format.map(|f| f.name().to_string()),
                    })
                    .collect(),
                nics: cfg
                    .nics
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        crate::snapshot::SavedNic::new(n, crate::snapshot::effective_mac(i, n))
                    })
                    .collect(),
                rng: cfg.rng,
                console: cfg.console2.as_deref().map(crate::snapshot::console_path),
                vsock: cfg.vsock.clone(),
                balloon: cfg.balloon,
            },
            xsave2_size,
            unsupported_device: crate::virtio_devices::unsupported_device(cfg),
        };
        Ok(Self {
            _kvm: kvm,
            _vm: vm,
            pci,
            _mem: mem,
            exit: exit.clone(),
            serial,
            serial_input: Some(match console_socket {
                Some(sock) => SerialInput::Socket(sock),
                None if cfg.serial == SerialMode::Stdio => SerialInput::Stdin,
                None => SerialInput::None,
            }),
            runners,
            stop,
            vsock_uds: cfg.vsock.as_ref().map(|v| v.uds.clone()),
            shares,
            handle: crate::control::VmHandle {
                exit: exit.clone(),
                i8042,
                power_button: Arc::new(power_button),
                gate,
                vcpu_threads: Arc::new(Mutex::new(Vec::new())),
                snapshot: Arc::new(snapshot_source),
                devices: Arc::new(devices),
                balloon: balloon_control,
                migration: Arc::default(),
            },
            on_started: None,
        })
    }

    /// A handle to pause, resume, stop or Ctrl-Alt-Del the VM from other threads.
    pub fn handle(&self) -> crate::control::VmHandle {
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

        let _io_thread = crate::io_thread::IoThread::spawn(
            self.pci.processors.clone(),
            self.pci.backend_fds.clone(),
            if self.vsock_uds.is_some() {
                confine::Role::IoVsock
            } else {
                confine::Role::Io
            },
        )
        .map_err(io_err("starting the I/O thread"))?;
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
        // sockets, which the main thread's has not.
        crate::migration::spawn_worker(self.handle.clone())
            .map_err(io_err("starting the migration thread"))?;
        if let Some(started) = self.on_started.take() {
            started();
        }
        crate::confinement::enter(confine::Role::Main);
        let result =
            crate::event_loop::run(&self.exit, &signals, &self.serial, input, &self.handle);
        self.stop.store(true, Ordering::Release);
        self.handle.migration.close();
        self.handle.resume();
        self.handle.kick_vcpus();
        for t in threads {
            let _ = t.join();
        }
        self.handle
            .vcpu_threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(uds) = &self.vsock_uds {
            // Only stale from now on; a later VM would replace it anyway.
            let _ = std::fs::remove_file(uds);
        }
        self.shares.stop();
        result?;
        Ok(self.exit.reason().unwrap_or(ExitReason::Stopped))
    }
}
