/* virtio-blk guest: enumerates PCI bus 0 through port 0xCF8 (and cross-checks ECAM), finds
 * the modern virtio-blk device (1af4:1042), negotiates VERSION_1, sets up queue 0 with
 * MSI-X vector 1 (masked at first) and, polling the used ring, reads sector 0, writes
 * sector 1 (then flushes) and reads the disk id. Interrupts stay disabled: whether MSI-X
 * messages reach the local APIC is read from its IRR (vector 0x41), and the pending bit
 * from the PBA. Results go to the serial port; the guest powers off at the end. */
#include "guest.h"

#define ECAM 0xe0000000u
#define MEM(a) ((volatile u8 *)(uptr)(a))

static u32 cf8_read(u32 slot, u32 off) {
    outl(0xcf8, 0x80000000u | (slot << 11) | (off & 0xfc));
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((u16)0xcfc));
    return v;
}
static void cf8_write(u32 slot, u32 off, u32 v) {
    outl(0xcf8, 0x80000000u | (slot << 11) | (off & 0xfc));
    outl(0xcfc, v);
}
static u32 ecam_read(u32 slot, u32 off) { return mmio_read32(ECAM + (slot << 15) + off); }

static void fail(const char *why) { puts("virtio-blk: FAIL "); puts(why); puts("\n"); debug_exit(0x40); }

struct desc { u64 addr; u32 len; u16 flags, next; };
#define QSIZE 8
#define DESC 0x300000u
#define AVAIL 0x301000u
#define USED 0x302000u
#define HDR 0x303000u
#define DATA 0x304000u
#define STATUS 0x305000u
/* `readall`: the whole disk is read in BIG_LEN pieces into BIG. */
#define BIG 0x400000u
#define BIG_LEN 0x10000u

static uptr common, notify_addr, devcfg;
static u16 used_seen;
#define MSI_VECTOR 0x41
#define INTX_VECTOR 0x42
#define IOAPIC 0xfec00000u
struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

