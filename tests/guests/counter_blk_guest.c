/* A guest for the VM snapshot tests with a virtio-blk disk: at every step N it writes
 * sector N (every word = N), reads it back, checks it and prints "count=N"; at the end it
 * reads every sector it wrote again, prints "disk verified" and ends through the
 * debug-exit port with code 21 (vessel exits 43), or 0x40 (vessel exits 129) on a mismatch.
 * Requests are polled on the used ring (no interrupts). "steps=N" and "delay=N" on the
 * command line set how far it counts and how long it spins per step. */
#include "virtio_pci.h"

struct multiboot_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

#define QSIZE 8
#define DESC 0x300000u
#define AVAIL 0x301000u
#define USED 0x302000u
#define HDR 0x303000u
#define DATA 0x304000u
#define STATUS 0x305000u

static uptr notify;
static u16 used_seen;

static void fail(const char *why) { puts("counter-blk: FAIL "); puts(why); puts("\n"); debug_exit(0x40); }

static u8 request(u32 type, u32 sector, int device_writes) {
    volatile u32 *hdr = (volatile u32 *)HDR;
    hdr[0] = type; hdr[1] = 0; hdr[2] = sector; hdr[3] = 0;
    vw8(STATUS, 0xff);
    volatile struct vq_desc *d = (volatile struct vq_desc *)DESC;
    d[0].addr = HDR; d[0].len = 16; d[0].flags = VQ_F_NEXT; d[0].next = 1;
    d[1].addr = DATA; d[1].len = 512; d[1].flags = VQ_F_NEXT | (device_writes ? VQ_F_WRITE : 0); d[1].next = 2;
    d[2].addr = STATUS; d[2].len = 1; d[2].flags = VQ_F_WRITE; d[2].next = 0;
    vq_publish(AVAIL, QSIZE, 0, notify, 0);
    for (u32 spins = 0; vr16(USED + 2) == used_seen; spins++) {
        if (spins > 200000000u) fail("timeout waiting for the used ring");
        pause();
    }
    used_seen++;
    return vr8(STATUS);
}

static int sector_holds(u32 n) {
    for (u32 i = 0; i < 128; i++)
        if (((volatile u32 *)DATA)[i] != n) return 0;
    return 1;
}

void guest_main(u32 magic, struct multiboot_info *info) {
    (void)magic;
    const char *cmdline = (info->flags & 4) ? (const char *)(uptr)info->cmdline : "";
    long steps = cmdline_number(cmdline, "steps");
    long delay = cmdline_number(cmdline, "delay");
    if (steps < 0) steps = 30;
    if (delay < 0) delay = 100000;
    struct vdev dev = {0};
    if (!vdev_find(&dev, 0x10421af4u)) fail("no virtio-blk device");
    if (!vdev_negotiate(&dev, 0)) fail("FEATURES_OK not accepted");
    notify = vq_setup(&dev, 0, QSIZE, DESC, AVAIL, USED);
    vdev_driver_ok(&dev);
    puts("counter guest up\n");
    for (long n = 1; n <= steps; n++) {
        step_delay((u64)delay);
        for (u32 i = 0; i < 128; i++) ((volatile u32 *)DATA)[i] = (u32)n;
        if (request(1, (u32)n, 0) != 0) fail("write");
        for (u32 i = 0; i < 128; i++) ((volatile u32 *)DATA)[i] = 0;
        if (request(0, (u32)n, 1) != 0 || !sector_holds((u32)n)) fail("read back");
        puts("count=");
        put_dec((u64)n);
        putc('\n');
    }
    for (long n = 1; n <= steps; n++) {
        if (request(0, (u32)n, 1) != 0 || !sector_holds((u32)n)) fail("final check");
    }
    puts("disk verified\ncounter done\n");
    debug_exit(21);
}
