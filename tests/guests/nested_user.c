/* User mode and back, as Linux does it: iretq to ring 3, `syscall` from ring 3 into the
 * LSTAR entry at ring 0 (on a supervisor-only page, as Linux's entry text is), and faults
 * from ring 3 through the IDT on the TSS's RSP0 stack. Prints what ring the syscall entry
 * runs at ("syscall: cs=0x10" when it works) or which fault ends the test, then powers
 * off. On kvm_pvm the host leaves a user-mode syscall in ring 3 and vessel completes it
 * (crates/x86_emulator/src/syscall_fixup.rs). */
#include "guest.h"

struct gate {
    u16 off_lo, sel;
    u8 ist, type;
    u16 off_mid;
    u32 off_hi, zero;
} __attribute__((packed));

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3, iomap;
} __attribute__((packed));

static struct gate idt[32] __attribute__((aligned(16)));
static struct tss tss __attribute__((aligned(16)));
/* 0x10 kernel CS, 0x18 kernel DS, 0x20 unused (STAR's sysret base), 0x28 user DS,
 * 0x30 user CS (sysretq: base + 16), 0x38 TSS (16 bytes). */
static u64 gdt[9] __attribute__((aligned(16))) = {
    0, 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL, 0x00cffb000000ffffULL,
    0x00cff3000000ffffULL, 0x00affb000000ffffULL, 0, 0,
};
static u64 pml4[512] __attribute__((aligned(4096)));
static u64 pdpt[512] __attribute__((aligned(4096)));
static u64 pd[512] __attribute__((aligned(4096)));
/* The first GiB again at 1 GiB, supervisor-only: the syscall entry runs from there. */
static u64 pd_kernel[512] __attribute__((aligned(4096)));
#define KERNEL_ALIAS 0x40000000ULL
static u8 kstack[8192] __attribute__((aligned(16)));
static u8 ustack[8192] __attribute__((aligned(16)));

volatile u64 fault_vector, fault_rip, fault_cs, fault_code;

extern char syscall_entry[], user_entry[], fault_entries[];

/* The syscall entry records CS and whether it can do port I/O, then reports. */
__asm__(".globl syscall_entry\n"
        "syscall_entry:\n"
        "  lea kstack_top(%rip), %rsp\n"
        "  mov %cs, %rdi\n"
        "  call syscall_report\n"
        "1: hlt\n"
        "  jmp 1b\n"
        ".globl user_entry\n"
        "user_entry:\n"
        "  mov $60, %eax\n"
        "  syscall\n"
        "  ud2\n"
        /* Fault stubs: vector in %rdi, error code on the stack for 13 and 14. */
        "  .balign 16\n"
        ".globl fault_entries\n"
        "fault_entries:\n"
        "  push $0\n push $6\n jmp fault_common\n"   /* #UD */
        "  .balign 16\n"
        "  push $13\n jmp fault_common\n"            /* #GP */
        "  .balign 16\n"
        "  push $14\n jmp fault_common\n"            /* #PF */
        "fault_common:\n"
        "  pop %rdi\n"
        "  pop %rsi\n"            /* error code */
        "  mov (%rsp), %rdx\n"    /* RIP */
        "  mov 8(%rsp), %rcx\n"   /* CS */
        "  call fault_report\n"
        "2: hlt\n"
        "  jmp 2b\n");

__asm__(".section .bss\n .balign 16\n .space 8192\n kstack_top:\n .text\n");

void syscall_report(u64 cs) {
    puts("syscall: cs=");
    put_hex(cs);
    puts("\n");
    acpi_poweroff();
}

void fault_report(u64 vector, u64 code, u64 rip, u64 cs) {
    puts("fault: vector=");
    put_dec(vector);
    puts(" code=");
    put_hex(code);
    puts(" rip=");
    put_hex(rip);
    puts(" cs=");
    put_hex(cs);
    puts("\n");
    acpi_poweroff();
}

static void set_gate(int vector, u64 handler, u8 dpl) {
    idt[vector] = (struct gate){(u16)handler, 0x10, 0, (u8)(0x8e | (dpl << 5)),
                                (u16)(handler >> 16), (u32)(handler >> 32), 0};
}

static void wrmsr(u32 msr, u64 v) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}
static u64 rdmsr(u32 msr) {
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

struct dtr {
    u16 limit;
    u64 base;
} __attribute__((packed));

void guest_main(uptr bp) {
    (void)bp;
    /* Identity map of the first GiB with user-accessible 2 MiB pages. */
    for (u64 i = 0; i < 512; i++) pd[i] = (i << 21) | 0x87;
    for (u64 i = 0; i < 512; i++) pd_kernel[i] = (i << 21) | 0x83;
    pdpt[0] = (u64)pd | 0x7;
    pdpt[1] = (u64)pd_kernel | 0x3;
    pml4[0] = (u64)pdpt | 0x7;
    __asm__ volatile("mov %0, %%cr3" : : "r"((u64)pml4) : "memory");

    u64 t = (u64)&tss;
    tss.rsp0 = (u64)&kstack[sizeof(kstack)];
    tss.iomap = sizeof(tss);
    gdt[7] = (sizeof(tss) - 1) | ((t & 0xffffff) << 16) | (0x89ULL << 40) | (((t >> 24) & 0xff) << 56);
    gdt[8] = t >> 32;
    struct dtr g = {sizeof(gdt) - 1, (u64)gdt};
    __asm__ volatile("lgdt %0" : : "m"(g));
    __asm__ volatile("ltr %w0" : : "r"(0x38));

    set_gate(6, (u64)fault_entries, 0);
    set_gate(13, (u64)fault_entries + 16, 0);
    set_gate(14, (u64)fault_entries + 32, 0);
    struct dtr d = {sizeof(idt) - 1, (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(d));

    wrmsr(0xc0000080, rdmsr(0xc0000080) | 1);             /* EFER.SCE */
    wrmsr(0xc0000081, (0x20ULL << 48) | (0x10ULL << 32)); /* STAR */
    wrmsr(0xc0000082, (u64)syscall_entry + KERNEL_ALIAS); /* LSTAR */
    wrmsr(0xc0000084, 0x200);                             /* FMASK: IF */

    /* vessel arms its syscall fix-up on the exits where it emulates an instruction for the
     * host (Linux makes several before it starts user space); popcnt is one on kvm_pvm. */
    u64 bits;
    __asm__ volatile("popcnt %1, %0" : "=r"(bits) : "r"((u64)0xff) : "cc");
    puts("user: entering ring 3, popcnt=");
    put_dec(bits);
    puts("\n");
    __asm__ volatile("pushq $0x2b\n"
                     "pushq %0\n"
                     "pushq $0x2\n"
                     "pushq $0x33\n"
                     "pushq %1\n"
                     "iretq\n"
                     :
                     : "r"((u64)&ustack[sizeof(ustack)]), "r"((u64)user_entry)
                     : "memory");
}
