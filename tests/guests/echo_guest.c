/* Serial input guest: reads bytes from COM1 until '.', then prints how many it got and
 * their FNV-1a hash, and powers off. */
#include "guest.h"

void guest_main(u32 magic, void *mbi) {
    (void)magic; (void)mbi;
    puts("ready\n");
    u32 n = 0, h = 2166136261u;
    for (;;) {
        while (!(inb(COM1 + 5) & 1)) pause();
        u8 c = inb(COM1);
        if (c == '.') break;
        n++;
        h = (h ^ c) * 16777619u;
    }
    puts("received "); put_dec(n); puts(" bytes fnv1a="); put_hex(h); puts("\n");
    acpi_poweroff();
}
