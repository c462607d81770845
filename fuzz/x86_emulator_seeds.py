#!/usr/bin/env python3
"""Writes the seed corpus of the x86_emulator fuzz target: a 72-byte header (mode byte,
IDT/GDT limits, XCR0 bits, RFLAGS, then RSP RAX RBX RCX RDX RSI RDI CR2, as
fuzz_targets/x86_emulator.rs reads it) and the instruction bytes. Usage:
python3 fuzz/x86_emulator_seeds.py fuzz/corpus/x86_emulator"""
import struct, os, sys
out=sys.argv[1]
def seed(name, mode, code, rsp=0x7000, rax=0, rbx=0, rcx=0, rdx=0, rsi=0x9000, rdi=0x9000, cr2=0, limits=(0xfff,0x7f), xcr=7, rflags=0x246):
    head = bytes([mode]) + struct.pack('<HH', *limits) + bytes([xcr]) + struct.pack('<H', rflags)
    head += struct.pack('<8Q', rsp, rax, rbx, rcx, rdx, rsi, rdi, cr2)
    assert len(head) == 72
    open(os.path.join(out, name), 'wb').write(head + bytes(code))
K = 8 | 128
seed('int3', K | 16, [0xcc] + [0]*255)
seed('int_0x80_user', K | 16 | 1, [0xcd, 0x80] + [0]*255)
seed('iretq', K, [0x48, 0xcf], rsp=0x7000)
seed('sysretq', K, [0x48, 0x0f, 0x07], rcx=0x8000, rbx=0x202)
seed('swapgs', K, [0x0f, 0x01, 0xf8])
seed('xsave64', K | 64, [0x48, 0x0f, 0xae, 0x27], rax=0xffffffff, rdx=0xffffffff, rdi=0x9000)
seed('xrstor64', K | 64, [0x48, 0x0f, 0xae, 0x2f], rax=3, rdi=0x9000)
seed('xsavec', K | 64, [0x48, 0x0f, 0xc7, 0x27], rax=7, rdi=0x9000)
seed('xgetbv', K, [0x0f, 0x01, 0xd0])
seed('cmpxchg16b', K, [0xf0, 0x48, 0x0f, 0xc7, 0x0e], rsi=0x9000)
seed('popcnt', K, [0xf3, 0x48, 0x0f, 0xb8, 0xc7], rdi=0xff00ff)
seed('lzcnt', K, [0xf3, 0x48, 0x0f, 0xbd, 0xc7])
seed('stmxcsr', K, [0x0f, 0xae, 0x1f], rdi=0x9000)
seed('ldmxcsr_ts', K | 4, [0x0f, 0xae, 0x17], rdi=0x9000)
seed('rdtscp', K, [0x0f, 0x01, 0xf9])
seed('rdrand', K, [0x48, 0x0f, 0xc7, 0xf0])
seed('clac', K, [0x0f, 0x01, 0xca])
seed('wrgsbase', K, [0xf3, 0x48, 0x0f, 0xae, 0xd8])
seed('iret_compat', K | 2, [0xcf])
seed('high_half_clflush', K | 32, [0x0f, 0xae, 0x3f], rdi=0xffffffff80009000)
seed('bad_rsp_int3', K | 16, [0xcc], rsp=0xdead_beef_0000)
