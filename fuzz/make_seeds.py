#!/usr/bin/env python3
"""Write the seed corpora under fuzz/corpus/<target>/ (committed; rerun to regenerate).

Image seeds are small images made by qemu-img, turned into the records the sparse-image
targets read (`offset: u32 LE, len: u16 LE, bytes`; a zero length sets the file length),
so only their non-zero sectors are stored. Other targets get a few inputs in their own
framing (see each target's doc comment)."""
import os
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def qemu_image(fmt, size, opts=""):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "img")
        cmd = ["qemu-img", "create", "-q", "-f", fmt]
        if opts:
            cmd += ["-o", opts]
        subprocess.run(cmd + [path, str(size)], check=True)
        # Some data so block maps are not all empty.
        subprocess.run(["qemu-io", "-f", fmt, "-c", "write -P 0x5a 0 4k", path],
                       check=True, stdout=subprocess.DEVNULL)
        with open(path, "rb") as f:
            return f.read()


def records(image):
    out = bytearray()
    for off in range(0, len(image), 512):
        chunk = image[off:off + 512]
        if any(chunk):
            out += struct.pack("<IH", off, len(chunk)) + chunk
    out += struct.pack("<IH", len(image), 0)
    return bytes(out)


def pairs(*ops):
    return bytes(b for op in ops for b in op)


def arp_request(src_mac, src_ip, target_ip):
    return (b"\xff" * 6 + src_mac + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, 1])
            + src_mac + bytes(src_ip) + b"\x00" * 6 + bytes(target_ip))


