/* PVH guest: prints what vessel put in hvm_start_info (command line, memory map, module
 * 0, RSDP), then powers off. */
#include "guest.h"

struct start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};
struct memmap_entry { u64 addr, size; u32 type, reserved; };
struct mod_entry { u64 paddr, size, cmdline_paddr, reserved; };

void guest_main(struct start_info *si) {
    puts("pvh: magic="); put_hex(si->magic); puts(" version="); put_dec(si->version); puts("\n");
    puts("cmdline: "); puts((const char *)(uptr)si->cmdline_paddr); puts("\n");
    struct memmap_entry *m = (struct memmap_entry *)(uptr)si->memmap_paddr;
    for (u32 i = 0; i < si->memmap_entries; i++) {
        puts("memmap: "); put_hex(m[i].addr); puts(" "); put_hex(m[i].size); puts(" "); put_dec(m[i].type); puts("\n");
    }
    if (si->nr_modules) {
        struct mod_entry *mod = (struct mod_entry *)(uptr)si->modlist_paddr;
        puts("module: size="); put_dec(mod->size);
        puts(" fnv1a="); put_hex(fnv1a((const u8 *)(uptr)mod->paddr, (u32)mod->size)); puts("\n");
    }
    puts("rsdp: "); put_hex(si->rsdp_paddr); puts("\n");
    acpi_poweroff();
}
