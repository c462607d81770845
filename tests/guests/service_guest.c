/* A long-running guest for the VM-management tests: it sleeps in `hlt` between PIT ticks
 * and keyboard interrupts (8259 PIC, IRQ 0 and 1), echoes serial input line by line, and
 * powers off when the keyboard delivers Ctrl-Alt-Del or IRQ 5 (the ACPI power button's GED
 * interrupt) arrives — what `vessel stop` sends, selected by "listen=kbd" or "listen=acpi"
 * on the command line (default: both). Its interrupt handler
 * does not return with iret (this host's nested KVM cannot emulate it): it acknowledges the
 * PIC and restarts the main loop on a fresh stack. */
#include "guest.h"

extern char irq_entry[], power_button_entry[];
void power_button(void);
void main_loop(void);
__asm__(".globl irq_entry\n"
        "irq_entry:\n"
        "  movb $0x20, %al\n"
        "  outb %al, $0x20\n"            /* PIC EOI */
        "  mov $loop_stack_top, %esp\n"
        "  jmp main_loop\n"
        ".globl power_button_entry\n"
        "power_button_entry:\n"
        "  movb $0x20, %al\n"
        "  outb %al, $0x20\n"
        "  mov $loop_stack_top, %esp\n"
        "  jmp power_button\n");

u8 loop_stack[8192] __attribute__((aligned(16)));
__asm__(".globl loop_stack_top\n.set loop_stack_top, loop_stack + 8192\n");

static u64 idt[256];
static struct { u16 limit; u32 base; } __attribute__((packed)) idt_desc;
static char line[128];
static u32 line_len;
static u8 last_scan;
static int listen_kbd = 1, listen_acpi = 1;

void power_button(void) {
    puts("power button: powering off\n");
    acpi_poweroff();
}

static void setup_interrupts(void) {
    u16 cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    u32 isr = (u32)(uptr)irq_entry;
    for (int v = 0x20; v < 0x30; v++)
        idt[v] = (u64)(isr & 0xffff) | ((u64)cs << 16) | ((u64)0x8e00 << 32) | ((u64)(isr >> 16) << 48);
    u32 pb = (u32)(uptr)power_button_entry;
    idt[0x25] = (u64)(pb & 0xffff) | ((u64)cs << 16) | ((u64)0x8e00 << 32) | ((u64)(pb >> 16) << 48);
    idt_desc.limit = sizeof(idt) - 1;
    idt_desc.base = (u32)(uptr)idt;
    __asm__ volatile("lidt %0" : : "m"(idt_desc));
    mmio_write32(0xfee000f0, mmio_read32(0xfee000f0) | 0x100); /* LAPIC on: LINT0 is ExtINT */
    outb(0x20, 0x11); outb(0x21, 0x20); outb(0x21, 0x04); outb(0x21, 0x01);
    outb(0xa0, 0x11); outb(0xa1, 0x28); outb(0xa1, 0x02); outb(0xa1, 0x01);
    /* IRQ 0 (PIT), 1 (keyboard) and 5 (ACPI GED: power button) */
    outb(0x21, (u8)~(1 | (listen_kbd ? 2 : 0) | (listen_acpi ? 0x20 : 0)));
    outb(0xa1, 0xff);
    outb(0x43, 0x34); /* PIT channel 0, rate generator, ~100 Hz */
    outb(0x40, 11932 & 0xff);
    outb(0x40, 11932 >> 8);
}

void main_loop(void) {
    for (;;) {
        while (inb(0x64) & 1) {
            u8 sc = inb(0x60);
            if (sc == 0x71 && last_scan == 0xe0 && listen_kbd) {
                puts("ctrl-alt-del: powering off\n");
                acpi_poweroff();
            }
            last_scan = sc;
        }
        while (inb(COM1 + 5) & 1) {
            char c = (char)inb(COM1);
            if (c == '\r' || c == '\n') {
                line[line_len] = 0;
                puts("echo: "); puts(line); puts("\n");
                line_len = 0;
            } else if (line_len < sizeof(line) - 1) {
                line[line_len++] = c;
            }
        }
        __asm__ volatile("sti; hlt; cli");
    }
}

struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

void guest_main(u32 magic, struct mb_info *mbi) {
    (void)magic;
    const char *cmdline = (mbi->flags & 4) ? (const char *)(uptr)mbi->cmdline : "";
    for (const char *p = cmdline; *p; p++) {
        if (starts_with(p, "listen=kbd")) listen_acpi = 0;
        if (starts_with(p, "listen=acpi")) listen_kbd = 0;
    }
    setup_interrupts();
    puts("service up\n");
    __asm__ volatile("mov $loop_stack_top, %esp; jmp main_loop");
}
