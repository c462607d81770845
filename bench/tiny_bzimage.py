#!/usr/bin/env python3
"""Write a minimal bzImage whose every entry point exits at its first instruction through
port 0xf4 (isa-debug-exit): the real-mode setup entry (used by firmware such as QEMU's
qboot/SeaBIOS linuxboot) and the 64-bit entry at load address + 0x200 (used by vessel)."""
import struct
import sys

OUT_AL_F4 = b"\xe6\xf4"            # out %al, $0xf4
HLT_LOOP = b"\xf4\xeb\xfd"         # hlt; jmp .-1

setup = bytearray(1024)            # boot sector + 1 setup sector
setup[0x1f1] = 1                   # setup_sects
struct.pack_into("<H", setup, 0x1fe, 0xAA55)
setup[0x200:0x202] = b"\xeb" + bytes([0x300 - 0x202])   # jmp to the setup code at 0x300
setup[0x202:0x206] = b"HdrS"
struct.pack_into("<H", setup, 0x206, 0x020F)             # protocol 2.15
setup[0x211] = 0x01                                      # loadflags: LOADED_HIGH
struct.pack_into("<I", setup, 0x214, 0x100000)           # code32_start
struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)         # initrd_addr_max
struct.pack_into("<I", setup, 0x230, 0x200000)           # kernel_alignment
struct.pack_into("<H", setup, 0x236, 0x1)                # xloadflags: XLF_KERNEL_64
struct.pack_into("<I", setup, 0x238, 2047)               # cmdline_size
setup[0x300:0x300 + 5] = OUT_AL_F4 + HLT_LOOP            # real-mode entry

payload = bytearray(0x400)
payload[0:5] = OUT_AL_F4 + HLT_LOOP                      # 32-bit entry (startup_32)
payload[0x200:0x205] = OUT_AL_F4 + HLT_LOOP              # 64-bit entry (startup_64)
struct.pack_into("<I", setup, 0x260, 0x10000)            # init_size

with open(sys.argv[1], "wb") as f:
    f.write(setup + payload)
