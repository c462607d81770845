/* Multiboot guest that prints "spinning" and never ends: with interrupts disabled it
 * spins, or halts when its command line starts with 'h'. Only the host can stop it. */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0x4
    .long -(0x1BADB002 + 0x4)
    .text
    .code32
    .globl _start
_start:
    cli
    mov 16(%ebx), %edi           /* multiboot info: cmdline */
    mov $msg, %esi
1:  lodsb
    test %al, %al
    jz 3f
    mov %al, %cl
    mov $0x3fd, %dx
2:  inb %dx, %al
    test $0x20, %al
    jz 2b
    mov $0x3f8, %dx
    mov %cl, %al
    outb %al, %dx
    jmp 1b
3:  cmpb $'h', (%edi)
    je 5f
4:  jmp 4b
5:  hlt
    jmp 5b
msg: .asciz "spinning\n"
