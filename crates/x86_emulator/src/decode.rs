//! Fetch and decode the instruction at RIP, dispatch it to its handler, and write back the
//! state the handler changed (or deliver the exception it raised).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::cpu::VcpuState;
use crate::guest_virt::{Access, AccessError, GuestVirt, Privilege};
use crate::segments::cpl;
use crate::GuestMemory;
use crate::{bits, cmpxchg16b, control_flow, fpu, misc, system, xsave};
use crate::{EmulationError, Exception, Failure, Outcome};

const MAX_INSTRUCTION_LEN: usize = 15;
const CR0_PE: u64 = 1;
const RFLAGS_VM: u64 = 1 << 17;

/// Everything a handler works on: the decoded instruction and the vCPU state, which the
/// handler changes in place; [`emulate_at_rip`] writes back what it marks dirty.
pub struct Ctx<'a> {
    pub vcpu: &'a mut dyn VcpuState,
    pub virt: GuestVirt<'a>,
    pub insn: Instruction,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub sregs_dirty: bool,
}

impl Ctx<'_> {
    pub fn name(&self) -> String {
        format!("{:?}", self.insn.mnemonic()).to_lowercase()
    }

    pub fn cpl(&self) -> u8 {
        cpl(&self.sregs)
    }

    /// Who a data access at the current CPL is.
    pub fn privilege(&self) -> Privilege {
        if self.cpl() == 3 {
            Privilege::User
        } else {
            Privilege::Supervisor
        }
    }

    pub fn long_mode(&self) -> bool {
        self.sregs.cs.l == 1
    }

    pub fn mode_error(&self, mode: &'static str) -> Failure {
        Failure::Fail(EmulationError::Mode {
            what: self.name(),
            mode,
        })
    }

    /// Value of a general-purpose register (any width, zero-extended).
    pub fn gpr(&self, reg: Register) -> Option<u64> {
        let r = &self.regs;
        let full = match reg.full_register() {
            Register::RAX => r.rax,
            Register::RCX => r.rcx,
            Register::RDX => r.rdx,
            Register::RBX => r.rbx,
            Register::RSP => r.rsp,
            Register::RBP => r.rbp,
            Register::RSI => r.rsi,
            Register::RDI => r.rdi,
            Register::R8 => r.r8,
            Register::R9 => r.r9,
            Register::R10 => r.r10,
            Register::R11 => r.r11,
            Register::R12 => r.r12,
            Register::R13 => r.r13,
            Register::R14 => r.r14,
            Register::R15 => r.r15,
            Register::RIP => r.rip,
            _ => return None,
        };
        Some(match reg.size() {
            8 => full,
            4 => full & 0xffff_ffff,
            2 => full & 0xffff,
            _ => return None,
        })
    }

    /// Linear address of the instruction's memory operand.
    pub fn memory_address(&self) -> Result<u64, Failure> {
        let insn = &self.insn;
        let mut addr = insn.memory_displacement64();
        if insn.memory_base() != Register::None && insn.memory_base() != Register::RIP {
            addr = addr.wrapping_add(self.register(insn.memory_base())?);
        }
        if insn.memory_index() != Register::None {
            let index = self.register(insn.memory_index())?;
            addr = addr.wrapping_add(index.wrapping_mul(u64::from(insn.memory_index_scale())));
        }
        addr &= match insn.memory_base().size().max(insn.memory_index().size()) {
            4 => 0xffff_ffff,
            2 => 0xffff,
            _ => u64::MAX,
        };
        let base = match insn.memory_segment() {
            Register::FS => self.sregs.fs.base,
            Register::GS => self.sregs.gs.base,
            _ if self.long_mode() => 0,
            Register::CS => self.sregs.cs.base,
            Register::SS => self.sregs.ss.base,
            Register::ES => self.sregs.es.base,
            _ => self.sregs.ds.base,
        };
        let linear = base.wrapping_add(addr);
        Ok(if self.long_mode() {
            linear
        } else {
            linear & 0xffff_ffff
        })
    }

    fn register(&self, reg: Register) -> Result<u64, Failure> {
        self.gpr(reg).ok_or_else(|| {
            Failure::Fail(EmulationError::Invalid {
                what: self.name(),
                why: format!("address register {reg:?}"),
            })
        })
    }

    /// Write a 64-, 32- or 16-bit general-purpose register as the CPU does (32-bit writes
    /// zero the upper half, 16-bit writes keep the rest).
    pub fn set_gpr(&mut self, reg: Register, value: u64) -> Result<(), Failure> {
        let size = reg.size();
        let slot = match reg.full_register() {
            Register::RAX => &mut self.regs.rax,
            Register::RCX => &mut self.regs.rcx,
            Register::RDX => &mut self.regs.rdx,
            Register::RBX => &mut self.regs.rbx,
            Register::RSP => &mut self.regs.rsp,
            Register::RBP => &mut self.regs.rbp,
            Register::RSI => &mut self.regs.rsi,
            Register::RDI => &mut self.regs.rdi,
            Register::R8 => &mut self.regs.r8,
            Register::R9 => &mut self.regs.r9,
            Register::R10 => &mut self.regs.r10,
            Register::R11 => &mut self.regs.r11,
            Register::R12 => &mut self.regs.r12,
            Register::R13 => &mut self.regs.r13,
            Register::R14 => &mut self.regs.r14,
            Register::R15 => &mut self.regs.r15,
            _ => {
                return Err(Failure::Fail(EmulationError::Invalid {
                    what: format!("{:?}", self.insn.mnemonic()).to_lowercase(),
                    why: format!("destination register {reg:?}"),
                }))
            }
        };
        *slot = match size {
            8 => value,
            4 => value & 0xffff_ffff,
            2 => (*slot & !0xffff) | (value & 0xffff),
            _ => {
                return Err(Failure::Fail(EmulationError::Invalid {
                    what: format!("{:?}", self.insn.mnemonic()).to_lowercase(),
                    why: format!("destination register {reg:?}"),
                }))
            }
        };
        Ok(())
    }

    /// Value of operand `n`: a general-purpose register or memory of the register's size.
    pub fn source_operand(&self, n: u32, size: usize) -> Result<u64, Failure> {
        match self.insn.op_kind(n) {
            OpKind::Register => self.register(self.insn.op_register(n)),
            OpKind::Memory => {
                let addr = self.memory_address()?;
                Ok(self.virt.read_sized(addr, size, self.privilege())?)
            }
            other => Err(Failure::Fail(EmulationError::Invalid {
                what: self.name(),
                why: format!("operand kind {other:?}"),
            })),
        }
    }

    /// Move RIP past the instruction.
    pub fn advance(&mut self) {
        self.regs.rip = self.insn.next_ip();
        if !self.long_mode() {
            self.regs.rip &= 0xffff_ffff;
        }
    }
}

