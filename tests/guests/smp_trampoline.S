/* AP start-up code. The BSP copies [ap_trampoline_start, ap_trampoline_end) to 0x8000 and
 * sends SIPI with vector 0x08; APs start here in real mode at 0800:0000. */
    .section .text
    .code16
    .globl ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl 0x8000 + (tramp_gdt_desc - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(0x8000 + (tramp32 - ap_trampoline_start))
    .code32
tramp32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $1, %eax
    lock xadd %eax, ap_stack_index
    inc %eax
    shl $12, %eax
    add $ap_stacks, %eax
    mov %eax, %esp
    mov $ap_main, %eax          /* absolute: this code runs from its copy at 0x8000 */
    call *%eax
1:  cli
    hlt
    jmp 1b
    .align 8
tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
tramp_gdt_desc:
    .word 23
    .long 0x8000 + (tramp_gdt - ap_trampoline_start)
ap_trampoline_end:

    .section .bss
    .align 4096
    .globl ap_stacks
ap_stacks:
    .space 4096 * 65
