"""Configures MMDS on `vessel run --api-sock` with the unmodified firecracker-python client
(PyPI firecracker-python 0.0.5): its own `mmds_config.put(version="V2", ...)` and
`mmds.put(**data)` calls (what `MicroVM(mmds_enabled=True)` sends), then PATCH and GET, and
Firecracker's refusals.

Usage: mmds.py SOCKET
"""
import sys

from firecracker.api import Api
from firecracker.exceptions import APIError


def expect_fault(call, needle, **body):
    try:
        call(**body)
    except APIError as e:
        assert needle in str(e), f"{e!r} lacks {needle!r}"
        return
    raise AssertionError(f"{body} was accepted; expected a fault with {needle!r}")


def main(socket):
    api = Api(socket)
    expect_fault(api.mmds_config.put, "does not correspond to any existing network interface",
                 version="V2", ipv4_address="169.254.169.254", network_interfaces=["eth0"])
    api.network.put(iface_id="eth0", mode="internal", network="fcpy-mmds")
    expect_fault(api.mmds_config.put, "not link local",
                 version="V2", ipv4_address="10.0.0.1", network_interfaces=["eth0"])
    expect_fault(api.mmds_config.put, "is empty", version="V2", network_interfaces=[])
    # As MicroVM._configure_vmm_mmds sends them.
    api.mmds_config.put(version="V2", ipv4_address="169.254.169.254",
                        network_interfaces=["eth0"])
    data = {"meta-data": {"instance-id": "i-fcpy", "local-hostname": "fcpy"}}
    api.mmds.put(latest=data)
    expect_fault(api.mmds.patch, "MMDS limit exceeded", big="x" * 51150)
    api.mmds.patch(latest={"meta-data": {"local-hostname": None}, "user-data": "#cloud-config"})
    got = api.mmds.get().json()
    assert got == {"latest": {"meta-data": {"instance-id": "i-fcpy"},
                              "user-data": "#cloud-config"}}, got
    config = api.vm_config.get().json()
    assert config["mmds-config"] == {"version": "V2", "network_interfaces": ["eth0"],
                                     "ipv4_address": "169.254.169.254",
                                     "imds_compat": False}, config
    api.close()
    print("mmds: ok")


if __name__ == "__main__":
    main(*sys.argv[1:])
