/* Multiboot guest that jumps into the MMIO hole, where no memory backs the address:
 * KVM cannot fetch the instruction and reports an emulation failure. */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0
    .long -0x1BADB002
    .text
    .code32
    .globl _start
_start:
    mov $0xd0000000, %eax
    jmp *%eax
