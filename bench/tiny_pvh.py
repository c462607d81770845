#!/usr/bin/env python3
"""Write a minimal PVH kernel: an ELF64 with one PT_LOAD at 1 MiB and a Xen
PHYS32_ENTRY note; the entry's first instruction writes to port 0xf4 (isa-debug-exit).
With --idle, the guest instead writes 'U' to COM1 (0x3f8) and halts for good (interrupts
are off at the PVH entry): an idle VM whose serial output says it is up.
Both vessel and QEMU's microvm machine boot PVH ELFs directly."""
import struct
import sys

IDLE = "--idle" in sys.argv[1:]
RESET = "--reset" in sys.argv[1:]
sys.argv = [a for a in sys.argv if a not in ("--idle", "--reset")]

BASE = 0x100000
EHDR, PHDR = 64, 56
note_off = EHDR + 2 * PHDR
note = struct.pack("<III", 4, 4, 18) + b"Xen\0"      # namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
code_off = note_off + len(note) + 4
entry = BASE + code_off
note += struct.pack("<I", entry)
code = b"\xe6\xf4" + b"\xf4\xeb\xfd"                 # out %al,$0xf4 ; hlt ; jmp .-1
if IDLE:
    # mov $0x3f8,%edx ; mov $'U',%al ; out %al,(%dx) ; hlt ; jmp .-1
    code = b"\xba\xf8\x03\x00\x00" + b"\xb0\x55" + b"\xee" + b"\xf4\xeb\xfd"
if RESET:
    # mov $0xfe,%al ; out %al,$0x64 (the i8042's CPU reset: how Firecracker's guests end)
    code = b"\xb0\xfe\xe6\x64" + b"\xf4\xeb\xfd"
size = code_off + len(code)

ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, entry, EHDR, 0, 0, EHDR, PHDR, 2, 64, 0, 0)
load = struct.pack("<IIQQQQQQ", 1, 7, 0, BASE, BASE, size, size, 0x1000)
pnote = struct.pack("<IIQQQQQQ", 4, 4, note_off, BASE + note_off, BASE + note_off, len(note), len(note), 4)
image = ehdr + load + pnote + note + code
assert len(image) == size
with open(sys.argv[1], "wb") as f:
    f.write(image)