def dhcp_frame(kind, requested=None):
    """A client's DHCPDISCOVER (kind 1) or DHCPREQUEST (3) as a broadcast Ethernet frame."""
    mac = bytes([2, 0, 0, 0, 0, 1])
    opts = bytes([53, 1, kind]) + (bytes([50, 4]) + bytes(requested) if requested else b"")
    opts += bytes([55, 3, 1, 3, 6, 255])
    bootp = (bytes([1, 1, 6, 0]) + b"\x12\x34\x56\x78" + b"\x00" * 20 + mac + b"\x00" * 202
             + b"\x63\x82\x53\x63" + opts)
    udp = struct.pack(">HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     b"\x00" * 4, b"\xff" * 4) + udp
    return b"\xff" * 6 + mac + b"\x08\x00" + ip


def port_io_seeds():
    """Guest port I/O as Linux and firmware do it (see each *_ports target's framing)."""
    # CMOS: op bit 0 write, bit 1 data port. Read the clock, switch to BCD 12 h, read again.
    sel, rd, wr = 1, 2, 3
    clock = pairs(*[op for r in (0, 2, 4, 6, 7, 8, 9, 0x0a, 0x0b, 0x0c, 0x0d, 0x32)
                    for op in ((sel, r), (rd, 0))])
    put("cmos_ports", "read_clock", bytes([0x40, 0]) + clock)
    put("cmos_ports", "bcd_12h", bytes([0x40, 0]) + pairs((sel, 0x0b), (wr, 0x00)) + clock)
    put("cmos_ports", "nvram_rw", bytes([0xff, 0]) + pairs(
        (sel, 0x8f), (wr, 0x5a), (rd, 0), (sel, 0x7f), (wr, 0xa5), (rd, 0), (sel | 8, 0x34),
        (rd | 4, 0)))
    put("cmos_ports", "restored", bytes([0x10, 0x15]) + bytes(range(128)) + clock)
    # 16550: op = offset << 2 | kind (0 read, 1 write, 2 host input, 3 snapshot round trip).
    def uart(kind, reg, value=0):
        return (reg << 2 | kind, value)
    init = [uart(1, 1, 0), uart(1, 3, 0x80), uart(1, 0, 1), uart(1, 1, 0), uart(1, 3, 3),
            uart(1, 2, 0xc7), uart(1, 4, 0x0b), uart(1, 1, 0x0f)]
    put("serial_ports", "linux_init_and_echo", pairs(
        *init, *[uart(1, 0, c) for c in b"login: "], uart(0, 5), uart(0, 2),
        uart(2, 0, 0x41), uart(0, 5), uart(0, 0), uart(0, 0), uart(0, 2), uart(3, 0),
        uart(0, 0)))
    put("serial_ports", "loopback", pairs(
        *init, uart(1, 4, 0x1f), uart(1, 0, 0x55), uart(0, 5), uart(0, 0), uart(0, 6),
        uart(2, 0, 0xff), uart(1, 7, 0x99), uart(0, 7), uart(3, 0), uart(1, 4, 0x0b),
        uart(0, 0)))
    put("serial_ports", "fifo_overrun", pairs(*init, *[uart(2, 0, 0xf8)] * 8,
                                              *[uart(0, 0)] * 70, uart(0, 5)))
    # i8042: op & 7: 0 read data, 1 read status, 2 write data, 3 command, 4 Ctrl-Alt-Del,
    # 5 state round trip, 6/7 restore a crafted state.
    put("i8042_ports", "linux_probe", pairs(
        (3, 0xad), (3, 0xa7), (1, 0), (0, 0), (3, 0x20), (1, 0), (0, 0), (3, 0x60),
        (2, 0x45), (3, 0xaa), (0, 0), (3, 0xab), (0, 0), (3, 0xae), (2, 0xff), (0, 0),
        (0, 0), (2, 0xf2), (0, 0), (0, 0), (0, 0)))
    put("i8042_ports", "reset_and_restore", pairs(
        (4, 0), (5, 0), (1, 0), (0, 0), (3, 0xd0), (0, 0), (3, 0xd1), (2, 0xdf), (3, 0xfe),
        (0x86, 0x21), (0xfe, 0xaa), (0, 0)))


def frame_seeds():
    """Guest Ethernet frames: DHCP, the NAT network's steering and the switch."""
    put("dhcp_request", "discover", dhcp_frame(1))
    put("dhcp_request", "request", dhcp_frame(3, (192, 168, 56, 101)))
    me, peer = bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 2])
    put("natnet_route", "arp_peer", b"\x00" + arp_request(me, (10, 0, 2, 15), (10, 0, 2, 16)))
    put("natnet_route", "arp_gateway", b"\x00" + arp_request(me, (10, 0, 2, 15), (10, 0, 2, 2)))
    put("natnet_route", "unicast_learned", b"\x01" + peer + me + b"\x08\x00" + b"\x45" * 20)
    put("natnet_route", "multicast", b"\x00" + bytes([1, 0, 0x5e, 0, 0, 0xfb]) + me + b"\x08\x00")
    put("natnet_route", "dhcp_broadcast", b"\x00" + b"\xff" * 6 + me + b"\x08\x00" + b"\x45" * 30)
    # switch: a header byte (port | length / 4 << 2) before each frame.
    def frame(port, dst, src, body):
        f = dst + src + b"\x08\x00" + body
        f += b"\x00" * (-len(f) % 4)
        return bytes([port | (len(f) // 4) << 2]) + f
    arp = arp_request(me, (10, 0, 2, 15), (10, 0, 2, 16))
    put("switch_frames", "learn_then_unicast", frame(0, b"\xff" * 6, me, arp[14:])
        + frame(1, me, peer, b"reply" * 8) + frame(0, peer, me, b"data" * 10)
        + frame(2, bytes([1, 0, 0x5e, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 3]), b"m" * 40))
    put("switch_frames", "runts", bytes([0 | 1 << 2]) + b"\xff" * 4 + bytes([1 | 2 << 2])
        + b"\xff" * 8 + bytes([2 | 3 << 2]) + b"\xff" * 6 + me)


def mmds_seeds():
    """The MMDS endpoint: frames with a u16 length each after an odd mode byte; HTTP
    requests after an even one."""
    guest, mmds = bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56]), bytes([6, 1, 0x23, 0x45, 0x67, 1])
    guest_ip, mmds_ip = bytes([10, 0, 2, 15]), bytes([169, 254, 169, 254])

    def tcp(flags, seq, payload=b""):
        ip = (b"\x45\x00" + struct.pack(">H", 40 + len(payload)) + b"\0\0\x40\0\x40\x06\0\0"
              + guest_ip + mmds_ip)
        return (mmds + guest + b"\x08\x00" + ip
                + struct.pack(">HHIIBBHHH", 40000, 80, seq, 0, 0x50, flags, 65535, 0, 0) + payload)

    def frames(*fs):
        return b"\x01" + b"".join(struct.pack(">H", len(f)) + f for f in fs)
    arp = arp_request(guest, tuple(guest_ip), tuple(mmds_ip))
    req = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
    put("mmds_frames", "arp", frames(arp))
    put("mmds_frames", "syn", frames(arp, tcp(0x02, 1000)))
    put("mmds_frames", "request", frames(arp, tcp(0x02, 1000), tcp(0x10, 1001),
                                         tcp(0x18, 1001, req), tcp(0x11, 1001 + len(req))))
    put("mmds_frames", "http_get", b"\x00" + req)
    put("mmds_frames", "http_token", b"\x00PUT /latest/api/token HTTP/1.1\r\n"
        b"X-metadata-token-ttl-seconds: 60\r\n\r\n")


def forward_relay_seeds():
    """The run-time forward relay: a flags byte, then frames with a u16 length each. The
    guest's segments are rewritten onto the relay's connection (flags bit 0) and
    acknowledge its last segment (bit 1): an ARP reply to the gateway, the SYN-ACK, data,
    FIN, and a reset."""
    guest, gw = bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56]), bytes([0x9a, 0x55] * 3)
    guest_ip, gw_ip = bytes([10, 0, 2, 15]), bytes([10, 0, 2, 2])
    arp_reply = (gw + guest + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x02"
                 + guest + guest_ip + gw + gw_ip)

    def tcp(flags, seq, payload=b""):
        ip = (b"\x45\x00" + struct.pack(">H", 40 + len(payload)) + b"\0\0\x40\0\x40\x06\0\0"
              + guest_ip + gw_ip)
        return (gw + guest + b"\x08\x00" + ip
                + struct.pack(">HHIIBBHHH", 8000, 61000, seq, 0, 0x50, flags, 65535, 0, 0)
                + payload)

    def frames(flags, *fs):
        return bytes([flags]) + b"".join(struct.pack(">H", len(f)) + f for f in fs)
    put("net_forward_relay", "handshake", frames(3, arp_reply, tcp(0x12, 5000)))
    put("net_forward_relay", "data_fin", frames(7, arp_reply, tcp(0x12, 5000),
                                                tcp(0x18, 5001, b"guest says hi\n"),
                                                tcp(0x11, 5015)))
    put("net_forward_relay", "reset", frames(3, arp_reply, tcp(0x12, 5000), tcp(0x04, 5001)))
    put("net_forward_relay", "garbage", frames(0, b"\xff" * 60, arp_reply[:30], b""))
    idle = frames(3, arp_reply, tcp(0x12, 5000))
    put("net_forward_relay", "idle", idle + struct.pack(">H", 0x8000 | 20) + b"\0" * 20)


