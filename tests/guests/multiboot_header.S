/* Multiboot v1 header and 32-bit entry shared by the C multiboot guests. */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0x00000003            /* page-align modules, memory info */
    .long -(0x1BADB002 + 0x3)

    .section .text
    .code32
    .globl _start
_start:
    mov $stack_top, %esp
    push %ebx                   /* multiboot info */
    push %eax                   /* magic */
    call guest_main
1:  hlt
    jmp 1b

    .section .bss
    .align 16
    .space 16384
stack_top:
