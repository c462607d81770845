/* A guest for the VM snapshot tests: counts in a loop and prints "count=N" on COM1 after
 * every step, busy-waiting between steps, then ends through the debug-exit port with code
 * 21 (vessel exits 43). "steps=N" and "delay=N" on the command line set how far it counts
 * and how long it spins per step. A snapshot taken mid-way and restored must go on from
 * the number it had reached.
 *
 * "fill=M" (MiB) also keeps a pattern in M MiB of memory from 16 MiB up: one 64 KiB stripe
 * rewritten at every step with the step's number mixed in (so every step dirties 16 pages
 * with new values), the stripe's last generation kept in guest memory too. After
 * the last step it checks every word and prints "memory=ok" or where the first wrong word
 * is: a page a snapshot or migration lost or sent stale shows there. */
#include "guest.h"

struct multiboot_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };


#define FILL_BASE (16u << 20)
#define STRIPE_BYTES (64u << 10)
#define STRIPE_WORDS (STRIPE_BYTES / 4)
#define MAX_FILL_MIB 1024
#define MAX_STRIPES (MAX_FILL_MIB * ((1u << 20) / STRIPE_BYTES))

/* The stripes' generations: the step that last wrote each one. */
static u32 generation[MAX_STRIPES];

static u32 pattern(u32 word, u32 gen) { return (word * 2654435761u) ^ (gen * 0x5bd1e995u) ^ 0xa5a5a5a5u; }

static void write_stripe(u32 stripe, u32 gen) {
    volatile u32 *w = (volatile u32 *)(uptr)(FILL_BASE + stripe * STRIPE_BYTES);
    for (u32 i = 0; i < STRIPE_WORDS; i++) w[i] = pattern(stripe * STRIPE_WORDS + i, gen);
    generation[stripe] = gen;
}

static void check_stripes(u32 stripes) {
    for (u32 s = 0; s < stripes; s++) {
        volatile u32 *w = (volatile u32 *)(uptr)(FILL_BASE + s * STRIPE_BYTES);
        for (u32 i = 0; i < STRIPE_WORDS; i++) {
            if (w[i] != pattern(s * STRIPE_WORDS + i, generation[s])) {
                puts("memory=corrupt at ");
                put_hex(FILL_BASE + s * STRIPE_BYTES + i * 4);
                putc('\n');
                return;
            }
        }
    }
    puts("memory=ok\n");
}

void guest_main(u32 magic, struct multiboot_info *info) {
    (void)magic;
    const char *cmdline = (info->flags & 4) ? (const char *)(uptr)info->cmdline : "";
    long steps = cmdline_number(cmdline, "steps");
    long delay = cmdline_number(cmdline, "delay");
    if (steps < 0) steps = 200;
    if (delay < 0) delay = 200000;
    long fill = cmdline_number(cmdline, "fill");
    u32 top_mib = (info->mem_upper >> 10) + 1;
    if (fill < 0) fill = 0;
    if (fill > MAX_FILL_MIB) fill = MAX_FILL_MIB;
    if (fill > 0 && (u32)fill + 16 > top_mib) fill = top_mib > 17 ? top_mib - 17 : 0;
    u32 stripes = (u32)fill * ((1u << 20) / STRIPE_BYTES);
    for (u32 s = 0; s < stripes; s++) write_stripe(s, 0);
    puts("counter guest up\n");
    for (long i = 1; i <= steps; i++) {
        step_delay((u64)delay);
        if (stripes > 0) write_stripe((u32)i % stripes, (u32)i);
        puts("count=");
        put_dec((u64)i);
        putc('\n');
    }
    if (stripes > 0) check_stripes(stripes);
    puts("counter done\n");
    debug_exit(21);
}
