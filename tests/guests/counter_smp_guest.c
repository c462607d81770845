/* A 2-vCPU guest for the VM snapshot tests: the BSP starts the AP (APIC id 1) with
 * INIT/SIPI; the AP counts forever in memory, the BSP counts steps and prints
 * "count=N ap=M" (M: the AP's count) after each, then ends through the debug-exit port with
 * code 21 (vessel exits 43). "steps=N" and "delay=N" on the command line as in
 * counter_guest.c. Both vCPUs run guest code when a snapshot is taken. */
#include "guest.h"

#define LAPIC 0xfee00000u
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_SVR 0xf0

struct multiboot_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

extern char ap_trampoline_start[], ap_trampoline_end[];
volatile u32 ap_stack_index;
static volatile u32 ap_count;

static void delay(u32 n) { for (volatile u32 i = 0; i < n; i++) pause(); }

void ap_main(void) {
    for (;;) {
        for (volatile u32 i = 0; i < 1000; i++) pause();
        ap_count++;
    }
}

void guest_main(u32 magic, struct multiboot_info *info) {
    (void)magic;
    const char *cmdline = (info->flags & 4) ? (const char *)(uptr)info->cmdline : "";
    long steps = cmdline_number(cmdline, "steps");
    long wait = cmdline_number(cmdline, "delay");
    if (steps < 0) steps = 30;
    if (wait < 0) wait = 100000;
    mmio_write32(LAPIC + LAPIC_SVR, mmio_read32(LAPIC + LAPIC_SVR) | 0x100);
    u8 *dst = (u8 *)0x8000;
    for (char *s = ap_trampoline_start; s < ap_trampoline_end; s++) *dst++ = (u8)*s;
    mmio_write32(LAPIC + LAPIC_ICR_HI, 1u << 24);
    mmio_write32(LAPIC + LAPIC_ICR_LO, 0x4500); /* INIT */
    delay(10000);
    for (int k = 0; k < 2; k++) {
        mmio_write32(LAPIC + LAPIC_ICR_HI, 1u << 24);
        mmio_write32(LAPIC + LAPIC_ICR_LO, 0x4600 | 0x08); /* SIPI, vector 0x08 -> 0x8000 */
        delay(1000);
    }
    for (u32 spins = 0; ap_count == 0; spins++) {
        if (spins > 200000000u) { puts("the AP did not start\n"); debug_exit(3); }
        pause();
    }
    puts("counter guest up\n");
    for (long n = 1; n <= steps; n++) {
        step_delay((u64)wait);
        puts("count=");
        put_dec((u64)n);
        puts(" ap=");
        put_dec(ap_count);
        putc('\n');
    }
    puts("counter done\n");
    debug_exit(21);
}
