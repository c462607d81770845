/* Multiboot guest that prints from 32-bit protected mode, drops to 16-bit real mode,
 * prints again through the BIOS-free UART, then powers off through ACPI S5. */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0
    .long -0x1BADB002

    .text
    .code32
    .globl _start
_start:
    mov $0x7000, %esp
    mov $msg32, %esi
    call puts32
    /* Copy the real-mode stub below 1 MiB, where real mode can reach it. */
    mov $stub16_start, %esi
    mov $0x8000, %edi
    mov $(stub16_end - stub16_start), %ecx
    rep movsb
    lgdt gdt_desc
    ljmp $0x08, $0x8000          /* 16-bit protected-mode code segment, base 0 */

puts32:
1:  lodsb
    test %al, %al
    jz 3f
    mov %al, %bl
    mov $0x3fd, %dx
2:  inb %dx, %al
    test $0x20, %al
    jz 2b
    mov $0x3f8, %dx
    mov %bl, %al
    outb %al, %dx
    jmp 1b
3:  ret

msg32: .asciz "hello from 32-bit protected mode\n"

    .align 8
gdt:
    .quad 0
    .quad 0x00009a000000ffff     /* 16-bit code, base 0, limit 64 KiB */
    .quad 0x000092000000ffff     /* 16-bit data */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt

/* Position-dependent on 0x8000: assembled here, copied there. */
    .code16
stub16_start:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov %cr0, %eax
    and $0xfffffffe, %eax
    mov %eax, %cr0
    ljmp $0x0000, $(0x8000 + real_mode - stub16_start)
real_mode:
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7000, %sp
    mov $(0x8000 + msg16 - stub16_start), %si
1:  lodsb
    test %al, %al
    jz 3f
    mov %al, %bl
    mov $0x3fd, %dx
2:  inb %dx, %al
    test $0x20, %al
    jz 2b
    mov $0x3f8, %dx
    mov %bl, %al
    outb %al, %dx
    jmp 1b
3:  mov $0x600, %dx
    mov $0x34, %al               /* SLP_TYP=5 (S5) | SLP_EN */
    outb %al, %dx
4:  hlt
    jmp 4b
msg16: .asciz "hello from 16-bit real mode\n"
stub16_end:
