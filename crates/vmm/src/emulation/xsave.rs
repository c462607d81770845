//! The XSAVE family (`xrstor`, `xsave`, `xsaveopt`, `xsavec`) and `xgetbv`, against the
//! vCPU's extended state from KVM_GET_XSAVE / KVM_SET_XSAVE.
//!
//! KVM's region uses the standard (non-compacted) layout: the 512-byte legacy (FXSAVE) area,
//! the 64-byte header at 512 (XSTATE_BV, XCOMP_BV), and component i >= 2 at the offset
//! CPUID.(EAX=0DH,ECX=i).EBX. Guest memory holds the standard layout, or the compacted one
//! (XCOMP_BV bit 63) where components follow each other from offset 576 in index order,
//! 64-byte aligned where CPUID.(0DH,i).ECX bit 1 says so. State a header marks as not in
//! use is written to KVM as explicit initial values, which is the same state.

use iced_x86::Mnemonic;

use super::cpu::{XsaveRegion, XSAVE_REGION_SIZE};
use super::decode::Ctx;
use super::{EmulationError, Exception, Failure};

const HEADER: usize = 512;
const EXTENDED: usize = 576;
const COMPACTED: u64 = 1 << 63;
const MXCSR: usize = 24;
const MXCSR_DEFAULT: u32 = 0x1f80;
/// x87 state in the legacy area: FCW..FDP (0..24) and ST0-ST7 (32..160).
const X87_RANGES: [(usize, usize); 2] = [(0, 24), (32, 160)];
/// SSE state: XMM0-XMM15.
const SSE_RANGE: (usize, usize) = (160, 416);
const FCW_DEFAULT: u16 = 0x37f;
const CR4_OSXSAVE: u64 = 1 << 18;

/// Where component `i` lies: (standard offset, size, 64-byte aligned when compacted), from
/// the host's CPUID, which describes the same CPU the guest runs on.
fn component(i: u32) -> (usize, usize, bool) {
    let r = std::arch::x86_64::__cpuid_count(0xd, i);
    (r.ebx as usize, r.eax as usize, r.ecx & 2 != 0)
}

/// Offsets of the components of `xcomp_bv` in the compacted layout.
fn compacted_offsets(xcomp_bv: u64) -> Vec<(u32, usize)> {
    let mut offset = EXTENDED;
    let mut out = Vec::new();
    for i in 2..63 {
        if xcomp_bv & (1 << i) == 0 {
            continue;
        }
        let (_, size, align) = component(i);
        if align {
            offset = (offset + 63) & !63;
        }
        out.push((i, offset));
        offset += size;
    }
    out
}

