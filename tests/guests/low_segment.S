/* Multiboot guest linked the default GNU ld way (`ld -m elf_i386 -Ttext 0x100000`, no
 * script): the first LOAD segment holds only the ELF and program headers, at 0xff000 in the
 * BIOS area. It checks the multiboot magic and that those headers were loaded ("\x7fELF" at
 * 0xff000), then exits through isa-debug-exit with 0x21 (status 0x43) on success. */
    .text
    .align 4
    .long 0x1BADB002
    .long 0x00000003
    .long -(0x1BADB002 + 0x3)
    .globl _start
    .code32
_start:
    mov $0x7f, %edx             /* failure code unless both checks pass */
    cmp $0x2BADB002, %eax
    jne 1f
    cmpl $0x464c457f, 0xff000
    jne 1f
    mov $0x21, %edx
1:  mov %edx, %eax
    mov $0xf4, %dx
    outl %eax, %dx
2:  hlt
    jmp 2b
    .section .note.GNU-stack, "", @progbits
