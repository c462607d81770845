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


def main():
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


if __name__ == "__main__":
    main()
