/* Multiboot guest for the confinement tests: one write to the test-hook port 0x5e5 (a
 * VMM built with the test-hooks feature does what VESSEL_TEST_HOOK says), then
 * isa-debug-exit with code 5 (vessel exits 11). */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0x0
    .long -(0x1BADB002 + 0x0)
    .text
    .code32
    .globl _start
_start:
    cli
    mov $0x5e5, %dx
    mov $1, %al
    outb %al, %dx
    mov $0xf4, %dx
    mov $5, %eax
    outl %eax, %dx
1:  hlt
    jmp 1b
