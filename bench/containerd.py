"""bench/containerd.sh's half in Python: a private containerd in DIR (the runtime installed in
DIR/p by the shell half), a busybox image, then RUNS `ctr run --rm` per runtime timed to the
container's first output, and one detached container per runtime whose host processes' RSS
is summed. Usage: containerd.py DIR RUNS"""
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time

from benchlib import wait_for

DIR, RUNS = sys.argv[1], int(sys.argv[2])
IMAGE = "docker.io/library/vessel-bench:latest"
RUNTIMES = {"runc": "io.containerd.runc.v2", "vessel": "io.containerd.vessel.v2"}
# Seconds a running container is left before its memory is read: the guest's free page
# reporting hands freed memory back a few seconds after it is freed.
SETTLE_S = 10


def ctr(*args, check=True, **kw):
    out = subprocess.run(["ctr", "--address", f"{DIR}/ctd.sock", *args],
                         capture_output=True, text=True, **kw)
    if check and out.returncode != 0:
        sys.exit(f"ctr {' '.join(args)}: {out.stderr}")
    return out


def start_containerd():
    with open(f"{DIR}/config.toml", "w") as f:
        f.write(f'version = 2\nroot = "{DIR}/root"\nstate = "{DIR}/s"\n'
                f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\naddress = "{DIR}/ctd.sock"\n[ttrpc]\naddress = "{DIR}/ctd.ttrpc"\n')
    env = dict(os.environ, PATH=f"{DIR}/p/bin:{os.environ['PATH']}",
               VESSEL_SHIM_CONFIG=f"{DIR}/shim.toml")
    log = open(f"{DIR}/containerd.log", "w")
    proc = subprocess.Popen(["containerd", "--config", f"{DIR}/config.toml"], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    wait_for("containerd", lambda: ctr("version", check=False).returncode == 0, timeout=60)
    return proc


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def add(tar, name, data=b"", kind=tarfile.REGTYPE, mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
    tar.addfile(info, io.BytesIO(data) if data else None)


def image_archive():
    """An OCI image archive of busybox-static (sh, echo, sleep)."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as t:
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "run"]:
            add(t, d, kind=tarfile.DIRTYPE, mode=0o755)
        with open("/bin/busybox", "rb") as f:
            add(t, "bin/busybox", f.read(), mode=0o755)
        for applet in ["sh", "echo", "sleep"]:
            add(t, f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox")
    layer = layer_buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [blob(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": blob(layer), "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": blob(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": IMAGE,
                        "org.opencontainers.image.ref.name": "latest"}}]}).encode()
    path = f"{DIR}/image.tar"
    with tarfile.open(path, "w") as t:
        add(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(t, "index.json", index)
        for data in [layer, config, manifest]:
            add(t, "blobs/sha256/" + blob(data)[7:], data)
    return path


def first_output(runtime, name):
    """Seconds from `ctr run --rm` to the container's first output byte, and to ctr's end."""
    start = time.monotonic()
    proc = subprocess.Popen(["ctr", "--address", f"{DIR}/ctd.sock", "run", "--rm",
                             "--runtime", runtime, IMAGE, name, "/bin/echo", "hi"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = os.read(proc.stdout.fileno(), 1)
    at = time.monotonic() - start
    rest, err = proc.communicate(timeout=3600)
    if proc.returncode != 0 or first + rest != b"hi\n":
        sys.exit(f"ctr run --runtime {runtime}: {proc.returncode} {first + rest!r} {err!r}")
    return at, time.monotonic() - start


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (FileNotFoundError, StopIteration):
        return 0


def processes_of(task):
    """The host processes of a running task: its shim, and what its Pids lists (the
    container's process for runc, the VMM for vessel)."""
    pids = [int(l.split()[0]) for l in ctr("task", "ps", task).stdout.splitlines()[1:] if l.split()]
    shims = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except FileNotFoundError:
            continue
        if "containerd-shim" in cmd and f"-id {task} " in cmd + " " and DIR in cmd:
            shims.append(int(p))
    return shims + pids


def guest_ram_kib(pid):
    """Resident KiB of a VMM's guest RAM: its largest mapping (smaps), 0 for others."""
    best = (0, 0)
    try:
        with open(f"/proc/{pid}/smaps") as f:
            size = 0
            for line in f:
                field = line.split()
                if field[0] == "Size:":
                    size = int(field[1])
                elif field[0] == "Rss:" and size > best[0]:
                    best = (size, int(field[1]))
    except FileNotFoundError:
        pass
    return best[1] if best[0] >= 64 << 10 else 0


def memory(runtime, name):
    """RSS (MiB) of a detached container's shim and process(es) once its output is there,
    and of that the guest's RAM (a VM's largest mapping)."""
    ctr("run", "-d", "--runtime", runtime, IMAGE, name, "/bin/sh", "-c", "echo up; exec sleep 3600")
    wait_for(f"{name} running", lambda: "RUNNING" in ctr("task", "ls").stdout
             and name in ctr("task", "ls").stdout, timeout=3600, poll=0.5)
    time.sleep(SETTLE_S)
    pids = processes_of(name)
    total = sum(rss_kib(p) for p in pids) / 1024
    guest = sum(guest_ram_kib(p) for p in pids) / 1024
    ctr("task", "kill", "-s", "SIGKILL", name, check=False)
    wait_for(f"{name} stopped", lambda: "STOPPED" in ctr("task", "ls").stdout
             or name not in ctr("task", "ls").stdout, timeout=120, poll=0.2)
    ctr("task", "delete", name, check=False)
    ctr("container", "delete", name, check=False)
    return total, guest


def main():
    proc = start_containerd()
    try:
        ctr("image", "import", image_archive())
        rows = {}
        for label, runtime in RUNTIMES.items():
            times = [first_output(runtime, f"{label}-{i}") for i in range(RUNS)]
            rows[label] = ([t[0] for t in times], [t[1] for t in times], memory(runtime, f"{label}-mem"))
            print(f"{label}: first output {[round(t[0] * 1000, 1) for t in times]} ms", flush=True)
        print(f"\n{RUNS} runs, medians:")
        print("| runtime | ctr run to first output | ctr run to exit | RSS of shim + process(es) "
              "| of which guest RAM |")
        print("|---|---|---|---|---|")
        for label, (first, total, (mib, guest)) in rows.items():
            print(f"| {label} | {statistics.median(first) * 1000:.1f} ms | "
                  f"{statistics.median(total) * 1000:.1f} ms | {mib:.1f} MiB | {guest:.1f} MiB |")
        extra = statistics.median(rows["vessel"][0]) - statistics.median(rows["runc"][0])
        print(f"\nvessel - runc, first output: {extra * 1000:+.1f} ms (goal on hardware KVM: <= +150 ms)")
    finally:
        proc.kill()
        proc.wait()


main()
