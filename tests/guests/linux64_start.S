/* 64-bit Linux boot protocol entry: long mode, identity paging, RSI = boot_params.
 * For the bzImage variant the protected-mode payload starts with a 32-bit entry at
 * load address + 0 (unused by vessel) and the 64-bit entry at + 0x200. */
    .section .text.head, "ax"
    .code32
startup_32:
    hlt
    jmp startup_32
    .org 0x200
    .code64
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    mov %rsi, %rdi
    call guest_main
1:  hlt
    jmp 1b

    .section .bss
    .align 16
    .space 16384
stack_top:
