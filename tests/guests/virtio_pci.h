/* A minimal virtio 1.x PCI driver for test guests (32-bit, paging off): find a device on
 * bus 0 through port 0xCF8, read its capabilities, negotiate, set up split queues. */
#ifndef VESSEL_TEST_VIRTIO_PCI_H
#define VESSEL_TEST_VIRTIO_PCI_H
#include "guest.h"

struct vdev {
    u32 slot;
    uptr common, notify_base, isr, devcfg;
    u32 notify_mult;
};
struct vq_desc { u64 addr; u32 len; u16 flags, next; };
#define VQ_F_NEXT 1
#define VQ_F_WRITE 2

static u32 pci_read(u32 slot, u32 off) {
    outl(0xcf8, 0x80000000u | (slot << 11) | (off & 0xfc));
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((u16)0xcfc));
    return v;
}
static void pci_write(u32 slot, u32 off, u32 v) {
    outl(0xcf8, 0x80000000u | (slot << 11) | (off & 0xfc));
    outl(0xcfc, v);
}
static void vw8(uptr a, u8 v) { *(volatile u8 *)a = v; }
static void vw16(uptr a, u16 v) { *(volatile u16 *)a = v; }
static void vw32(uptr a, u32 v) { *(volatile u32 *)a = v; }
static u8 vr8(uptr a) { return *(volatile u8 *)a; }
static u16 vr16(uptr a) { return *(volatile u16 *)a; }
static u32 vr32(uptr a) { return *(volatile u32 *)a; }

/* Find vendor:device `id` (device << 16 | vendor); enable memory decoding and DMA. */
static int vdev_find(struct vdev *d, u32 id) {
    for (u32 slot = 0; slot < 32; slot++) {
        if (pci_read(slot, 0) != id) continue;
        d->slot = slot;
        pci_write(slot, 4, pci_read(slot, 4) | 0x6);
        u32 cap = pci_read(slot, 0x34) & 0xff;
        for (int guard = 0; cap && guard < 48; guard++) {
            u32 h = pci_read(slot, cap);
            if ((h & 0xff) == 0x09) {
                u32 type = (h >> 24) & 0xff;
                uptr base = pci_read(slot, 0x10 + 4 * (pci_read(slot, cap + 4) & 0xff)) & ~0xfu;
                uptr at = base + pci_read(slot, cap + 8);
                if (type == 1) d->common = at;
                if (type == 2) { d->notify_base = at; d->notify_mult = pci_read(slot, cap + 16); }
                if (type == 3) d->isr = at;
                if (type == 4) d->devcfg = at;
            }
            cap = (h >> 8) & 0xff;
        }
        return d->common && d->notify_base && d->devcfg;
    }
    return 0;
}

/* Reset, acknowledge, offer VIRTIO_F_VERSION_1 plus `features` (low word); 0 if refused. */
static int vdev_negotiate(struct vdev *d, u32 features) {
    vw8(d->common + 0x14, 0);
    while (vr8(d->common + 0x14) != 0) pause();
    vw8(d->common + 0x14, 1 | 2);
    vw32(d->common + 0x00, 0);
    u32 offered = vr32(d->common + 0x04);
    vw32(d->common + 0x08, 0); vw32(d->common + 0x0c, features & offered);
    vw32(d->common + 0x08, 1); vw32(d->common + 0x0c, 1);
    vw8(d->common + 0x14, 1 | 2 | 8);
    return (vr8(d->common + 0x14) & 8) != 0;
}

/* Queue `q` of `size` entries with rings at desc/avail/used (zeroed here); returns its
 * notify address. */
static uptr vq_setup(struct vdev *d, u16 q, u16 size, uptr desc, uptr avail, uptr used) {
    for (uptr a = desc; a < desc + 16u * size; a++) vw8(a, 0);
    for (uptr a = avail; a < avail + 6u + 2u * size; a++) vw8(a, 0);
    for (uptr a = used; a < used + 6u + 8u * size; a++) vw8(a, 0);
    vw16(d->common + 0x16, q);
    vw16(d->common + 0x18, size);
    vw16(d->common + 0x1a, 0xffff);
    vw32(d->common + 0x20, desc); vw32(d->common + 0x24, 0);
    vw32(d->common + 0x28, avail); vw32(d->common + 0x2c, 0);
    vw32(d->common + 0x30, used); vw32(d->common + 0x34, 0);
    uptr notify = d->notify_base + vr16(d->common + 0x1e) * d->notify_mult;
    vw16(d->common + 0x1c, 1);
    return notify;
}

static void vdev_driver_ok(struct vdev *d) { vw8(d->common + 0x14, 1 | 2 | 8 | 4); }

/* Make descriptor `head` available in the ring at `avail` (queue of `size`) and kick. */
static void vq_publish(uptr avail, u16 size, u16 head, uptr notify, u16 q) {
    u16 idx = vr16(avail + 2);
    vw16(avail + 4 + 2 * (idx % size), head);
    __sync_synchronize();
    vw16(avail + 2, idx + 1);
    __sync_synchronize();
    vw16(notify, q);
}
#endif
