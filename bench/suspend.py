"""Timing of bench/suspend.sh: argv = vessel, qemu, counter guest, scratch dir, runs, MiB.

vessel: a background VM (`vessel create/start`, state dir in the scratch dir) counting in
memory; each run times `vessel suspend`, `vessel resume` (the command returns once the VMM
runs the guest again) and `vessel fork` (with the source's pause as fork reports it), and
checks that the guests count on. The reference in the same invocation is QEMU (KVM) doing
what libvirt's managed save does with the same guest: `stop` + `migrate exec:cat > FILE`
+ `quit` to suspend, `-incoming exec:cat FILE` + `cont` to resume. Prints medians and the
vessel/QEMU ratios.
"""
import os
import re
import statistics
import subprocess
import sys
import time

from benchlib import Qmp, read_text, wait_for

VESSEL, QEMU, KERNEL, TMP = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
RUNS, MIB = int(sys.argv[5]), int(sys.argv[6])
CMDLINE = "steps=1000000000 delay=200000"
STATE = os.path.join(TMP, "state")


def counts(path):
    return len(re.findall(r"^count=\d+$", read_text(path), re.M))


def counts_on(path):
    """Waits until the guest writing `path` counted two more."""
    seen = counts(path)
    wait_for(f"{path} to count on", lambda: counts(path) >= seen + 2)


def vessel(*args):
    start = time.monotonic()
    out = subprocess.run([VESSEL, "--state-dir", STATE, *args], capture_output=True, text=True)
    ms = (time.monotonic() - start) * 1000
    if out.returncode != 0:
        sys.exit(f"vessel {' '.join(args)} failed: {out.stderr}")
    return ms, out.stdout


def bench_vessel():
    os.makedirs(STATE, exist_ok=True)
    vessel("create", "s", "--kernel", KERNEL, "--memory", f"{MIB}M", "--cmdline", CMDLINE)
    vessel("start", "s")
    serial = os.path.join(STATE, "s", "serial.log")
    wait_for("the guest to count", lambda: counts(serial) >= 3)
    rows = []
    for run in range(RUNS):
        suspend, _ = vessel("suspend", "s")
        resume, _ = vessel("resume", "s")
        counts_on(serial)
        fork, out = vessel("fork", "s", f"f{run}")
        paused = float(re.search(r"was paused (\d+) ms", out).group(1))
        counts_on(os.path.join(STATE, f"f{run}", "serial.log"))
        counts_on(serial)
        vessel("stop", f"f{run}", "--force")
        vessel("rm", f"f{run}")
        rows.append((suspend, resume, fork, paused))
        print(f"vessel run {run + 1}: suspend {suspend:.1f} ms, resume {resume:.1f} ms, "
              f"fork {fork:.1f} ms (source paused {paused:.0f} ms)", flush=True)
    vessel("stop", "s", "--force")
    return rows


def qemu(serial, qmp, extra=()):
    cmd = [QEMU, "-M", "pc", "-accel", "kvm", "-m", f"{MIB}M", "-nodefaults", "-no-user-config",
           "-display", "none", "-serial", f"file:{serial}", "-kernel", KERNEL, "-append", CMDLINE,
           "-qmp", f"unix:{qmp},server=on,wait=off", *extra]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def bench_qemu():
    saved = os.path.join(TMP, "qemu.state")
    rows = []
    for run in range(RUNS):
        serial, qmp = os.path.join(TMP, f"q{run}.serial"), os.path.join(TMP, f"q{run}.qmp")
        proc = qemu(serial, qmp)
        q = Qmp(qmp)
        wait_for("QEMU's guest to count", lambda: counts(serial) >= 3)
        start = time.monotonic()
        q.call("stop")
        q.call("migrate", uri=f"exec:cat > {saved}")
        wait_for("the save", lambda: q.call("query-migrate").get("status") == "completed")
        q.call("quit")
        proc.wait()
        suspend = (time.monotonic() - start) * 1000
        serial2, qmp2 = serial + ".2", qmp + ".2"
        start = time.monotonic()
        proc = qemu(serial2, qmp2, ["-incoming", f"exec:cat {saved}"])
        q = Qmp(qmp2)
        wait_for("the load", lambda: q.call("query-migrate").get("status") == "completed")
        q.call("cont")
        resume = (time.monotonic() - start) * 1000
        counts_on(serial2)
        q.call("quit")
        proc.wait()
        rows.append((suspend, resume))
        print(f"QEMU run {run + 1}: suspend {suspend:.1f} ms, resume {resume:.1f} ms", flush=True)
    return rows


def main():
    v = bench_vessel()
    q = bench_qemu()
    med = lambda rows, i: statistics.median(r[i] for r in rows)
    print(f"\n{MIB} MiB counting guest, {RUNS} runs, medians:")
    print(f"  suspend: vessel {med(v, 0):8.1f} ms   QEMU {med(q, 0):8.1f} ms   "
          f"ratio {med(v, 0) / med(q, 0):.2f}")
    print(f"  resume:  vessel {med(v, 1):8.1f} ms   QEMU {med(q, 1):8.1f} ms   "
          f"ratio {med(v, 1) / med(q, 1):.2f}")
    print(f"  fork:    vessel {med(v, 2):8.1f} ms (source paused {med(v, 3):.0f} ms); "
          "QEMU has no fork")


main()
