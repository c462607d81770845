//! The XSAVE family (`xrstor`, `xsave`, `xsaveopt`, `xsavec`) and `xgetbv`, against the
//! vCPU's extended state from KVM_GET_XSAVE(2) / KVM_SET_XSAVE.
//!
//! KVM's region uses the standard (non-compacted) format: the 512-byte legacy (FXSAVE) area,
//! the 64-byte header at 512 (XSTATE_BV, XCOMP_BV), and component i >= 2 at its offset from
//! CPUID leaf 0DH; the region is as long as KVM's area for the vCPU, which exceeds 4096 bytes
//! once AMX tile data is enabled (see vmm's KVM adapter, `kvm_vcpu.rs`). Guest memory holds
//! the standard format, or the compacted one (XCOMP_BV bit 63) where components follow each
//! other from offset 576 in index order. Sizes and offsets come from the guest's CPUID
//! ([`XsaveLayout`]); nothing assumes a region size. State a header marks as not in use is
//! written to KVM as explicit initial values (zeros for every component from 2 on), which is
//! the same state.
//!
//! Refused as the CPU would: CR4.OSXSAVE clear (#UD), XSAVEC without the compacted form
//! (#UD), CR0.TS set (#NM), a misaligned area or a bad header or MXCSR (#GP), and an XRSTOR
//! that would load a component the guest disabled in IA32_XFD (#NM, with the components in
//! IA32_XFD_ERR; XSAVE* treat such components as initial, as the CPU does). Refused as an
//! emulation failure (never a panic): an XCR0 with a component the guest's CPUID does not
//! describe, or a KVM region too short for XCR0's components.

use iced_x86::Mnemonic;

use crate::decode::Ctx;
use crate::xsave_layout::{XsaveLayout, EXTENDED, HEADER, LEGACY_COMPONENTS};
use crate::{EmulationError, Exception, Failure};

const COMPACTED: u64 = 1 << 63;
const X87: u64 = 1;
const SSE: u64 = 1 << 1;
const AVX: u64 = 1 << 2;
const MXCSR: usize = 24;
/// MXCSR and MXCSR_MASK, which XSAVE stores together.
const MXCSR_PAIR: std::ops::Range<usize> = MXCSR..MXCSR + 8;
const MXCSR_DEFAULT: u32 = 0x1f80;
/// x87 state in the legacy area: FCW..FDP (0..24) and ST0-ST7 (32..160).
const X87_RANGES: [std::ops::Range<usize>; 2] = [0..24, 32..160];
/// SSE state: XMM0-XMM15.
const SSE_RANGE: std::ops::Range<usize> = 160..416;
const FCW_DEFAULT: u16 = 0x37f;
const CR0_TS: u64 = 1 << 3;
const CR4_OSXSAVE: u64 = 1 << 18;
const MSR_IA32_XFD: u32 = 0x1c4;
const MSR_IA32_XFD_ERR: u32 = 0x1c5;

/// What one XSAVE-family instruction works with.
struct Request {
    layout: XsaveLayout,
    xcr0: u64,
    /// The requested-feature bitmap: XCR0 & EDX:EAX.
    rfbm: u64,
    /// The components of RFBM the guest's IA32_XFD disables.
    disabled: u64,
    /// What the errors name.
    what: String,
}

impl Request {
    /// An emulation failure about the XSAVE region's bounds (checked up front; this is the
    /// belt to those braces).
    fn out_of_bounds(&self, at: usize, len: usize, size: usize) -> Failure {
        Failure::Fail(EmulationError::Invalid {
            what: self.what.clone(),
            why: format!("{len} bytes at {at} lie outside an XSAVE area of {size} bytes"),
        })
    }

    /// Copy `len` bytes from `src[from..]` to `dst[to..]`.
    fn copy(
        &self,
        dst: &mut [u8],
        to: usize,
        src: &[u8],
        from: usize,
        len: usize,
    ) -> Result<(), Failure> {
        let s = src
            .get(from..from + len)
            .ok_or_else(|| self.out_of_bounds(from, len, src.len()))?;
        let size = dst.len();
        dst.get_mut(to..to + len)
            .ok_or_else(|| self.out_of_bounds(to, len, size))?
            .copy_from_slice(s);
        Ok(())
    }

    /// Zero `len` bytes of `buf` at `at`.
    fn zero(&self, buf: &mut [u8], at: usize, len: usize) -> Result<(), Failure> {
        let size = buf.len();
        buf.get_mut(at..at + len)
            .ok_or_else(|| self.out_of_bounds(at, len, size))?
            .fill(0);
        Ok(())
    }
}

/// The little-endian u64 at `at` (0 where `b` is too short; callers check lengths).
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn set_u64(b: &mut [u8], at: usize, value: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&value.to_le_bytes());
    }
}

pub fn xgetbv(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.sregs.cr4 & CR4_OSXSAVE == 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    let value = match ctx.regs.rcx as u32 {
        0 => ctx.vcpu.xcr0()?,
        _ => return Err(Exception::GeneralProtection(0).into()),
    };
    ctx.regs.rax = value & 0xffff_ffff;
    ctx.regs.rdx = value >> 32;
    ctx.advance();
    Ok(())
}

