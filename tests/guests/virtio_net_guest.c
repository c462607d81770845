/* virtio-net guest: brings up the NIC (VERSION_1 + MAC), broadcasts a greeting frame
 * (ethertype 0x88b5) now and then, and prints the first greeting from another MAC it
 * receives; after that it sends a few more (so its peer hears it too) and powers off.
 * "rounds=N" on the command line bounds how long it tries (default 4000).
 * With "dhcp=1" it instead broadcasts DHCPDISCOVERs and prints the address the first
 * DHCPOFFER for it carries, and the MTU the device offers (VIRTIO_NET_F_MTU).
 * "console=1": also writes a line to a virtio-console when the NIC is up and another when
 * the exchange is done. "wait=N" (with "delay=D"): counts N steps ("wait=i" lines) before
 * the exchange, so a snapshot can be taken in between. */
#include "virtio_pci.h"

#define QS 8
#define RX_DESC 0x300000u
#define RX_AVAIL 0x301000u
#define RX_USED 0x302000u
#define TX_DESC 0x303000u
#define TX_AVAIL 0x304000u
#define TX_USED 0x305000u
#define RX_BUF 0x310000u
#define RX_BUF_LEN 2048u
#define TX_BUF 0x320000u
#define HDR 12u
#define F_MAC (1u << 5)

#define CON_DESC 0x340000u
#define CON_AVAIL 0x341000u
#define CON_USED 0x342000u
#define CON_BUF 0x350000u

static u8 mac[6];
static int have_con;
static uptr con_notify;
static u16 con_used_seen;

/* Write `s` to the virtio-console's transmitq and wait until the device took it. */
static void con_write(const char *s) {
    if (!have_con) return;
    u8 *b = (u8 *)CON_BUF;
    u32 n = 0;
    while (s[n]) { b[n] = (u8)s[n]; n++; }
    volatile struct vq_desc *d = (volatile struct vq_desc *)CON_DESC;
    d[0].addr = CON_BUF; d[0].len = n; d[0].flags = 0; d[0].next = 0;
    vq_publish(CON_AVAIL, QS, 0, con_notify, 1);
    for (u32 spins = 0; vr16(CON_USED + 2) == con_used_seen && spins < 10000000u; spins++) pause();
    con_used_seen = vr16(CON_USED + 2);
}

static void con_setup(void) {
    struct vdev con = {0};
    if (!vdev_find(&con, 0x10431af4u)) { puts("virtio-console: no device\n"); debug_exit(0x44); }
    if (!vdev_negotiate(&con, 0)) { puts("virtio-console: features refused\n"); debug_exit(0x45); }
    con_notify = vq_setup(&con, 1, QS, CON_DESC, CON_AVAIL, CON_USED);
    vdev_driver_ok(&con);
    have_con = 1;
}
static uptr rx_notify, tx_notify;
static u16 tx_used_seen;

static void print_mac(const u8 *m) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 6; i++) { putc(hex[m[i] >> 4]); putc(hex[m[i] & 15]); if (i < 5) putc(':'); }
}

static void send_greeting(void) {
    u8 *b = (u8 *)TX_BUF;
    for (u32 i = 0; i < HDR; i++) b[i] = 0;
    u8 *f = b + HDR;
    for (int i = 0; i < 6; i++) { f[i] = 0xff; f[6 + i] = mac[i]; }
    f[12] = 0x88; f[13] = 0xb5;
    const char *msg = "vessel-net-test hello";
    u32 n = 0;
    while (msg[n]) { f[14 + n] = (u8)msg[n]; n++; }
    f[14 + n] = 0;
    volatile struct vq_desc *d = (volatile struct vq_desc *)TX_DESC;
    d[0].addr = TX_BUF; d[0].len = HDR + 14 + 64; d[0].flags = 0; d[0].next = 0;
    vq_publish(TX_AVAIL, QS, 0, tx_notify, 1);
    for (u32 spins = 0; vr16(TX_USED + 2) == tx_used_seen && spins < 10000000u; spins++) pause();
    tx_used_seen = vr16(TX_USED + 2);
}

/* Decimal without 64-bit division (a 32-bit guest has no libgcc). */
static void put_u32(u32 v) {
    char buf[11];
    int i = 10;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    puts(&buf[i]);
}

