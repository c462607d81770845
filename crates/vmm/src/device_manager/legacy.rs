//! The legacy devices on the port-I/O bus: COM1, the i8042 (reset line and Ctrl-Alt-Del),
//! the CMOS/RTC, the ACPI PM block, the debug-exit port and, without a PIT, the port 0x61
//! latch; with their interrupt lines (irqfds) and the ACPI power button's.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use arch::layout;
use arch::memory_map::RamLayout;
use devices::acpi_pm::AcpiPm;
use devices::cmos::{Cmos, CmosArgs, WallClock, CMOS_LEN, CMOS_PORT};
use devices::debug_exit::{DebugExit, DEBUG_EXIT_LEN, DEBUG_EXIT_PORT};
use devices::i8042::{I8042Args, I8042Port, I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use devices::serial::{Serial, SerialArgs, SERIAL_PORT_LEN};
use devices::{Bus, Persist, VmExit};

use crate::error::{io_err, kvm_err, VmError};
use crate::snapshot::{DeviceStates, SnapshotError};

/// The legacy devices other parts of the VMM reach: the event loop feeds COM1, the
/// control handle presses Ctrl-Alt-Del and the power button, snapshots save all three.
pub(crate) struct LegacyDevices {
    pub serial: Arc<Mutex<Serial>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub cmos: Arc<Mutex<Cmos>>,
    /// irqfd of the ACPI Generic Event Device (the power button).
    pub power_button: Arc<EventFd>,
}

/// What the legacy devices are built from.
pub(crate) struct LegacyArgs<'a> {
    pub vm: &'a VmFd,
    pub pio: &'a Bus,
    pub exit: &'a VmExit,
    pub layout: &'a RamLayout,
    /// Where COM1's output goes.
    pub serial_out: Box<dyn Write + Send>,
    /// Whether the VM has KVM's PIT (which then owns port 0x61).
    pub with_pit: bool,
}

/// A fresh eventfd wired to `gsi`.
fn irq_line(vm: &VmFd, gsi: u32, what: &'static str, flags: i32) -> Result<EventFd, VmError> {
    let fd = EventFd::new(flags).map_err(io_err("eventfd"))?;
    vm.register_irqfd(&fd, gsi).map_err(kvm_err(what))?;
    Ok(fd)
}

impl LegacyDevices {
    /// Builds the devices, new or from `saved`, and puts them on the port-I/O bus.
    pub fn attach(args: LegacyArgs<'_>, saved: Option<&DeviceStates>) -> Result<Self, VmError> {
        let LegacyArgs {
            vm,
            pio,
            exit,
            layout,
            serial_out,
            with_pit,
        } = args;
        let serial_irq = irq_line(vm, layout::COM1_IRQ, "KVM_IRQFD (serial)", 0)?;
        let serial = match saved {
            Some(states) => Serial::restore(
                SerialArgs {
                    interrupt: serial_irq,
                    output: serial_out,
                },
                &states.serial,
            )
            .map_err(SnapshotError::from)?,
            None => Serial::new(serial_irq, serial_out),
        };
        let serial = Arc::new(Mutex::new(serial));
        if !with_pit {
            let port61 = Arc::new(Mutex::new(devices::port61::Port61));
            pio.insert(port61, u64::from(devices::port61::PORT61), 1)?;
        }
        pio.insert(
            serial.clone(),
            u64::from(layout::COM1_PORT),
            u64::from(SERIAL_PORT_LEN),
        )?;
        let power_button = irq_line(
            vm,
            arch::acpi::GED_GSI,
            "KVM_IRQFD (power button)",
            libc::EFD_NONBLOCK,
        )?;
        let i8042 = Arc::new(Mutex::new(i8042(vm, exit, saved)?));
        for (port, is_command) in [(I8042_DATA_PORT, false), (I8042_COMMAND_PORT, true)] {
            let dev = Arc::new(Mutex::new(I8042Port {
                controller: i8042.clone(),
                is_command,
            }));
            pio.insert(dev, u64::from(port), 1)?;
        }
        let cmos = Arc::new(Mutex::new(cmos(layout, saved)?));
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
        Ok(Self {
            serial,
            i8042,
            cmos,
            power_button: Arc::new(power_button),
        })
    }
}

/// The i8042 on IRQ 1, new or from its saved state.
fn i8042(vm: &VmFd, exit: &VmExit, saved: Option<&DeviceStates>) -> Result<I8042, VmError> {
    let irq = irq_line(vm, 1, "KVM_IRQFD (keyboard)", libc::EFD_NONBLOCK)?;
    Ok(match saved {
        Some(states) => I8042::restore(
            I8042Args {
                exit: exit.clone(),
                irq: Some(irq),
            },
            &states.i8042,
        )
        .map_err(SnapshotError::from)?,
        None => I8042::new(exit.clone()).with_interrupt(irq),
    })
}

/// The CMOS with the RAM sizes of `layout`, or from its saved state (its clock then reads
/// the host's wall clock, as the guest's did before).
fn cmos(layout: &RamLayout, saved: Option<&DeviceStates>) -> Result<Cmos, VmError> {
    Ok(match saved {
        Some(states) => Cmos::restore(
            CmosArgs {
                clock: WallClock::now,
            },
            &states.cmos,
        )
        .map_err(SnapshotError::from)?,
        None => Cmos::new(layout.low_end(), layout.total() - layout.low_end()),
    })
}
