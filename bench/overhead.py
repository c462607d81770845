#!/usr/bin/env python3
"""Per-VM overhead benchmark (driven by bench/overhead.sh).

1. RSS of one idle 128 MiB PVH guest (bench/tiny_pvh.py --idle: it writes 'U' to COM1
   and halts): vessel vs QEMU microvm (and Firecracker, when FIRECRACKER names its
   binary), each started RUNS times alternately; RSS read from /proc/PID/status one
   second after the guest's 'U', medians; PSS and anonymous memory from smaps_rollup too.
2. N idle 64 MiB vessel VMs started one after the other: time from the first exec until
   every guest has written its 'U', and the total RSS of the N processes then."""
import json
import os
import statistics
import subprocess
import sys
import time

SETTLE_S = 1.0
UP_TIMEOUT_S = 120.0


def memory_kib(pid):
    """(RSS, PSS, anonymous) of process `pid`, KiB (smaps_rollup)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:", "Anonymous:"):
                fields[parts[0]] = int(parts[1])
    return fields.get("Rss:", 0), fields.get("Pss:", 0), fields.get("Anonymous:", 0)


def start(name, kernel, mib, serial, tmp):
    if os.path.exists(serial):
        os.unlink(serial)
    if name == "vessel":
        cmd = [VESSEL, "run", "--kernel", kernel, "--memory", f"{mib}M", "--serial", f"file:{serial}"]
    elif name == "qemu":
        cmd = [QEMU, "-M", "microvm", "-accel", "kvm", "-m", f"{mib}M", "-nodefaults",
               "-no-user-config", "-nographic", "-display", "none", "-serial", f"file:{serial}",
               "-kernel", kernel]
    else:
        cfg = os.path.join(tmp, f"{os.path.basename(serial)}.json")
        with open(cfg, "w") as f:
            json.dump({"boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0"},
                       "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": mib}}, f)
        out = open(serial, "wb")
        return subprocess.Popen([FIRECRACKER, "--no-api", "--config-file", cfg],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def is_up(serial):
    try:
        return b"U" in open(serial, "rb").read()
    except FileNotFoundError:
        return False


def wait_up(procs):
    deadline = time.time() + UP_TIMEOUT_S
    pending = list(procs)
    while pending:
        pending = [(p, s) for p, s in pending if not is_up(s)]
        for p, _ in pending:
            if p.poll() is not None:
                sys.exit(f"a VMM exited before its guest was up (status {p.returncode})")
        if time.time() > deadline:
            sys.exit(f"{len(pending)} guests not up after {UP_TIMEOUT_S} s")
        time.sleep(0.002)


def stop(procs):
    for p, _ in procs:
        p.kill()
    for p, _ in procs:
        p.wait()


def one_idle_vm(names, kernel, tmp, runs):
    results = {n: [] for n in names}
    for _ in range(runs):
        for name in names:
            serial = os.path.join(tmp, f"{name}.serial")
            p = start(name, kernel, 128, serial, tmp)
            wait_up([(p, serial)])
            time.sleep(SETTLE_S)
            results[name].append(tuple(v / 1024 for v in memory_kib(p.pid)))
            stop([(p, serial)])
    print(f"idle 128 MiB PVH guest, RSS (median of {runs}, alternating):")
    print(f"  {'':12} {'RSS MiB':>8} {'PSS MiB':>8} {'anon MiB':>9}")
    med = {}
    for name in names:
        med[name] = [statistics.median(r[i] for r in results[name]) for i in range(3)]
        print(f"  {name:12} {med[name][0]:8.1f} {med[name][1]:8.1f} {med[name][2]:9.1f}")
    ref = "firecracker" if "firecracker" in med else "qemu"
    print(f"  vessel/{ref} RSS ratio: {med['vessel'][0] / med[ref][0]:.3f}")


def many_vms(kernel, tmp, n):
    procs = []
    started = time.perf_counter()
    try:
        for i in range(n):
            serial = os.path.join(tmp, f"many-{i}.serial")
            procs.append((start("vessel", kernel, 64, serial, tmp), serial))
        wait_up(procs)
        up_s = time.perf_counter() - started
        usage = [memory_kib(p.pid) for p, _ in procs]
    finally:
        stop(procs)
    rss, pss = (sum(u[i] for u in usage) / 1024 for i in (0, 1))
    print(f"{n} idle 64 MiB vessel VMs: all up in {up_s:.2f} s ({up_s / n * 1000:.1f} ms per VM), "
          f"total RSS {rss:.0f} MiB ({rss / n:.2f} per VM), total PSS {pss:.0f} MiB "
          f"({pss / n:.2f} per VM: the binary's pages are shared)")


def main():
    global VESSEL, QEMU, FIRECRACKER
    VESSEL, QEMU, kernel, tmp = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    runs, n = int(sys.argv[5]), int(sys.argv[6])
    FIRECRACKER = os.environ.get("FIRECRACKER")
    names = ["vessel", "qemu"] + (["firecracker"] if FIRECRACKER else [])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    one_idle_vm(names, kernel, tmp, runs)
    many_vms(kernel, tmp, n)


if __name__ == "__main__":
    main()
