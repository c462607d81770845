/* SMP guest: finds the processors in the ACPI MADT (and counts them in the MP table),
 * starts every AP with INIT/SIPI through the local APIC, and each AP prints its APIC id. */
#include "guest.h"

#define LAPIC 0xfee00000u
#define LAPIC_ID 0x20
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_SVR 0xf0

extern char ap_trampoline_start[], ap_trampoline_end[];
volatile u32 ap_stack_index;
static volatile u32 print_lock;
static volatile u32 aps_online;

static void lock(void) { while (__sync_lock_test_and_set(&print_lock, 1)) pause(); }
static void unlock(void) { __sync_lock_release(&print_lock); }
static u32 apic_id(void) { return mmio_read32(LAPIC + LAPIC_ID) >> 24; }
static int sig_eq(const u8 *p, const char *s, int n) { for (int i = 0; i < n; i++) if (p[i] != (u8)s[i]) return 0; return 1; }
static void delay(u32 n) { for (volatile u32 i = 0; i < n; i++) pause(); }

void ap_main(void) {
    u32 id = apic_id();
    lock();
    puts("AP apic "); put_dec(id); puts(" online\n");
    unlock();
    __sync_fetch_and_add(&aps_online, 1);
}

static u32 madt_apic_ids(u8 *ids, u32 max) {
    u8 *rsdp = 0;
    for (uptr p = 0xe0000; p < 0x100000; p += 16)
        if (sig_eq((u8 *)p, "RSD PTR ", 8)) { rsdp = (u8 *)p; break; }
    if (!rsdp) { puts("no RSDP\n"); return 0; }
    u8 *xsdt = (u8 *)(uptr)*(u32 *)(rsdp + 24);
    u32 xlen = *(u32 *)(xsdt + 4);
    for (u32 off = 36; off + 8 <= xlen; off += 8) {
        u8 *t = (u8 *)(uptr)*(u32 *)(xsdt + off);
        if (!sig_eq(t, "APIC", 4)) continue;
        u32 len = *(u32 *)(t + 4), n = 0;
        for (u32 o = 44; o + 2 <= len && t[o + 1] >= 2; o += t[o + 1]) {
            if (t[o] == 0 && (*(u32 *)(t + o + 4) & 1) && n < max) ids[n++] = t[o + 3];
        }
        return n;
    }
    puts("no MADT\n");
    return 0;
}

static u32 mptable_cpus(void) {
    for (uptr p = 0x9fc00; p < 0xa0000; p += 16) {
        if (!sig_eq((u8 *)p, "_MP_", 4)) continue;
        u8 *t = (u8 *)(uptr)*(u32 *)(p + 4);
        u32 count = *(u16 *)(t + 34), n = 0;
        u8 *e = t + 44;
        for (u32 i = 0; i < count; i++) {
            if (e[0] == 0) { n++; e += 20; } else e += 8;
        }
        return n;
    }
    return 0;
}

void guest_main(u32 magic, void *mbi) {
    (void)magic; (void)mbi;
    u8 ids[64];
    u32 n = madt_apic_ids(ids, 64);
    u32 self = apic_id();
    puts("SMP: MADT cpus="); put_dec(n); puts(" mptable cpus="); put_dec(mptable_cpus());
    puts(" BSP apic "); put_dec(self); puts("\n");
    mmio_write32(LAPIC + LAPIC_SVR, mmio_read32(LAPIC + LAPIC_SVR) | 0x100);
    u8 *dst = (u8 *)0x8000;
    for (char *s = ap_trampoline_start; s < ap_trampoline_end; s++) *dst++ = (u8)*s;
    for (u32 i = 0; i < n; i++) {
        if (ids[i] == self) continue;
        mmio_write32(LAPIC + LAPIC_ICR_HI, (u32)ids[i] << 24);
        mmio_write32(LAPIC + LAPIC_ICR_LO, 0x4500); /* INIT */
        delay(10000);
        for (int k = 0; k < 2; k++) {
            mmio_write32(LAPIC + LAPIC_ICR_HI, (u32)ids[i] << 24);
            mmio_write32(LAPIC + LAPIC_ICR_LO, 0x4600 | 0x08); /* SIPI, vector 0x08 -> 0x8000 */
            delay(1000);
        }
    }
    for (u32 spins = 0; aps_online < n - 1; spins++) {
        if (spins > 200000000u) {
            lock(); puts("timeout waiting for APs\n"); unlock();
            debug_exit(3);
        }
        pause();
    }
    lock(); puts("all "); put_dec(n); puts(" cpus online\n"); unlock();
    acpi_poweroff();
}