/// Size of the memory image for a save/restore of `rfbm` in the given form.
fn image_size(rfbm: u64, compacted: bool) -> usize {
    if compacted {
        compacted_offsets(rfbm)
            .last()
            .map_or(EXTENDED, |&(i, off)| off + component(i).1)
    } else {
        (2..63)
            .filter(|i| rfbm & (1 << i) != 0)
            .map(|i| {
                let (off, size, _) = component(i);
                off + size
            })
            .max()
            .unwrap_or(EXTENDED)
            .max(EXTENDED)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Write initial values for component `i` into a standard-layout region.
fn init_component(region: &mut XsaveRegion, i: u32) {
    match i {
        0 => {
            for (a, b) in X87_RANGES {
                region[a..b].fill(0);
            }
            region[..2].copy_from_slice(&FCW_DEFAULT.to_le_bytes());
        }
        1 => region[SSE_RANGE.0..SSE_RANGE.1].fill(0),
        _ => {
            let (off, size, _) = component(i);
            if off + size <= XSAVE_REGION_SIZE {
                region[off..off + size].fill(0);
            }
        }
    }
}

/// Copy component `i` from `src` (at `src_off` for i >= 2) into `dst` (at `dst_off`).
fn copy_component(dst: &mut [u8], dst_off: usize, src: &[u8], src_off: usize, i: u32) {
    match i {
        0 => {
            for (a, b) in X87_RANGES {
                dst[a..b].copy_from_slice(&src[a..b]);
            }
        }
        1 => dst[SSE_RANGE.0..SSE_RANGE.1].copy_from_slice(&src[SSE_RANGE.0..SSE_RANGE.1]),
        _ => {
            let size = component(i).1;
            dst[dst_off..dst_off + size].copy_from_slice(&src[src_off..src_off + size]);
        }
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
    if ctx.sregs.cr4 & CR4_OSXSAVE == 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    let linear = ctx.memory_address()?;
    if linear % 64 != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    let xcr0 = ctx.vcpu.xcr0()?;
    let rfbm = xcr0 & ((ctx.regs.rdx & 0xffff_ffff) << 32 | (ctx.regs.rax & 0xffff_ffff));
    if image_size(rfbm, false) > XSAVE_REGION_SIZE {
        return Err(EmulationError::Invalid {
            what: ctx.name(),
            why: format!("state components {rfbm:#x} exceed KVM_GET_XSAVE's 4 KiB region"),
        }
        .into());
    }
    let region = ctx.vcpu.xsave()?;
    match ctx.insn.mnemonic() {
        Mnemonic::Xrstor | Mnemonic::Xrstor64 => {
            let restored = xrstor(ctx, linear, rfbm, xcr0, region)?;
            ctx.vcpu.set_xsave(&restored)?;
        }
        Mnemonic::Xsave | Mnemonic::Xsave64 | Mnemonic::Xsaveopt | Mnemonic::Xsaveopt64 => {
            xsave_standard(ctx, linear, rfbm, &region)?
        }
        Mnemonic::Xsavec | Mnemonic::Xsavec64 => xsave_compacted(ctx, linear, rfbm, &region)?,
        _ => return Err(EmulationError::Unsupported(ctx.name()).into()),
    }
    ctx.advance();
    Ok(())
}

/// XRSTOR from guest memory at `linear` into a copy of `region`, which is returned.
fn xrstor(
    ctx: &Ctx,
    linear: u64,
    rfbm: u64,
    xcr0: u64,
    mut region: XsaveRegion,
) -> Result<XsaveRegion, Failure> {
    let who = ctx.privilege();
    let mut header = [0u8; 64];
    ctx.virt.read(linear + HEADER as u64, &mut header, who)?;
    let xstate_bv = u64_at(&header, 0);
    let xcomp_bv = u64_at(&header, 8);
    let compacted = xcomp_bv & COMPACTED != 0;
    let gp = Failure::Raise(Exception::GeneralProtection(0));
    if compacted {
        if xcomp_bv & !COMPACTED & !xcr0 != 0
            || xstate_bv & !xcomp_bv != 0
            || header[16..].iter().any(|&b| b != 0)
        {
            return Err(gp);
        }
    } else if xstate_bv & !xcr0 != 0 || header[8..24].iter().any(|&b| b != 0) {
        return Err(gp);
    }
    let layout_bv = if compacted {
        xcomp_bv & !COMPACTED
    } else {
        rfbm
    };
    let size = image_size(layout_bv | (rfbm & 3), compacted);
    if size > XSAVE_REGION_SIZE {
        return Err(EmulationError::Invalid {
            what: ctx.name(),
            why: format!("an XSAVE image of {size} bytes exceeds KVM_GET_XSAVE's region"),
        }
        .into());
    }
    let mut image = vec![0u8; size];
    ctx.virt.read(linear, &mut image, who)?;
    let mxcsr = u32::from_le_bytes(image[MXCSR..MXCSR + 4].try_into().expect("4 bytes"));
    // The compacted form treats MXCSR as part of SSE state; the standard form loads it for
    // SSE or AVX whatever XSTATE_BV says.
    let loads_mxcsr = if compacted {
        rfbm & xstate_bv & 0b10 != 0
    } else {
        rfbm & 0b110 != 0
    };
    if loads_mxcsr && mxcsr & 0xffff_0000 != 0 {
        return Err(gp);
    }
    let offsets = if compacted {
        compacted_offsets(xcomp_bv)
    } else {
        Vec::new()
    };
    for i in 0..63u32 {
        if rfbm & (1 << i) == 0 {
            continue;
        }
        if xstate_bv & (1 << i) == 0 {
            init_component(&mut region, i);
            continue;
        }
        let std_off = if i >= 2 { component(i).0 } else { 0 };
        let src_off = if compacted && i >= 2 {
            match offsets.iter().find(|(c, _)| *c == i) {
                Some(&(_, off)) => off,
                None => continue,
            }
        } else {
            std_off
        };
        copy_component(&mut region, std_off, &image, src_off, i);
    }
    if loads_mxcsr {
        region[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    } else if compacted && rfbm & 0b10 != 0 && xstate_bv & 0b10 == 0 {
        region[MXCSR..MXCSR + 4].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
    }
    // Every enabled component is now explicit in the region; XCOMP_BV stays 0 (standard).
    let bv = u64_at(&region, HEADER) | (xcr0 & rfbm) | (xcr0 & 3);
    region[HEADER..HEADER + 8].copy_from_slice(&bv.to_le_bytes());
    region[HEADER + 8..HEADER + 16].fill(0);
    Ok(region)
}

/// XSAVE / XSAVEOPT: the standard layout; XSTATE_BV's RFBM bits from the vCPU's state.
fn xsave_standard(ctx: &Ctx, linear: u64, rfbm: u64, region: &XsaveRegion) -> Result<(), Failure> {
    let who = ctx.privilege();
    let size = image_size(rfbm, false);
    let mut image = vec![0u8; size];
    ctx.virt.read(linear, &mut image, who)?;
    let in_use = u64_at(region, HEADER);
    for i in 0..63u32 {
        if rfbm & (1 << i) == 0 {
            continue;
        }
        let off = if i >= 2 { component(i).0 } else { 0 };
        copy_component(&mut image, off, region, off, i);
    }
    if rfbm & 0b110 != 0 {
        image[MXCSR..MXCSR + 8].copy_from_slice(&region[MXCSR..MXCSR + 8]);
    }
    let old_bv = u64_at(&image, HEADER);
    let bv = (old_bv & !rfbm) | (in_use & rfbm);
    image[HEADER..HEADER + 8].copy_from_slice(&bv.to_le_bytes());
    ctx.virt.write(linear, &image, who)?;
    Ok(())
}

/// XSAVEC: the compacted layout of the RFBM components in use.
fn xsave_compacted(ctx: &Ctx, linear: u64, rfbm: u64, region: &XsaveRegion) -> Result<(), Failure> {
    let who = ctx.privilege();
    let in_use = u64_at(region, HEADER) & rfbm;
    let size = image_size(rfbm, true);
    let mut image = vec![0u8; size];
    ctx.virt.read(linear, &mut image, who)?;
    for i in 0..2u32 {
        if in_use & (1 << i) != 0 {
            copy_component(&mut image, 0, region, 0, i);
        }
    }
    // Compacted saves treat MXCSR as part of SSE state.
    if in_use & 0b10 != 0 {
        image[MXCSR..MXCSR + 8].copy_from_slice(&region[MXCSR..MXCSR + 8]);
    }
    for (i, off) in compacted_offsets(rfbm) {
        if in_use & (1 << i) != 0 {
            copy_component(&mut image, off, region, component(i).0, i);
        }
    }
    image[HEADER..EXTENDED].fill(0);
    image[HEADER..HEADER + 8].copy_from_slice(&in_use.to_le_bytes());
    image[HEADER + 8..HEADER + 16].copy_from_slice(&(rfbm | COMPACTED).to_le_bytes());
    ctx.virt.write(linear, &image, who)?;
    Ok(())
}

#[cfg(test)]
#[path = "xsave_tests.rs"]
mod tests;
