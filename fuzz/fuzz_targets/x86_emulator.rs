//! The instruction emulator decodes and executes whatever bytes a guest leaves at RIP, with
//! guest-chosen registers, descriptor tables, stack and page tables: any input must end in
//! an outcome or an error, never a panic, and never touch memory outside the guest's. The
//! vCPU is the fake one of the emulator's unit tests; the input's first 72 bytes set its
//! mode and registers, the rest is guest memory at RIP, which is also where the IDT and GDT
//! point when the mode byte asks (so gates and descriptors are the fuzzer's too). The
//! `syscall` fix-up's #PF-frame parsing runs on the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use x86_emulator::test_support::{long_mode_sregs, FakeVcpu, PageTables};

/// Where the input's code goes (identity-mapped, user-accessible).
const CODE: u64 = 0x8000;
/// A supervisor-only alias of the first 2 MiB, as kernels map themselves.
const HIGH: u64 = 0xffff_ffff_8000_0000;
const HEADER: usize = 72;

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[8 + i * 8..16 + i * 8]);
    u64::from_le_bytes(w)
}

fn vcpu(head: &[u8], cr3: u64) -> FakeVcpu {
    let mode = head[0];
    let mut cpu = FakeVcpu {
        sregs: long_mode_sregs(cr3),
        ..Default::default()
    };
    if mode & 1 != 0 {
        // CPL 3.
        cpu.sregs.cs.selector = 0x33;
        cpu.sregs.cs.dpl = 3;
        cpu.sregs.ss.selector = 0x2b;
        cpu.sregs.ss.dpl = 3;
    }
    if mode & 2 != 0 {
        // Compatibility mode.
        cpu.sregs.cs.l = 0;
        cpu.sregs.cs.db = 1;
    }
    if mode & 4 != 0 {
        cpu.sregs.cr0 |= 1 << 3; // TS
    }
    if mode & 8 == 0 {
        cpu.sregs.cr4 &= !(1 << 18); // OSXSAVE
    }
    if mode & 16 != 0 {
        cpu.sregs.idt.base = CODE;
        cpu.sregs.idt.limit = u16::from_le_bytes([head[1], head[2]]);
        cpu.sregs.gdt.base = CODE;
        cpu.sregs.gdt.limit = u16::from_le_bytes([head[3], head[4]]);
    }
    if mode & 32 != 0 {
        cpu.regs.rip = HIGH + CODE;
    } else {
        cpu.regs.rip = CODE;
    }
    cpu.xcr0 = if mode & 64 != 0 {
        cpu.layout.supported() | 1
    } else {
        u64::from(head[5] & 7) | 1
    };
    cpu.sregs.cr2 = word(head, 7);
    cpu.regs.rflags = u64::from(u16::from_le_bytes([head[6], head[7]])) | 2;
    cpu.regs.rsp = word(head, 0);
    cpu.regs.rax = word(head, 1);
    cpu.regs.rbx = word(head, 2);
    cpu.regs.rcx = word(head, 3);
    cpu.regs.rdx = word(head, 4);
    cpu.regs.rsi = word(head, 5);
    cpu.regs.rdi = word(head, 6);
    cpu.regs.r11 = word(head, 6).rotate_left(17);
    cpu.regs.rbp = word(head, 3) ^ word(head, 5);
    for (msr, value) in [
        (0xc000_0080, if mode & 128 != 0 { 0xd01 } else { 0xd00 }),
        (0xc000_0081, word(head, 1)),
        (0xc000_0082, HIGH + CODE),
        (0xc000_0084, word(head, 2)),
        (0xc000_0101, word(head, 4)),
        (0xc000_0102, word(head, 5)),
        (0xc000_0103, 1),
        (0x10, 0x1234_5678),
        (0x1c4, u64::from(head[5] >> 3) << 17),
        (0x1c5, 0),
    ] {
        cpu.msrs.insert(msr, value);
    }
    cpu
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let (head, code) = data.split_at(HEADER);
    let code = &code[..code.len().min(0x8000)];
    let mut pt = PageTables::new();
    pt.identity(0x10_0000);
    pt.map_2m(HIGH, 0, true);
    let mem = pt.mem();
    if mem.write_slice(code, GuestAddress(CODE)).is_err() {
        return;
    }
    let mut cpu = vcpu(head, pt.cr3());
    let _ = x86_emulator::emulate_at_rip(&mut cpu, &mem);
    // The fix-up: arm on the guest's IDT, then a debug exit at whatever RIP is now.
    let _ = x86_emulator::syscall_fixup::arm(&mut cpu, &mem);
    let _ = x86_emulator::syscall_fixup::on_debug_exit(&mut cpu, &mem);
});