static void ioapic_write(u32 reg, u32 v) { mmio_write32(IOAPIC, reg); mmio_write32(IOAPIC + 0x10, v); }
static int lapic_irr(u32 vector) {
    return (mmio_read32(0xfee00200u + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

static void w8(uptr a, u8 v) { *(volatile u8 *)a = v; }
static void w16(uptr a, u16 v) { *(volatile u16 *)a = v; }
static void w32(uptr a, u32 v) { *(volatile u32 *)a = v; }
static u8 r8(uptr a) { return *(volatile u8 *)a; }
static u16 r16(uptr a) { return *(volatile u16 *)a; }
static u32 r32(uptr a) { return *(volatile u32 *)a; }

/* One request: header (type, sector), a data buffer of len bytes, a status byte. */
static uptr data_addr = DATA;
static u8 request(u32 type, u32 sector, u32 len, int device_writes) {
    volatile u32 *hdr = (volatile u32 *)HDR;
    hdr[0] = type; hdr[1] = 0; hdr[2] = sector; hdr[3] = 0;
    w8(STATUS, 0xff);
    volatile struct desc *d = (volatile struct desc *)DESC;
    d[0].addr = HDR; d[0].len = 16; d[0].flags = 1; d[0].next = 1;
    int n = 1;
    if (len) {
        d[1].addr = data_addr; d[1].len = len; d[1].flags = 1 | (device_writes ? 2 : 0); d[1].next = 2;
        n = 2;
    }
    d[n].addr = STATUS; d[n].len = 1; d[n].flags = 2; d[n].next = 0;
    u16 idx = r16(AVAIL + 2);
    w16(AVAIL + 4 + 2 * (idx % QSIZE), 0);
    __sync_synchronize();
    w16(AVAIL + 2, idx + 1);
    __sync_synchronize();
    w16(notify_addr, 0);
    for (u32 spins = 0; r16(USED + 2) == used_seen; spins++) {
        if (spins > 100000000u) fail("timeout waiting for the used ring");
        pause();
    }
    used_seen++;
    return r8(STATUS);
}

void guest_main(u32 magic, struct mb_info *mbi) {
    (void)magic;
    const char *cmdline = (mbi->flags & 4) ? (const char *)(uptr)mbi->cmdline : "";
    int intx = 0, readall = 0;
    for (const char *p = cmdline; *p; p++) {
        if (starts_with(p, "intx")) intx = 1;
        if (starts_with(p, "readall")) readall = 1;
    }
    uptr isr_addr = 0;
    u32 slot_found = 0;
    for (u32 slot = 0; slot < 32; slot++) {
        u32 id = cf8_read(slot, 0);
        if (id == 0xffffffffu) continue;
        if (ecam_read(slot, 0) != id || ecam_read(slot, 8) != cf8_read(slot, 8)) fail("ECAM and CF8 disagree");
        puts("pci: slot "); put_dec(slot); puts(" id "); put_hex(id); puts(" class "); put_hex(cf8_read(slot, 8) >> 8); puts("\n");
        if (id == 0x10421af4u && !slot_found) slot_found = slot;
    }
    if (!slot_found) fail("no virtio-blk device");
    u32 slot = slot_found;
    cf8_write(slot, 4, cf8_read(slot, 4) | 0x6); /* memory space + bus master */

    u32 notify_mult = 0, notify_bar = 0, notify_off = 0, msix_cap = 0;
    u32 cap = cf8_read(slot, 0x34) & 0xff;
    for (int guard = 0; cap && guard < 48; guard++) {
        u32 h = cf8_read(slot, cap);
        if ((h & 0xff) == 0x11) msix_cap = cap;
        if ((h & 0xff) == 0x09) {
            u32 type = (h >> 24) & 0xff;
            u32 bar = cf8_read(slot, cap + 4) & 0xff;
            u32 off = cf8_read(slot, cap + 8);
            u32 bar_lo = cf8_read(slot, 0x10 + 4 * bar);
            uptr base = bar_lo & ~0xfu; /* the BAR sits below 4 GiB */
            if (type == 1) common = base + off;
            if (type == 2) { notify_bar = base; notify_off = off; notify_mult = cf8_read(slot, cap + 16); }
            if (type == 3) isr_addr = base + off;
            if (type == 4) devcfg = base + off;
        }
        cap = (h >> 8) & 0xff;
    }
    if (!common || !notify_bar || !devcfg) fail("missing virtio capabilities");
    if (!msix_cap) fail("no MSI-X capability");
    u32 table = cf8_read(slot, msix_cap + 4);
    uptr table_base = (cf8_read(slot, 0x10 + 4 * (table & 7)) & ~0xfu) + (table & ~7u);
    u32 pba = cf8_read(slot, msix_cap + 8);
    uptr pba_base = (cf8_read(slot, 0x10 + 4 * (pba & 7)) & ~0xfu) + (pba & ~7u);
    mmio_write32(0xfee000f0, mmio_read32(0xfee000f0) | 0x100); /* LAPIC software enable */

    w8(common + 0x14, 0);
    while (r8(common + 0x14) != 0) pause();
    w8(common + 0x14, 1);
    w8(common + 0x14, 1 | 2);
    w32(common + 0x00, 1);
    if (!(r32(common + 0x04) & 1)) fail("no VIRTIO_F_VERSION_1");
    w32(common + 0x08, 0); w32(common + 0x0c, 0);
    w32(common + 0x08, 1); w32(common + 0x0c, 1);
    w8(common + 0x14, 1 | 2 | 8);
    if (!(r8(common + 0x14) & 8)) fail("FEATURES_OK not accepted");

    w16(common + 0x16, 0);
    if (r16(common + 0x18) < QSIZE) fail("queue too small");
    w16(common + 0x18, QSIZE);
    w16(common + 0x1a, 1);
    if (r16(common + 0x1a) != 1) fail("queue MSI-X vector not accepted");
    w32(common + 0x20, DESC); w32(common + 0x24, 0);
    w32(common + 0x28, AVAIL); w32(common + 0x2c, 0);
    w32(common + 0x30, USED); w32(common + 0x34, 0);
    for (u32 i = 0; i < 0x3000; i++) MEM(DESC + i)[0] = 0;
    notify_addr = notify_bar + notify_off + r16(common + 0x1e) * notify_mult;
    w16(common + 0x1c, 1);
    w8(common + 0x14, 1 | 2 | 8 | 4);
    u32 line = cf8_read(slot, 0x3c) & 0xff;
    if (intx) {
        /* MSI-X stays off: completions raise INTx pin A, routed to IOAPIC pin `line`
         * (level-triggered, vector 0x42, to APIC 0). */
        ioapic_write(0x11 + 2 * line, 0);
        ioapic_write(0x10 + 2 * line, INTX_VECTOR | (1u << 15));
    } else {
        /* MSI-X entry 1: fixed delivery to APIC 0, vector 0x41, masked; then enable MSI-X. */
        w32(table_base + 16 + 0, 0xfee00000u);
        w32(table_base + 16 + 4, 0);
        w32(table_base + 16 + 8, MSI_VECTOR);
        w32(table_base + 16 + 12, 1);
        cf8_write(slot, msix_cap, cf8_read(slot, msix_cap) | (0x8000u << 16));
    }

    u32 cap_lo = r32(devcfg), cap_hi = r32(devcfg + 4);
    puts("virtio-blk: capacity "); put_dec(((u64)cap_hi << 32) | cap_lo); puts(" sectors\n");

    if (readall) {
        /* Read the whole disk (a rate-limited one: the host times this run). */
        w32(table_base + 16 + 12, 0);
        data_addr = BIG;
        u32 done = 0;
        for (u32 sector = 0; sector + BIG_LEN / 512 <= cap_lo; sector += BIG_LEN / 512) {
            if (request(0, sector, BIG_LEN, 1) != 0) fail("readall");
            done += BIG_LEN;
        }
        puts("virtio-blk: read "); put_dec(done); puts(" bytes\n");
        acpi_poweroff();
    }
    if (request(0, 0, 512, 1) != 0) fail("read of sector 0");
    puts("virtio-blk: sector 0 fnv1a="); put_hex(fnv1a((const u8 *)DATA, 512)); puts("\n");
    if (intx) {
        for (u32 spins = 0; !lapic_irr(INTX_VECTOR) && spins < 100000u; spins++) pause();
        puts("virtio-blk: intx line="); put_dec(line); puts(" delivered="); put_dec(lapic_irr(INTX_VECTOR));
        puts(" isr="); put_dec(r8(isr_addr) & 1); puts(" isr-after-read="); put_dec(r8(isr_addr) & 1); puts("\n");
    } else {
        puts("virtio-blk: msi-x masked pending="); put_dec((r32(pba_base) >> 1) & 1);
        puts(" delivered="); put_dec(lapic_irr(MSI_VECTOR)); puts("\n");
        w32(table_base + 16 + 12, 0); /* unmask: the pending message goes out now */
        for (u32 spins = 0; !lapic_irr(MSI_VECTOR) && spins < 100000u; spins++) pause();
        puts("virtio-blk: msi-x unmasked pending="); put_dec((r32(pba_base) >> 1) & 1);
        puts(" delivered="); put_dec(lapic_irr(MSI_VECTOR)); puts("\n");
    }

    for (u32 i = 0; i < 512; i++) MEM(DATA + i)[0] = (u8)(0x5a ^ i);
    u8 st = request(1, 1, 512, 0);
    puts("virtio-blk: write sector 1 status "); put_dec(st); puts("\n");
    puts("virtio-blk: flush status "); put_dec(request(4, 0, 0, 0)); puts("\n");

    for (u32 i = 0; i < 32; i++) MEM(DATA + i)[0] = 0;
    if (request(8, 0, 20, 1) != 0) fail("get id");
    puts("virtio-blk: id "); puts((const char *)DATA); puts("\n");
    puts("virtio-blk: past-end read status "); put_dec(request(0, cap_lo + 8, 512, 1)); puts("\n");
    acpi_poweroff();
}