#define DHCP_XID 0x7e55e100u

/* A DHCPDISCOVER from our MAC, broadcast (UDP 68 -> 67, no UDP checksum). */
static void send_discover(void) {
    u8 *b = (u8 *)TX_BUF;
    for (u32 i = 0; i < HDR + 14 + 20 + 8 + 300; i++) b[i] = 0;
    u8 *f = b + HDR;
    for (int i = 0; i < 6; i++) { f[i] = 0xff; f[6 + i] = mac[i]; }
    f[12] = 0x08; f[13] = 0x00;
    u8 *ip = f + 14;
    u16 ip_len = 20 + 8 + 300;
    ip[0] = 0x45; ip[2] = (u8)(ip_len >> 8); ip[3] = (u8)ip_len; ip[8] = 64; ip[9] = 17;
    for (int i = 16; i < 20; i++) ip[i] = 0xff;
    u32 sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (u32)(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    ip[10] = (u8)(~sum >> 8); ip[11] = (u8)~sum;
    u8 *udp = ip + 20;
    udp[1] = 68; udp[3] = 67; udp[4] = (u8)((8 + 300) >> 8); udp[5] = (u8)(8 + 300);
    u8 *bootp = udp + 8;
    bootp[0] = 1; bootp[1] = 1; bootp[2] = 6;
    bootp[4] = (u8)(DHCP_XID >> 24); bootp[5] = (u8)(DHCP_XID >> 16); bootp[6] = (u8)(DHCP_XID >> 8); bootp[7] = (u8)DHCP_XID;
    bootp[10] = 0x80; /* broadcast reply */
    for (int i = 0; i < 6; i++) bootp[28 + i] = mac[i];
    u8 *opt = bootp + 236;
    opt[0] = 99; opt[1] = 130; opt[2] = 83; opt[3] = 99;
    opt[4] = 53; opt[5] = 1; opt[6] = 1; /* DHCPDISCOVER */
    opt[7] = 255;
    volatile struct vq_desc *d = (volatile struct vq_desc *)TX_DESC;
    d[0].addr = TX_BUF; d[0].len = HDR + 14 + ip_len; d[0].flags = 0; d[0].next = 0;
    vq_publish(TX_AVAIL, QS, 0, tx_notify, 1);
    for (u32 spins = 0; vr16(TX_USED + 2) == tx_used_seen && spins < 10000000u; spins++) pause();
    tx_used_seen = vr16(TX_USED + 2);
}

/* The offered address if `f` (len bytes) is a DHCP reply to our DISCOVER, else 0. */
static u32 dhcp_offer(const u8 *f, u32 len) {
    if (len < 14 + 20 + 8 + 240 || f[12] != 0x08 || f[13] != 0x00) return 0;
    const u8 *ip = f + 14;
    u32 ihl = (ip[0] & 15u) * 4;
    if (ip[9] != 17 || ihl < 20 || len < 14 + ihl + 8 + 240) return 0;
    const u8 *udp = ip + ihl;
    if (udp[2] != 0 || udp[3] != 68) return 0;
    const u8 *bootp = udp + 8;
    u32 xid = (u32)bootp[4] << 24 | (u32)bootp[5] << 16 | (u32)bootp[6] << 8 | bootp[7];
    if (bootp[0] != 2 || xid != DHCP_XID) return 0;
    return (u32)bootp[16] << 24 | (u32)bootp[17] << 16 | (u32)bootp[18] << 8 | bootp[19];
}

static void dhcp_main(struct vdev *dev, long rounds) {
    vw32(dev->common + 0x00, 0);
    u32 offered = vr32(dev->common + 0x04);
    if (offered & (1u << 3)) { puts("virtio-net: mtu "); put_u32(vr16(dev->devcfg + 10)); puts("\n"); }
    u16 rx_seen = 0;
    for (long round = 0; round < rounds; round++) {
        send_discover();
        for (u32 spins = 0; spins < 200000; spins++) {
            if (vr16(RX_USED + 2) == rx_seen) { pause(); continue; }
            u32 slot = rx_seen % QS;
            u32 id = vr32(RX_USED + 4 + 8 * slot);
            u32 len = vr32(RX_USED + 8 + 8 * slot);
            rx_seen++;
            const u8 *f = (const u8 *)(uptr)(RX_BUF + (id % QS) * RX_BUF_LEN + HDR);
            u32 yiaddr = len > HDR ? dhcp_offer(f, len - HDR) : 0;
            if (yiaddr) {
                puts("virtio-net: dhcp offer ");
                for (int i = 3; i >= 0; i--) { put_u32((yiaddr >> (8 * i)) & 255); if (i) putc('.'); }
                puts("\n");
                con_write("console: dhcp done\n");
                acpi_poweroff();
            }
            vq_publish(RX_AVAIL, QS, (u16)(id % QS), rx_notify, 0);
        }
    }
    puts("virtio-net: no dhcp offer\n");
    debug_exit(0x43);
}

struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

void guest_main(u32 magic, struct mb_info *mbi) {
    (void)magic;
    const char *cmdline = (mbi->flags & 4) ? (const char *)(uptr)mbi->cmdline : "";
    long rounds = cmdline_number(cmdline, "rounds");
    if (rounds <= 0) rounds = 4000;
    struct vdev dev = {0};
    if (!vdev_find(&dev, 0x10411af4u)) { puts("virtio-net: no device\n"); debug_exit(0x40); }
    if (!vdev_negotiate(&dev, F_MAC)) { puts("virtio-net: features refused\n"); debug_exit(0x41); }
    rx_notify = vq_setup(&dev, 0, QS, RX_DESC, RX_AVAIL, RX_USED);
    tx_notify = vq_setup(&dev, 1, QS, TX_DESC, TX_AVAIL, TX_USED);
    vdev_driver_ok(&dev);
    for (int i = 0; i < 6; i++) mac[i] = vr8(dev.devcfg + i);
    puts("virtio-net: mac "); print_mac(mac); puts("\n");

    volatile struct vq_desc *rd = (volatile struct vq_desc *)RX_DESC;
    for (u16 i = 0; i < QS; i++) {
        rd[i].addr = RX_BUF + i * RX_BUF_LEN; rd[i].len = RX_BUF_LEN; rd[i].flags = VQ_F_WRITE; rd[i].next = 0;
        vq_publish(RX_AVAIL, QS, i, rx_notify, 0);
    }
    if (cmdline_number(cmdline, "console") == 1) { con_setup(); con_write("console: net up\n"); }
    long wait = cmdline_number(cmdline, "wait");
    long delay = cmdline_number(cmdline, "delay");
    for (long i = 1; i <= wait; i++) {
        puts("wait="); put_u32((u32)i); puts("\n");
        for (long s = 0; s < delay; s++) pause();
    }
    if (cmdline_number(cmdline, "dhcp") == 1) dhcp_main(&dev, rounds);
    u16 rx_seen = 0;
    int heard = 0, extra = 0;
    for (long round = 0; round < rounds; round++) {
        send_greeting();
        if (heard && ++extra >= 5) break;
        for (u32 spins = 0; spins < 20000; spins++) {
            if (vr16(RX_USED + 2) == rx_seen) { pause(); continue; }
            u32 slot = rx_seen % QS;
            u32 id = vr32(RX_USED + 4 + 8 * slot);
            u32 len = vr32(RX_USED + 8 + 8 * slot);
            rx_seen++;
            const u8 *f = (const u8 *)(uptr)(RX_BUF + (id % QS) * RX_BUF_LEN + HDR);
            int mine = 1;
            for (int i = 0; i < 6; i++) if (f[6 + i] != mac[i]) mine = 0;
            if (!heard && !mine && len > HDR + 14 && f[12] == 0x88 && f[13] == 0xb5) {
                heard = 1;
                puts("virtio-net: received \""); puts((const char *)(f + 14)); puts("\" from "); print_mac(f + 6); puts("\n");
            }
            vq_publish(RX_AVAIL, QS, (u16)(id % QS), rx_notify, 0);
        }
    }
    if (!heard) { puts("virtio-net: nothing received\n"); debug_exit(0x42); }
    con_write("console: frames exchanged\n");
    acpi_poweroff();
}
