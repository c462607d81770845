/* Multiboot guest that triple-faults: an empty IDT, then a divide error. (int3 is not
 * used: this host's nested KVM fails to emulate it.) */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0
    .long -0x1BADB002
    .text
    .code32
    .globl _start
_start:
    lidt idt_desc
    xor %ecx, %ecx
    div %ecx
1:  jmp 1b
idt_desc:
    .word 0
    .long 0
