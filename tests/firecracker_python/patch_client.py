"""Drives `vessel run --api-sock` with the unmodified firecracker-python client (PyPI
firecracker-python 0.0.5): PUT /logger before boot, then after InstanceStart
PATCH /drives/{id} (new limits, a new image, Firecracker's refusals) and
PATCH /network-interfaces/{id}, checked in GET /vm/config; vsock through the client's
`api.vsock` and the balloon through its `Resource` class (0.0.5 has no balloon
attribute): PUT before boot, PATCH and GET after, with Firecracker's refusals.

Usage: patch_client.py SOCKET KERNEL DIR
"""
import os
import sys

from firecracker.api import Api, Resource
from firecracker.exceptions import APIError


def expect_fault(call, needle, **body):
    try:
        call(**body)
    except APIError as e:
        assert needle in str(e), f"{e!r} lacks {needle!r}"
        return
    raise AssertionError(f"{body} was accepted; expected a fault with {needle!r}")


def image(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def main(socket, kernel, d):
    api = Api(socket)
    log = os.path.join(d, "vessel.log")
    expect_fault(api.logger.put, "Cannot open the log file", log_path=log, level="Info")
    open(log, "w").close()
    api.logger.put(log_path=log, level="Info", show_level=True, show_log_origin=False)
    expect_fault(api.logger.put, "Reinitialization of logger not allowed",
                 log_path=log, level="Debug")

    api.machine_config.put(vcpu_count=1, mem_size_mib=64)
    api.boot.put(kernel_image_path=kernel, boot_args="hang=1")
    scratch = image(os.path.join(d, "scratch.img"), 1 << 20)
    ops = {"ops": {"size": 100, "refill_time": 1000}}
    api.drive.put(drive_id="scratch", path_on_host=scratch, is_root_device=False,
                  rate_limiter=ops)
    api.network.put(iface_id="eth0", mode="internal", network="fcpy")
    bandwidth = {"bandwidth": {"size": 1 << 20, "refill_time": 100}}
    expect_fault(api.drive.patch, "not supported before starting", drive_id="scratch",
                 rate_limiter=bandwidth)
    vsock_uds = os.path.join(d, "v.sock")
    expect_fault(api.vsock.put, "Invalid vsock guest_cid 2", guest_cid=2, uds_path=vsock_uds)
    api.vsock.put(guest_cid=3, uds_path=vsock_uds)
    balloon = Resource(api, "/balloon")
    balloon_stats = Resource(api, "/balloon/statistics")
    balloon.put(amount_mib=16, deflate_on_oom=True, stats_polling_interval_s=1)
    expect_fault(balloon.patch, "not supported before starting", amount_mib=8)
    api.actions.put(action_type="InstanceStart")
    assert os.path.exists(vsock_uds), "the vsock socket is listening"

    # The balloon of a running VM (this guest has no driver: nothing is inflated).
    balloon.patch(amount_mib=24)
    assert balloon.get().json()["amount_mib"] == 24
    expect_fault(balloon.patch, "Amount of pages requested is too large", amount_mib=65)
    expect_fault(balloon.put, "after starting", amount_mib=1, deflate_on_oom=False)
    Resource(api, "/balloon/statistics").patch(stats_polling_interval_s=2)
    stats = balloon_stats.get().json()
    assert stats["target_mib"] == 24 and stats["actual_mib"] == 0, stats

    # Firecracker's drive patch scenarios.
    expect_fault(api.drive.patch, "at least one property to patch: path_on_host, rate_limiter",
                 drive_id="scratch")
    expect_fault(api.drive.patch, "unknown field `is_read_only`", drive_id="scratch",
                 path_on_host=scratch, is_read_only=True)
    expect_fault(api.drive.patch, "drive update (patch): device error: ",
                 drive_id="scratch", path_on_host=os.path.join(d, "foo.bar"))
    link = os.path.join(d, "link.img")
    os.symlink(scratch, link)
    expect_fault(api.drive.patch, "symbolic link", drive_id="scratch", path_on_host=link)
    expect_fault(api.drive.patch, "Invalid block device ID", drive_id="other",
                 rate_limiter=bandwidth)
    api.drive.patch(drive_id="scratch", rate_limiter=bandwidth)
    bigger = image(os.path.join(d, "scratch-new.img"), 2 << 20)
    api.drive.patch(drive_id="scratch", path_on_host=bigger, rate_limiter=bandwidth)

    rx = {"bandwidth": {"size": 50 << 17, "refill_time": 100}}
    api.network.patch(iface_id="eth0", rx_rate_limiter=rx)
    expect_fault(api.network.patch, "Invalid network interface ID", iface_id="eth9",
                 rx_rate_limiter=rx)

    config = api.vm_config.get().json()
    drive = config["drives"][0]
    assert drive["path_on_host"] == bigger, config
    assert drive["format"] == "raw", config
    assert drive["rate_limiter"] == {**ops, **bandwidth}, config
    assert config["network-interfaces"][0]["rx_rate_limiter"] == rx, config
    api.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
