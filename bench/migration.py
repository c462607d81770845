"""Timing of bench/migration.sh: argv = vessel, counter guest, scratch dir, runs.

Each run boots a 256 MiB counter guest under `vessel run --api-sock`, lets it count, and
migrates it to `vessel run --incoming unix:...` (total: the PUT /migration/send call;
downtime: the source's own report, pause -> the receiver's confirmation). The reference is
the same guest snapshotted (pause + create) and loaded with resume_vm in a new VMM.
Prints medians and the ratios to the reference.
"""
import os
import re
import statistics
import subprocess
import sys
import time

from benchlib import read_text as read, wait_for

VESSEL, KERNEL, TMP, RUNS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
MIB = 256


def curl(sock, method, path, body=None):
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", sock,
           "-X", method, "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", body]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code or 0), text


def api_vmm(name):
    sock = os.path.join(TMP, name + ".sock")
    serial = os.path.join(TMP, name + ".serial")
    for p in (sock, serial):
        if os.path.exists(p):
            os.remove(p)
    proc = subprocess.Popen([VESSEL, "run", "--api-sock", sock, "--serial", "file:" + serial],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for("the API socket", lambda: os.path.exists(sock))
    return proc, sock, serial


def boot_counting(name):
    proc, sock, serial = api_vmm(name)
    assert curl(sock, "PUT", "/machine-config",
                f'{{"vcpu_count": 1, "mem_size_mib": {MIB}}}')[0] == 204
    boot = f'{{"kernel_image_path": "{KERNEL}", "boot_args": "steps=1000000 delay=100000"}}'
    assert curl(sock, "PUT", "/boot-source", boot)[0] == 204
    assert curl(sock, "PUT", "/actions", '{"action_type": "InstanceStart"}')[0] == 204
    wait_for("the guest to count", lambda: "count=3" in read(serial))
    return proc, sock, serial


def stop(proc):
    proc.kill()
    proc.wait()


def migrate(run):
    src, sock, _ = boot_counting(f"src{run}")
    url = f"unix:{TMP}/mig{run}.sock"
    dst = subprocess.Popen([VESSEL, "run", "--incoming", url, "--serial",
                            f"file:{TMP}/dst{run}.serial"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert "waiting" in dst.stderr.readline()
    start = time.monotonic()
    code, body = curl(sock, "PUT", "/migration/send", f'{{"destination_url": "{url}"}}')
    total = (time.monotonic() - start) * 1000
    assert code == 204, body
    src.wait(timeout=30)
    report = src.stderr.read()
    m = re.search(r"(\d+) rounds, ([\d.]+) MiB of memory sent, (\d+) ms paused", report)
    assert m, report
    wait_for("the guest to count on the receiver",
             lambda: "count=" in read(f"{TMP}/dst{run}.serial"))
    stop(dst)
    return total, float(m.group(3)), float(m.group(2))


def snapshot(run):
    src, sock, _ = boot_counting(f"snap{run}")
    state, mem = f"{TMP}/s{run}.state", f"{TMP}/s{run}.mem"
    start = time.monotonic()
    assert curl(sock, "PATCH", "/vm", '{"state": "Paused"}')[0] == 204
    code, body = curl(sock, "PUT", "/snapshot/create",
                      f'{{"snapshot_path": "{state}", "mem_file_path": "{mem}"}}')
    save = (time.monotonic() - start) * 1000
    assert code == 204, body
    stop(src)
    dst, dsock, dserial = api_vmm(f"load{run}")
    start = time.monotonic()
    code, body = curl(dsock, "PUT", "/snapshot/load",
                      f'{{"snapshot_path": "{state}", "mem_file_path": "{mem}", "resume_vm": true}}')
    load = (time.monotonic() - start) * 1000
    assert code == 204, body
    wait_for("the restored guest to count", lambda: "count=" in read(dserial))
    stop(dst)
    os.remove(state)
    os.remove(mem)
    return save, load


mig, snap = [], []
for run in range(RUNS):
    mig.append(migrate(run))
    snap.append(snapshot(run))
med = statistics.median
total, down, mib = (med(x[i] for x in mig) for i in range(3))
save, load = (med(x[i] for x in snap) for i in range(2))
print(f"{MIB} MiB counter guest, unix socket, {RUNS} runs, medians:")
print(f"  migration: total {total:.1f} ms, downtime {down:.1f} ms, {mib:.2f} MiB sent")
print(f"  snapshot reference: pause+create {save:.1f} ms, load {load:.1f} ms, "
      f"pause->running {save + load:.1f} ms")
print(f"  ratios: migration total / snapshot round trip {total / (save + load):.2f}, "
      f"downtime / snapshot round trip {down / (save + load):.2f}")
