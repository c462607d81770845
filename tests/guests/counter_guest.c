/* A guest for the VM snapshot tests: counts in a loop and prints "count=N" on COM1 after
 * every step, busy-waiting between steps, then ends through the debug-exit port with code
 * 21 (vessel exits 43). "steps=N" and "delay=N" on the command line set how far it counts
 * and how long it spins per step. A snapshot taken mid-way and restored must go on from
 * the number it had reached. */
#include "guest.h"

struct multiboot_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

static volatile u64 spin;

void guest_main(u32 magic, struct multiboot_info *info) {
    (void)magic;
    const char *cmdline = (info->flags & 4) ? (const char *)(uptr)info->cmdline : "";
    long steps = cmdline_number(cmdline, "steps");
    long delay = cmdline_number(cmdline, "delay");
    if (steps < 0) steps = 200;
    if (delay < 0) delay = 200000;
    puts("counter guest up\n");
    for (long i = 1; i <= steps; i++) {
        for (spin = 0; spin < (u64)delay; spin++) pause();
        puts("count=");
        put_dec((u64)i);
        putc('\n');
    }
    puts("counter done\n");
    debug_exit(21);
}
