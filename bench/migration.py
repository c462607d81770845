"""Timing of bench/migration.sh: argv = vessel, qemu, counter guest, scratch dir, runs, MiB,
fill MiB.

Two guests of MiB MiB, 1 vCPU, each migrated over a unix socket with a downtime limit of
300 ms: an idle one (it counts on the serial port and touches a few pages) and a dirtying
one (it keeps a pattern in `fill` MiB and rewrites it 64 KiB at a time without pause). For
vessel, the source is `vessel run --api-sock` and `PUT /migration/send`, the receiver
`vessel run --incoming`; total is the send call, downtime the source's own report. The
reference in the same run is QEMU (KVM) migrating the same guest the same way (`migrate`
over QMP to `-incoming unix:`); total is from the command to `completed`, downtime QEMU's
own `downtime`. Each run checks that the guest counts on in the receiver. Prints medians
and vessel/QEMU ratios.
"""
import os
import re
import statistics
import subprocess
import sys
import time

from benchlib import Qmp, read_text, wait_for

VESSEL, QEMU, KERNEL, TMP = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
RUNS, MIB, FILL = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
CASES = {
    "idle": "steps=1000000000 delay=100000",
    "dirtying": f"steps=1000000000 delay=1 fill={FILL}",
}
DOWNTIME_MS = 300


def curl(sock, method, path, body=None):
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", sock,
           "-X", method, "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", body]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code or 0), text


def counts(path):
    return len(re.findall(r"^count=\d+$", read_text(path), re.M))


def counts_on(path, timeout=300):
    seen = counts(path)
    wait_for(f"{path} to count on", lambda: counts(path) >= seen + 2, timeout)


def fresh(*paths):
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


def vessel_once(name, cmdline):
    sock, serial, dserial = (os.path.join(TMP, name + s) for s in (".sock", ".serial", ".dst"))
    url = f"unix:{TMP}/{name}.mig"
    fresh(sock, serial, dserial)
    src = subprocess.Popen([VESSEL, "run", "--api-sock", sock, "--serial", "file:" + serial],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    wait_for("the API socket", lambda: os.path.exists(sock))
    for method, path, body in [
        ("PUT", "/machine-config", f'{{"vcpu_count": 1, "mem_size_mib": {MIB}}}'),
        ("PUT", "/boot-source", f'{{"kernel_image_path": "{KERNEL}", "boot_args": "{cmdline}"}}'),
        ("PUT", "/actions", '{"action_type": "InstanceStart"}'),
    ]:
        code, reply = curl(sock, method, path, body)
        assert code == 204, reply
    wait_for("the guest to count", lambda: counts(serial) >= 3, 600)
    dst = subprocess.Popen([VESSEL, "run", "--incoming", url, "--serial", "file:" + dserial],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    assert "waiting" in dst.stderr.readline()
    start = time.monotonic()
    code, body = curl(sock, "PUT", "/migration/send",
                      f'{{"destination_url": "{url}", "max_downtime_ms": {DOWNTIME_MS}}}')
    total = (time.monotonic() - start) * 1000
    assert code == 204, body
    src.wait(timeout=60)
    report = src.stderr.read()
    m = re.search(r"(\d+) rounds, ([\d.]+) MiB of memory sent, (\d+) ms paused", report)
    assert m, report
    counts_on(dserial)
    dst.kill()
    dst.wait()
    return total, float(m.group(3)), float(m.group(2))


def qemu(serial, qmp, cmdline, extra=()):
    fresh(serial, qmp)
    cmd = [QEMU, "-M", "pc", "-accel", "kvm", "-m", f"{MIB}M", "-nodefaults", "-no-user-config",
           "-display", "none", "-serial", f"file:{serial}", "-kernel", KERNEL, "-append", cmdline,
           "-qmp", f"unix:{qmp},server=on,wait=off", *extra]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def qemu_once(name, cmdline):
    serial, qmp = os.path.join(TMP, name + ".serial"), os.path.join(TMP, name + ".qmp")
    dserial, dqmp = serial + ".dst", qmp + ".dst"
    mig = os.path.join(TMP, name + ".mig")
    fresh(mig)
    src = qemu(serial, qmp, cmdline)
    q = Qmp(qmp)
    wait_for("QEMU's guest to count", lambda: counts(serial) >= 3, 600)
    dst = qemu(dserial, dqmp, cmdline, ["-incoming", f"unix:{mig}"])
    d = Qmp(dqmp)
    q.call("migrate-set-parameters", **{"downtime-limit": DOWNTIME_MS})
    start = time.monotonic()
    q.call("migrate", uri=f"unix:{mig}")
    info = {}

    def done():
        info.update(q.call("query-migrate"))
        if info.get("status") == "failed":
            sys.exit(f"QEMU's migration failed: {info}")
        return info.get("status") == "completed"

    wait_for("QEMU's migration", done, 600, poll=0.001)
    total = (time.monotonic() - start) * 1000
    q.call("quit")
    src.wait()
    counts_on(dserial)
    d.call("quit")
    dst.wait()
    return total, float(info.get("downtime", 0)), info["ram"]["transferred"] / (1 << 20)


def main():
    med = statistics.median
    print(f"{MIB} MiB guest, 1 vCPU, unix socket, downtime limit {DOWNTIME_MS} ms, "
          f"{RUNS} runs, medians")
    for case, cmdline in CASES.items():
        v, q = [], []
        for run in range(RUNS):
            v.append(vessel_once(f"v-{case}-{run}", cmdline))
            q.append(qemu_once(f"q-{case}-{run}", cmdline))
            print(f"{case} run {run + 1}: vessel total {v[-1][0]:.1f} ms, down {v[-1][1]:.0f} ms, "
                  f"{v[-1][2]:.1f} MiB; QEMU total {q[-1][0]:.1f} ms, down {q[-1][1]:.0f} ms, "
                  f"{q[-1][2]:.1f} MiB", flush=True)
        vt, vd, vm = (med(r[i] for r in v) for i in range(3))
        qt, qd, qm = (med(r[i] for r in q) for i in range(3))
        print(f"  {case}: total vessel {vt:.1f} ms, QEMU {qt:.1f} ms (ratio {vt / qt:.2f}); "
              f"downtime vessel {vd:.0f} ms, QEMU {qd:.0f} ms; "
              f"sent vessel {vm:.1f} MiB, QEMU {qm:.1f} MiB", flush=True)


main()
