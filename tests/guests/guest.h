/* Minimal freestanding helpers for vessel's test guests (32- and 64-bit). */
#ifndef VESSEL_TEST_GUEST_H
#define VESSEL_TEST_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long uptr;

#define COM1 0x3f8

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(uptr addr) { return *(volatile u32 *)addr; }
static inline void mmio_write32(uptr addr, u32 v) { *(volatile u32 *)addr = v; }
static inline void pause(void) { __asm__ volatile("pause"); }
static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

/* The wait between two steps of the counting guests: `delay` pause instructions, and at
 * least delay * 5000 TSC ticks (0.2 s for delay=100000 at 2.5 GHz). Where ring 0 is
 * emulated (kvm_pvm) the pauses alone take longer; on hardware KVM a pause takes
 * nanoseconds and the floor keeps a step long enough for a test to act mid-count. A TSC
 * that went back (a restored VM's) ends the floor early: one short step. */
static void step_delay(u64 delay) {
    u64 start = rdtsc(), now = start;
    for (u64 i = 0; i < delay || now - start < delay * 5000; i++) {
        pause();
        if ((i & 1023) == 0) now = rdtsc();
    }
}

static void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) pause();
    outb(COM1, (u8)c);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void put_hex(u64 v) {
    static const char digits[] = "0123456789abcdef";
    char buf[19];
    int i = 18;
    buf[i] = 0;
    do { buf[--i] = digits[v & 0xf]; v >>= 4; } while (v);
    buf[--i] = 'x';
    buf[--i] = '0';
    puts(&buf[i]);
}
static void put_dec(u64 v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    puts(&buf[i]);
}
static int starts_with(const char *s, const char *p) {
    while (*p) if (*s++ != *p++) return 0;
    return 1;
}
/* Value of "key=" in a space-separated command line, as a decimal number; -1 if absent. */
static long cmdline_number(const char *cmdline, const char *key) {
    const char *s = cmdline;
    while (*s) {
        while (*s == ' ') s++;
        if (starts_with(s, key)) {
            const char *p = s;
            while (*p && *p != '=') p++;
            if (*p == '=') {
                long v = 0;
                for (p++; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
                return v;
            }
        }
        while (*s && *s != ' ') s++;
    }
    return -1;
}
/* ACPI S5 through vessel's HW-reduced sleep control register (see arch::layout). */
static void acpi_poweroff(void) {
    outb(0x600, (5 << 2) | (1 << 5));
    for (;;) __asm__ volatile("hlt");
}
static void debug_exit(u32 code) {
    outl(0xf4, code);
    for (;;) __asm__ volatile("hlt");
}
static u32 fnv1a(const u8 *p, u32 len) {
    u32 h = 2166136261u;
    for (u32 i = 0; i < len; i++) { h ^= p[i]; h *= 16777619u; }
    return h;
}
#endif
