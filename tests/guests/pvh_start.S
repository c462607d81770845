/* PVH entry (32-bit protected mode, paging off, EBX = hvm_start_info) and the Xen ELF
 * note that announces it (XEN_ELFNOTE_PHYS32_ENTRY = 18). */
    .section .note.Xen, "a", @note
    .align 4
    .long 4                      /* namesz */
    .long 4                      /* descsz */
    .long 18                     /* type: XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .align 4
    .long pvh_start

    .text
    .code32
    .globl pvh_start
pvh_start:
    mov $stack_top, %esp
    push %ebx
    call guest_main
1:  hlt
    jmp 1b

    .section .bss
    .align 16
    .space 16384
stack_top:
