"""Drives `vessel run --api-sock` with the unmodified firecracker-python client (PyPI
firecracker-python 0.0.5, its firecracker.api.Api over the API socket): Firecracker's boot
sequence with a root drive (rate-limited), a refusal of what vessel does not do, and a
metrics flush.

Usage: client.py SOCKET KERNEL DISK METRICS
"""
import json
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


def main(socket, kernel, disk, metrics):
    api = Api(socket)
    info = api.describe.get().json()
    assert info["state"] == "Not started", info
    # Metrics first, as Firecracker's getting-started sequence does. The package has no
    # /metrics resource; its own Resource class reaches the path.
    Resource(api, "/metrics").put(metrics_path=metrics)
    api.machine_config.put(vcpu_count=1, mem_size_mib=64)
    api.boot.put(kernel_image_path=kernel, boot_args="exit=0")
    limited = {"bandwidth": {"size": 10 << 20, "refill_time": 1000}}
    api.drive.put(drive_id="rootfs", path_on_host=disk, is_root_device=True,
                  rate_limiter=limited)
    expect_fault(api.drive.put, 'io_engine "Async"', drive_id="rootfs",
                 path_on_host=disk, is_root_device=True, io_engine="Async")
    api.drive.put(drive_id="rootfs", path_on_host=disk, is_root_device=True,
                  is_read_only=False, cache_type="Writeback", io_engine="Sync",
                  rate_limiter=limited)
    api.actions.put(action_type="FlushMetrics")
    config = api.vm_config.get().json()
    assert config["drives"][0]["is_root_device"] is True, config
    assert config["drives"][0]["cache_type"] == "Writeback", config
    with open(metrics) as f:
        line = json.loads(f.readline())
    assert config["drives"][0]["rate_limiter"] == limited, config
    assert line["put_api_requests"]["drive_count"] == 3, line
    assert line["put_api_requests"]["drive_fails"] == 1, line
    assert line["put_api_requests"]["boot_source_count"] == 1, line
    api.actions.put(action_type="InstanceStart")
    api.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