pub fn xsave_family(ctx: &mut Ctx) -> Result<(), Failure> {
    let mnemonic = ctx.insn.mnemonic();
    if ctx.sregs.cr4 & CR4_OSXSAVE == 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    let layout = ctx.vcpu.xsave_layout()?;
    let compacted_save = matches!(mnemonic, Mnemonic::Xsavec | Mnemonic::Xsavec64);
    if compacted_save && !layout.xsavec() {
        return Err(Exception::InvalidOpcode.into());
    }
    if ctx.sregs.cr0 & CR0_TS != 0 {
        return Err(Exception::DeviceNotAvailable.into());
    }
    let linear = ctx.memory_address()?;
    if linear % 64 != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    let xcr0 = ctx.vcpu.xcr0()?;
    let unknown = layout.undescribed(xcr0);
    if unknown != 0 {
        return Err(EmulationError::Invalid {
            what: ctx.name(),
            why: format!(
                "XCR0 {xcr0:#x} enables state components {unknown:#x} that the guest's CPUID \
                 leaf 0xD does not describe"
            ),
        }
        .into());
    }
    let region = ctx.vcpu.xsave()?;
    let needed = layout.standard_size(xcr0);
    if region.len() < needed {
        return Err(EmulationError::Invalid {
            what: ctx.name(),
            why: format!(
                "KVM's XSAVE region has {} bytes; the components of XCR0 {xcr0:#x} need {needed}",
                region.len()
            ),
        }
        .into());
    }
    let rfbm = xcr0 & (ctx.regs.rdx << 32 | (ctx.regs.rax & 0xffff_ffff));
    let capable = rfbm & layout.xfd_capable();
    let disabled = if capable == 0 {
        0
    } else {
        ctx.vcpu.msr(MSR_IA32_XFD)? & capable
    };
    let req = Request {
        layout,
        xcr0,
        rfbm,
        disabled,
        what: ctx.name(),
    };
    match mnemonic {
        Mnemonic::Xrstor | Mnemonic::Xrstor64 => {
            let restored = xrstor(ctx, &req, linear, region)?;
            ctx.vcpu.set_xsave(&restored)?;
        }
        Mnemonic::Xsave | Mnemonic::Xsave64 | Mnemonic::Xsaveopt | Mnemonic::Xsaveopt64 => {
            xsave_standard(ctx, &req, linear, &region)?
        }
        Mnemonic::Xsavec | Mnemonic::Xsavec64 => xsave_compacted(ctx, &req, linear, &region)?,
        _ => return Err(EmulationError::Unsupported(ctx.name()).into()),
    }
    ctx.advance();
    Ok(())
}