def agent_seeds():
    def frame(body):
        return struct.pack(">I", len(body)) + body

    put("agent_frames", "guest",
        b"\x00" + frame(b'{"type":"ready","kernel":"6.1"}') + frame(b'{"type":"started","pid":9}')
        + frame(b'{"type":"stdout","data":[104,105,10]}')
        + frame(b'{"type":"stats","stats":{"cpu_usage_usec":1,"cpu_user_usec":1,'
                b'"cpu_system_usec":0,"cpu_nr_periods":0,"cpu_nr_throttled":0,'
                b'"cpu_throttled_usec":0,"memory_usage":4096,"memory_limit":8192,"anon":0,'
                b'"file":0,"kernel_stack":0,"slab":0,"sock":0,"shmem":0,"file_mapped":0,'
                b'"file_dirty":0,"inactive_anon":0,"active_anon":0,"inactive_file":0,'
                b'"active_file":0,"unevictable":0,"pgfault":0,"pgmajfault":0,'
                b'"pids_current":1,"pids_limit":0}}')
        + frame(b'{"type":"done","error":null}') + frame(b'{"type":"exited","status":3}'))
    put("agent_frames", "host",
        b"\x01" + frame(b'{"type":"run","container":{"process":{"args":["sh"],"env":["A=b"],'
                        b'"cwd":"/","uid":0,"gid":0,"additional_gids":[],"rlimits":[],'
                        b'"no_new_privileges":true},"hostname":"c","mounts":[{"destination":'
                        b'"/proc","fstype":"proc","options":[]}],"masked_paths":[],'
                        b'"readonly_paths":[],"limits":{"memory_max":209715200,'
                        b'"memory_low":null,"cpu_max":[50000,100000]}}}')
        + frame(b'{"type":"update","limits":{"memory_max":1,"memory_low":null,"cpu_max":null}}')
        + frame(b'{"type":"freeze","frozen":true}') + frame(b'{"type":"signal","signal":15}'))


def main():
    forward_relay_seeds()
    put("qcow2_open", "small", qemu_image("qcow2", 1 << 20, "cluster_size=512"))
    put("vdi_open", "small", records(qemu_image("vdi", 1 << 20)))
    put("vhd_open", "dynamic", records(qemu_image("vpc", 1 << 20)))
    put("vhd_open", "fixed", records(qemu_image("vpc", 1 << 20, "subformat=fixed")))
    put("vhdx_open", "small", records(qemu_image("vhdx", 1 << 20, "block_size=1M")))
    put("vmdk_open", "sparse", records(qemu_image("vmdk", 1 << 20)))
    put("api_request", "put_boot_source",
        b"\x01/boot-source\x00" + b'{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}')
    put("api_request", "put_drive",
        b"\x01/drives/rootfs\x00"
        + b'{"drive_id": "rootfs", "path_on_host": "/d", "is_root_device": true, '
        + b'"is_read_only": false}')
    put("api_request", "get_root", b"\x00/")
    put("api_request", "instance_start", b"\x01/actions\x00" + b'{"action_type": "InstanceStart"}')
    put("cloudinit_user_data", "cloud_config", b"#cloud-config\npackages: [curl]\n")
    put("cloudinit_console_keys", "keys",
        b"-----BEGIN SSH HOST KEY KEYS-----\n"
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7kq2d2Z1wLhV8rZb0mJ0ZbK7m0u1cQe3S8xGmJbqz3 root@vm\n"
        b"-----END SSH HOST KEY KEYS-----\n")
    for target in ["bootdisk", "dhcp_request", "kernel_load", "vhost_user_msg", "virtio_blk",
                   "virtio_net", "virtio_pci", "vm_snapshot_state"]:
        put(target, "zeros", bytes(64))
        put(target, "pattern", bytes(range(256)) * 2)


    port_io_seeds()
    frame_seeds()
    mmds_seeds()
    agent_seeds()


if __name__ == "__main__":
    main()
