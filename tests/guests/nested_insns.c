/* Ring-0 instructions a software nested KVM (kvm_pvm) cannot emulate, each checked by its
 * effect: int3 through an IDT gate and iretq back, an explicit iretq, lock cmpxchg16b
 * (equal and not equal), popcnt, swapgs, xsave/xrstor. On hardware KVM they run natively;
 * on kvm_pvm vessel emulates them. Prints one line per check, then powers off. */
#include "guest.h"

struct gate {
    u16 off_lo, sel;
    u8 ist, type;
    u16 off_mid;
    u32 off_hi, zero;
} __attribute__((packed));

static struct gate idt[32] __attribute__((aligned(16)));
/* Linux's 64-bit layout: 0x10 kernel CS, 0x18 kernel DS (the selectors vessel boots with). */
static u64 gdt[4] __attribute__((aligned(16))) = {
    0, 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL,
};
static u8 xarea[2][1024] __attribute__((aligned(64)));
static u64 pair[2] __attribute__((aligned(16)));

volatile u64 bp_count, bp_rip;
extern char bp_entry[], after_int3[], after_iretq[];

__asm__(".globl bp_entry\n"
        "bp_entry:\n"
        "  push %rax\n"
        "  incq bp_count(%rip)\n"
        "  mov 8(%rsp), %rax\n"
        "  mov %rax, bp_rip(%rip)\n"
        "  pop %rax\n"
        "  iretq\n");

struct dtr {
    u16 limit;
    u64 base;
} __attribute__((packed));

static u64 rdmsr(u32 msr) {
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}
static void wrmsr(u32 msr, u64 v) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}

static void check(const char *what, int ok) {
    puts(what);
    puts(ok ? ": ok\n" : ": FAILED\n");
}

static void test_int3(void) {
    u64 handler = (u64)bp_entry;
    idt[3] = (struct gate){(u16)handler, 0x10, 0, 0x8e, (u16)(handler >> 16), (u32)(handler >> 32), 0};
    struct dtr d = {sizeof(idt) - 1, (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(d));
    __asm__ volatile("int3\n.globl after_int3\nafter_int3:" ::: "memory");
    check("int3 gate and iretq", bp_count == 1 && bp_rip == (u64)after_int3);
}

static void test_iretq(void) {
    u64 rflags_after;
    __asm__ volatile(
        "mov %%rsp, %%rax\n"
        "pushq $0x18\n"
        "pushq %%rax\n"
        "pushq $0x2c6\n" /* IF clear, ZF PF set, AC clear */
        "pushq $0x10\n"
        "lea after_iretq(%%rip), %%rax\n"
        "pushq %%rax\n"
        "iretq\n"
        ".globl after_iretq\n"
        "after_iretq:\n"
        "pushfq\n"
        "popq %0\n"
        : "=r"(rflags_after)
        :
        : "rax", "memory", "cc");
    check("iretq frame", (rflags_after & 0xfff) == 0x2c6);
}

static void test_cmpxchg16b(void) {
    pair[0] = 1;
    pair[1] = 2;
    u64 lo = 1, hi = 2;
    u8 zf;
    __asm__ volatile("lock cmpxchg16b %1\n setz %0"
                     : "=q"(zf), "+m"(pair[0]), "+a"(lo), "+d"(hi)
                     : "b"((u64)3), "c"((u64)4)
                     : "memory", "cc");
    int equal_ok = zf && pair[0] == 3 && pair[1] == 4;
    lo = 1;
    hi = 2;
    __asm__ volatile("lock cmpxchg16b %1\n setz %0"
                     : "=q"(zf), "+m"(pair[0]), "+a"(lo), "+d"(hi)
                     : "b"((u64)5), "c"((u64)6)
                     : "memory", "cc");
    int differ_ok = !zf && lo == 3 && hi == 4 && pair[0] == 3 && pair[1] == 4;
    check("cmpxchg16b", equal_ok && differ_ok);
}

static void test_popcnt(void) {
    u64 v = 0xf0f0f0f000000001ULL, n;
    __asm__ volatile("popcnt %1, %0" : "=r"(n) : "r"(v) : "cc");
    check("popcnt", n == 17);
}

static void test_swapgs(void) {
    wrmsr(0xc0000101, 0x1111000);
    wrmsr(0xc0000102, 0x2222000);
    __asm__ volatile("swapgs" ::: "memory");
    check("swapgs", rdmsr(0xc0000101) == 0x2222000 && rdmsr(0xc0000102) == 0x1111000);
}

static void test_xsave(void) {
    u32 ecx;
    __asm__ volatile("cpuid" : "=c"(ecx) : "a"(1), "c"(0) : "ebx", "edx");
    if (!(ecx & (1u << 26))) {
        puts("xsave: not offered\n");
        return;
    }
    u64 cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    cr4 |= (1 << 9) | (1 << 10) | (1 << 18); /* OSFXSR, OSXMMEXCPT, OSXSAVE */
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
    __asm__ volatile("xsetbv" : : "c"(0), "a"(3), "d"(0));
    /* XMM0 := pattern through xrstor, then xsave it into the second area. */
    for (int i = 0; i < 16; i++) xarea[0][160 + i] = (u8)(0xa0 + i);
    xarea[0][24] = 0x80; /* MXCSR 0x1f80 */
    xarea[0][25] = 0x1f;
    xarea[0][512] = 2; /* XSTATE_BV: SSE */
    __asm__ volatile("xrstor64 %0" : : "m"(xarea[0]), "a"(3), "d"(0) : "memory");
    __asm__ volatile("xsave64 %0" : "=m"(xarea[1]) : "a"(3), "d"(0) : "memory");
    int ok = 1;
    for (int i = 0; i < 16; i++) ok &= xarea[1][160 + i] == (u8)(0xa0 + i);
    ok &= xarea[1][24] == 0x80 && xarea[1][25] == 0x1f;
    check("xrstor/xsave", ok);
}

void guest_main(uptr bp) {
    (void)bp;
    struct dtr g = {sizeof(gdt) - 1, (u64)gdt};
    __asm__ volatile("lgdt %0" : : "m"(g));
    test_int3();
    test_iretq();
    test_cmpxchg16b();
    test_popcnt();
    test_swapgs();
    test_xsave();
    puts("nested-insns: done\n");
    acpi_poweroff();
}