fn cpu_mode(sregs: &kvm_sregs, regs: &kvm_regs) -> (u32, &'static str) {
    if sregs.cr0 & CR0_PE == 0 {
        (16, "real mode")
    } else if regs.rflags & RFLAGS_VM != 0 {
        (16, "virtual-8086 mode")
    } else if sregs.cs.l == 1 {
        (64, "64-bit mode")
    } else if sregs.cs.db == 1 {
        (32, "32-bit protected mode")
    } else {
        (16, "16-bit protected mode")
    }
}

/// Emulate the instruction at the vCPU's RIP. On success the vCPU is ready to resume: past
/// the instruction, or entering the handler of the exception the instruction raised.
pub fn emulate_at_rip(
    vcpu: &mut dyn VcpuState,
    mem: &GuestMemory,
) -> Result<Outcome, EmulationError> {
    let regs = vcpu.regs()?;
    let sregs = vcpu.sregs()?;
    let (bitness, mode) = cpu_mode(&sregs, &regs);
    if mode == "real mode" || mode == "virtual-8086 mode" {
        return Err(EmulationError::Mode {
            what: "any instruction".into(),
            mode,
        });
    }
    let virt = GuestVirt::new(mem, &sregs);
    let linear = if bitness == 64 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    };
    let who = if cpl(&sregs) == 3 {
        Privilege::User
    } else {
        Privilege::Supervisor
    };
    let bytes = fetch(&virt, linear, who)?;
    let mut decoder = Decoder::with_ip(bitness, &bytes, regs.rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(EmulationError::Decode { bytes });
    }
    let mut ctx = Ctx {
        vcpu,
        virt,
        insn,
        regs,
        sregs,
        sregs_dirty: false,
    };
    let name = ctx.name();
    match dispatch(&mut ctx) {
        Ok(()) => {
            commit(&mut ctx)?;
            Ok(Outcome::Emulated(name))
        }
        Err(Failure::Raise(exception)) => {
            // Faults leave RIP on the instruction; discard what the handler changed.
            ctx.regs = regs;
            ctx.sregs = sregs;
            ctx.sregs_dirty = false;
            match control_flow::raise(&mut ctx, exception) {
                Ok(()) => {
                    commit(&mut ctx)?;
                    Ok(Outcome::Raised(name, exception))
                }
                Err(Failure::Fail(e)) => Err(e),
                Err(Failure::Raise(nested)) => Err(EmulationError::Invalid {
                    what: name,
                    why: format!("{nested:?} while delivering {exception:?}"),
                }),
            }
        }
        Err(Failure::Fail(e)) => Err(e),
    }
}

