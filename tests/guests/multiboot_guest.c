/* Multiboot guest: checks the magic, prints the info vessel passed (memory, map, command
 * line, module 0 and its FNV-1a hash) and exits through isa-debug-exit with the code given
 * as "exit=N" on its command line. */
#include "guest.h"

struct mb_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr;
    u32 drives_length, drives_addr, config_table, boot_loader_name;
};
struct mb_module { u32 mod_start, mod_end, string, reserved; };

void guest_main(u32 magic, struct mb_info *mbi) {
    if (magic != 0x2BADB002) { puts("bad multiboot magic\n"); debug_exit(0x7f); }
    puts("multiboot: flags="); put_hex(mbi->flags);
    puts(" mem_lower="); put_dec(mbi->mem_lower);
    puts(" mem_upper="); put_dec(mbi->mem_upper); puts("\n");
    if (mbi->flags & (1 << 9)) { puts("loader: "); puts((const char *)(uptr)mbi->boot_loader_name); puts("\n"); }
    if (mbi->flags & (1 << 6)) {
        u32 off = 0;
        while (off < mbi->mmap_length) {
            u32 *e = (u32 *)(uptr)(mbi->mmap_addr + off);
            u64 addr = e[1] | ((u64)e[2] << 32), len = e[3] | ((u64)e[4] << 32);
            puts("mmap: "); put_hex(addr); puts(" "); put_hex(len); puts(" "); put_dec(e[5]); puts("\n");
            off += e[0] + 4;
        }
    }
    const char *cmdline = (mbi->flags & (1 << 2)) ? (const char *)(uptr)mbi->cmdline : "";
    puts("cmdline: "); puts(cmdline); puts("\n");
    if ((mbi->flags & (1 << 3)) && mbi->mods_count > 0) {
        struct mb_module *m = (struct mb_module *)(uptr)mbi->mods_addr;
        u32 len = m->mod_end - m->mod_start;
        puts("module: start="); put_hex(m->mod_start); puts(" len="); put_dec(len);
        puts(" fnv1a="); put_hex(fnv1a((const u8 *)(uptr)m->mod_start, len));
        puts(" name="); puts((const char *)(uptr)m->string); puts("\n");
    } else {
        puts("module: none\n");
    }
    /* hang=1: stay running (halted) until the VMM stops the VM. */
    if (cmdline_number(cmdline, "hang") > 0)
        for (;;) __asm__ volatile("cli; hlt");
    long code = cmdline_number(cmdline, "exit");
    if (code < 0) acpi_poweroff();
    debug_exit((u32)code);
}