/// XRSTOR from guest memory at `linear` into `region`, which is returned.
fn xrstor(
    ctx: &mut Ctx,
    req: &Request,
    linear: u64,
    mut region: Vec<u8>,
) -> Result<Vec<u8>, Failure> {
    let who = ctx.privilege();
    let gp = || Failure::Raise(Exception::GeneralProtection(0));
    let mut header = [0u8; 64];
    ctx.virt
        .read(linear.wrapping_add(HEADER as u64), &mut header, who)?;
    let xstate_bv = u64_at(&header, 0);
    let xcomp_bv = u64_at(&header, 8);
    let compacted = xcomp_bv & COMPACTED != 0;
    if compacted {
        if !req.layout.xsavec()
            || xcomp_bv & !COMPACTED & !req.xcr0 != 0
            || xstate_bv & !xcomp_bv != 0
            || header[16..].iter().any(|&b| b != 0)
        {
            return Err(gp());
        }
    } else if xstate_bv & !req.xcr0 != 0 || header[8..24].iter().any(|&b| b != 0) {
        return Err(gp());
    }
    // The components loaded from memory; the other requested ones are initialised.
    let load = req.rfbm & xstate_bv;
    if load & req.disabled != 0 {
        ctx.vcpu.set_msr(MSR_IA32_XFD_ERR, load & req.disabled)?;
        return Err(Exception::DeviceNotAvailable.into());
    }
    // The compacted form treats MXCSR as part of SSE state; the standard form loads it for
    // SSE or AVX whatever XSTATE_BV says.
    let loads_mxcsr = if compacted {
        load & SSE != 0
    } else {
        req.rfbm & (SSE | AVX) != 0
    };
    let mut legacy = [0u8; HEADER];
    if load & LEGACY_COMPONENTS != 0 || loads_mxcsr {
        ctx.virt.read(linear, &mut legacy, who)?;
    }
    let mxcsr = u32::from_le_bytes([
        legacy[MXCSR],
        legacy[MXCSR + 1],
        legacy[MXCSR + 2],
        legacy[MXCSR + 3],
    ]);
    if loads_mxcsr && mxcsr & 0xffff_0000 != 0 {
        return Err(gp());
    }
    // Read every loaded extended component before changing anything: a fault leaves the
    // vCPU's state as it was.
    let sources: Vec<(u32, usize)> = if compacted {
        let offsets = req.layout.compacted(xcomp_bv & !COMPACTED);
        offsets.iter().map(|&(i, _, at)| (i, at)).collect()
    } else {
        req.layout
            .extended(req.rfbm)
            .map(|(i, c)| (i, c.offset))
            .collect()
    };
    let mut loaded = Vec::new();
    for (i, at) in sources {
        let Some(c) = req.layout.component(i).filter(|_| load & (1 << i) != 0) else {
            continue;
        };
        let mut bytes = vec![0u8; c.size];
        ctx.virt
            .read(linear.wrapping_add(at as u64), &mut bytes, who)?;
        loaded.push((c, bytes));
    }
    // The initial configuration of each; XFD-disabled components can only come here.
    for (_, c) in req.layout.extended(req.rfbm & !load) {
        req.zero(&mut region, c.offset, c.size)?;
    }
    for (c, bytes) in &loaded {
        req.copy(&mut region, c.offset, bytes, 0, c.size)?;
    }
    if req.rfbm & X87 != 0 {
        for r in X87_RANGES {
            if load & X87 != 0 {
                region[r.clone()].copy_from_slice(&legacy[r]);
            } else {
                region[r].fill(0);
            }
        }
        if load & X87 == 0 {
            region[..2].copy_from_slice(&FCW_DEFAULT.to_le_bytes());
        }
    }
    if req.rfbm & SSE != 0 {
        if load & SSE != 0 {
            region[SSE_RANGE].copy_from_slice(&legacy[SSE_RANGE]);
        } else {
            region[SSE_RANGE].fill(0);
        }
    }
    if loads_mxcsr {
        region[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    } else if compacted && req.rfbm & SSE != 0 {
        region[MXCSR..MXCSR + 4].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
    }
    // Every requested component is now explicit in the region, except those XFD disables,
    // which are initial (KVM refuses state for them); XCOMP_BV stays 0 (standard format).
    let in_use = u64_at(&region, HEADER) | (req.xcr0 & req.rfbm);
    let bv = (in_use & !req.disabled) | (req.xcr0 & LEGACY_COMPONENTS);
    set_u64(&mut region, HEADER, bv);
    set_u64(&mut region, HEADER + 8, 0);
    Ok(region)
}

/// XSAVE / XSAVEOPT: the standard format; XSTATE_BV's RFBM bits from the vCPU's state.
fn xsave_standard(ctx: &Ctx, req: &Request, linear: u64, region: &[u8]) -> Result<(), Failure> {
    let who = ctx.privilege();
    let rfbm = req.rfbm;
    let mut image = vec![0u8; req.layout.standard_size(rfbm)];
    ctx.virt.read(linear, &mut image, who)?;
    if rfbm & X87 != 0 {
        for r in X87_RANGES {
            image[r.clone()].copy_from_slice(&region[r]);
        }
    }
    if rfbm & SSE != 0 {
        image[SSE_RANGE].copy_from_slice(&region[SSE_RANGE]);
    }
    if rfbm & (SSE | AVX) != 0 {
        image[MXCSR_PAIR].copy_from_slice(&region[MXCSR_PAIR]);
    }
    for (i, c) in req.layout.extended(rfbm) {
        if req.disabled & (1 << i) != 0 {
            req.zero(&mut image, c.offset, c.size)?;
        } else {
            req.copy(&mut image, c.offset, region, c.offset, c.size)?;
        }
    }
    let in_use = u64_at(region, HEADER) & !req.disabled;
    let bv = (u64_at(&image, HEADER) & !rfbm) | (in_use & rfbm);
    set_u64(&mut image, HEADER, bv);
    ctx.virt.write(linear, &image, who)?;
    Ok(())
}

/// XSAVEC: the compacted format of the RFBM components in use.
fn xsave_compacted(ctx: &Ctx, req: &Request, linear: u64, region: &[u8]) -> Result<(), Failure> {
    let who = ctx.privilege();
    let rfbm = req.rfbm;
    let in_use = u64_at(region, HEADER) & rfbm & !req.disabled;
    let mut image = vec![0u8; req.layout.compacted_size(rfbm)];
    ctx.virt.read(linear, &mut image, who)?;
    if in_use & X87 != 0 {
        for r in X87_RANGES {
            image[r.clone()].copy_from_slice(&region[r]);
        }
    }
    // Compacted saves treat MXCSR as part of SSE state.
    if in_use & SSE != 0 {
        image[SSE_RANGE].copy_from_slice(&region[SSE_RANGE]);
        image[MXCSR_PAIR].copy_from_slice(&region[MXCSR_PAIR]);
    }
    for (i, c, at) in req.layout.compacted(rfbm) {
        if in_use & (1 << i) != 0 {
            req.copy(&mut image, at, region, c.offset, c.size)?;
        }
    }
    image[HEADER..EXTENDED].fill(0);
    set_u64(&mut image, HEADER, in_use);
    set_u64(&mut image, HEADER + 8, rfbm | COMPACTED);
    ctx.virt.write(linear, &image, who)?;
    Ok(())
}

#[cfg(test)]
#[path = "xsave_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "xsave_amx_tests.rs"]
mod amx_tests;