fn commit(ctx: &mut Ctx) -> Result<(), EmulationError> {
    if ctx.sregs_dirty {
        ctx.vcpu.set_sregs(&ctx.sregs)?;
    }
    ctx.vcpu.set_regs(&ctx.regs)?;
    Ok(())
}

/// Up to 15 bytes at `linear`, stopping at the first page that cannot be read (the decoder
/// says whether what was read is a whole instruction).
fn fetch(virt: &GuestVirt, linear: u64, who: Privilege) -> Result<Vec<u8>, EmulationError> {
    let mut bytes = Vec::with_capacity(MAX_INSTRUCTION_LEN);
    let first_page = (0x1000 - (linear & 0xfff)).min(MAX_INSTRUCTION_LEN as u64) as usize;
    for (start, len) in [
        (0, first_page),
        (first_page, MAX_INSTRUCTION_LEN - first_page),
    ] {
        if len == 0 {
            continue;
        }
        let at = linear.wrapping_add(start as u64);
        let mut buf = vec![0u8; len];
        match virt
            .translate(at, Access::Fetch, who)
            .and_then(|_| virt.read(at, &mut buf, who))
        {
            Ok(()) => bytes.extend_from_slice(&buf),
            Err(AccessError::Fault(fault)) if start == 0 => {
                return Err(EmulationError::Fetch { linear, fault })
            }
            Err(AccessError::NotRam(phys)) if start == 0 => {
                return Err(EmulationError::NotRam(phys))
            }
            Err(_) => break,
        }
    }
    Ok(bytes)
}

fn dispatch(ctx: &mut Ctx) -> Result<(), Failure> {
    match ctx.insn.mnemonic() {
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => control_flow::iret(ctx),
        Mnemonic::Int3 => control_flow::int3(ctx),
        Mnemonic::Int => control_flow::int_n(ctx),
        Mnemonic::Sysret | Mnemonic::Sysretq => control_flow::sysret(ctx),
        Mnemonic::Swapgs => system::swapgs(ctx),
        Mnemonic::Clac | Mnemonic::Stac => system::clac_stac(ctx),
        Mnemonic::Rdpid => system::rdpid(ctx),
        Mnemonic::Rdfsbase | Mnemonic::Rdgsbase | Mnemonic::Wrfsbase | Mnemonic::Wrgsbase => {
            system::fsgsbase(ctx)
        }
        Mnemonic::Popcnt | Mnemonic::Lzcnt | Mnemonic::Tzcnt => bits::count(ctx),
        Mnemonic::Wait => fpu::fwait(ctx),
        Mnemonic::Lfence
        | Mnemonic::Mfence
        | Mnemonic::Sfence
        | Mnemonic::Prefetchw
        | Mnemonic::Prefetch
        | Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Clflush
        | Mnemonic::Clflushopt
        | Mnemonic::Clwb => misc::ordering_no_op(ctx),
        Mnemonic::Rdtscp => misc::rdtscp(ctx),
        Mnemonic::Rdrand | Mnemonic::Rdseed => misc::random(ctx),
        Mnemonic::Rdpru => misc::rdpru(ctx),
        Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr => fpu::mxcsr(ctx),
        Mnemonic::Cmpxchg16b => cmpxchg16b::cmpxchg16b(ctx),
        Mnemonic::Xsave
        | Mnemonic::Xsave64
        | Mnemonic::Xsaveopt
        | Mnemonic::Xsaveopt64
        | Mnemonic::Xsavec
        | Mnemonic::Xsavec64
        | Mnemonic::Xrstor
        | Mnemonic::Xrstor64 => xsave::xsave_family(ctx),
        Mnemonic::Xgetbv => xsave::xgetbv(ctx),
        _ => Err(Failure::Fail(EmulationError::Unsupported(ctx.name()))),
    }
}

/// A raised exception's vector and error code.
pub fn vector_of(e: Exception) -> (u8, Option<u32>) {
    match e {
        Exception::InvalidOpcode => (6, None),
        Exception::DeviceNotAvailable => (7, None),
        Exception::MathFault => (16, None),
        Exception::NotPresent(sel) => (11, Some(u32::from(sel))),
        Exception::StackFault(code) => (12, Some(u32::from(code))),
        Exception::GeneralProtection(code) => (13, Some(u32::from(code))),
        Exception::PageFault(pf) => (14, Some(pf.error_code)),
    }
}
