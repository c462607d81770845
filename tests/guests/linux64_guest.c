/* Linux-boot-protocol guest: prints what vessel put in the zero page (setup header, e820
 * map, command line, initrd and its hash), then resets through the i8042. */
#include "guest.h"

#define BP8(off) (*(volatile u8 *)(bp + (off)))
#define BP16(off) (*(volatile u16 *)(bp + (off)))
#define BP32(off) (*(volatile u32 *)(bp + (off)))
#define BP64(off) (*(volatile u64 *)(bp + (off)))

void guest_main(uptr bp) {
    puts("linux64: boot_params="); put_hex(bp);
    puts(" boot_flag="); put_hex(BP16(0x1fe));
    puts(" header="); put_hex(BP32(0x202));
    puts(" version="); put_hex(BP16(0x206));
    puts(" loader="); put_hex(BP8(0x210)); puts("\n");
    u32 n = BP8(0x1e8);
    for (u32 i = 0; i < n; i++) {
        uptr e = bp + 0x2d0 + i * 20;
        puts("e820: "); put_hex(*(u64 *)e); puts(" "); put_hex(*(u64 *)(e + 8));
        puts(" "); put_dec(*(u32 *)(e + 16)); puts("\n");
    }
    uptr cmdline = BP32(0x228) | ((uptr)BP32(0xc8) << 32);
    puts("cmdline: "); puts((const char *)cmdline); puts("\n");
    uptr initrd = BP32(0x218);
    u32 initrd_size = BP32(0x21c);
    if (initrd_size) {
        puts("initrd: addr="); put_hex(initrd); puts(" size="); put_dec(initrd_size);
        puts(" fnv1a="); put_hex(fnv1a((const u8 *)initrd, initrd_size)); puts("\n");
    } else {
        puts("initrd: none\n");
    }
    puts("rsdp: "); put_hex(BP64(0x70)); puts("\n");
    outb(0x64, 0xfe); /* i8042: pulse the reset line */
    for (;;) __asm__ volatile("hlt");
}
