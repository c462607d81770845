#!/usr/bin/env python3
"""bench/image_ssh.py: the runs of bench/image-ssh.sh (see there for what is measured).

Per run and system, times from `vessel create NAME --image IMAGE` to the first successful
`vessel ssh NAME -- true`, split at: create done, VMM up, and the host wall time at which
console lines first appeared (`Run /init` = kernel done, systemd's banner = initramfs
done, `Started ssh.service`, cloud-init's host keys). Console lines are stamped on the
host's clock as they reach the serial log: a nested guest's own clock runs slow.
"""
import argparse
import fcntl
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

# Console lines that end each boot phase, in order.
MARKERS = [
    ("init", re.compile(r"Run /init as init process")),
    ("systemd", re.compile(r"systemd\[1\]: systemd \d+|Welcome to ")),
    ("sshd", re.compile(r"Started ssh\.service|Started OpenBSD Secure Shell")),
    ("keys", re.compile(r"-----BEGIN SSH HOST KEY KEYS-----")),
]
# Phases reported: name, from event, to event.
PHASES = [
    ("create", "t0", "created"),
    ("vmm-start", "created", "started"),
    ("kernel", "started", "init"),
    ("initramfs", "init", "systemd"),
    ("systemd-to-sshd", "systemd", "sshd"),
    ("sshd-to-keys", "sshd", "keys"),
    ("keys-to-ssh", "keys", "ssh"),
]
QEMU = "qemu-system-x86_64"
# systemd colours its status lines.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Stamper(threading.Thread):
    """Follow a serial log; copy it to `out` with host times; note when markers appear."""

    def __init__(self, log, out, t0):
        super().__init__(daemon=True)
        self.log, self.out, self.t0 = Path(log), Path(out), t0
        self.seen = {}
        self.done = threading.Event()

    def run(self):
        pos, pending = 0, b""
        with open(self.out, "w", buffering=1) as w:
            while True:
                stopping = self.done.is_set()
                try:
                    with open(self.log, "rb") as f:
                        f.seek(pos)
                        data = f.read()
                except FileNotFoundError:
                    data = b""
                if data:
                    pos += len(data)
                    now = time.monotonic() - self.t0
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        line = ANSI.sub("", raw.decode("utf-8", "replace").replace("\r", ""))
                        w.write(f"{now:9.2f} {line}\n")
                        for name, pattern in MARKERS:
                            if name not in self.seen and pattern.search(line):
                                self.seen[name] = now
                elif stopping:
                    return
                else:
                    time.sleep(0.05)

    def stop(self):
        self.done.set()
        self.join(5)


class Bench:
    def __init__(self, args):
        self.a = args
        self.logs = Path(args.logs)
        self.state = Path(args.state_dir)
        self.env = dict(os.environ, XDG_DATA_HOME=args.data_home)

    def vessel(self, *args, check=True, log=None):
        cmd = [self.a.vessel, "--state-dir", str(self.state), *args]
        out = open(log, "a") if log else subprocess.DEVNULL
        try:
            r = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
        finally:
            if log:
                out.close()
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}" + (f": see {log}" if log else ""))
        return r.returncode

    def create(self, name, log):
        extra = ["--cmdline-append", self.a.cmdline_append] if self.a.cmdline_append else []
        self.vessel("create", name, "--image", self.a.image, "--memory", self.a.memory, *extra, log=log)

    def ssh(self, name, log):
        """`vessel ssh NAME -- true`, waiting up to the per-run timeout."""
        self.vessel("ssh", name, "--timeout", str(self.a.timeout), "--", "true", log=log)

    def run_vessel(self, run):
        name, log = f"bench-vessel-{run}", self.logs / f"vessel-{run}.log"
        t0 = time.monotonic()
        ev = {"t0": 0.0}
        stamper = Stamper(self.state / name / "serial.log", self.logs / f"vessel-{run}.console", t0)
        try:
            self.create(name, log)
            ev["created"] = time.monotonic() - t0
            stamper.start()
            self.vessel("start", name, log=log)
            ev["started"] = time.monotonic() - t0
            self.ssh(name, log)
            ev["ssh"] = time.monotonic() - t0
        finally:
            if stamper.is_alive():
                stamper.stop()
            self.vessel("stop", "--force", name, check=False, log=log)
            self.vessel("rm", name, check=False, log=log)
        ev.update(stamper.seen)
        return ev

    def run_qemu(self, run):
        """The same image, seed, kernel, initrd and command line under QEMU TCG, with the
        overlay and seed served by `vessel vhost-user-blk` and the NIC by `vessel
        vhost-user-net` (vessel's NAT) forwarding a port recorded as `vessel start` would."""
        name, log = f"bench-qemu-{run}", self.logs / f"qemu-{run}.log"
        vm_dir = self.state / name
        t0 = time.monotonic()
        ev = {"t0": 0.0}
        stamper = Stamper(vm_dir / "serial.log", self.logs / f"qemu-{run}.console", t0)
        procs, lock = [], None
        try:
            self.create(name, log)
            ev["created"] = time.monotonic() - t0
            definition = tomllib.loads((vm_dir / "vm.toml").read_text())
            boot, nic = definition["boot"], definition["nic"][0]
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            (vm_dir / "ports").write_text(f"tcp:127.0.0.1:{port}-:22\n")
            # Hold the VM's lock as its VMM would, so `vessel ssh` sees it running.
            lock = open(vm_dir / "lock", "w")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            socks = {k: vm_dir / f"{k}.sock" for k in ("root", "seed", "net")}
            procs.append(self.backend(log, "blk", socks["root"], "--disk",
                                      f"{vm_dir / 'disk.qcow2'},format=qcow2,allow-external-backing=on"))
            procs.append(self.backend(log, "blk", socks["seed"], "--disk",
                                      f"{vm_dir / 'seed.img'},format=raw,readonly=on"))
            procs.append(self.backend(log, "net", socks["net"], "--nic",
                                      f"nat,mac={nic['mac']},forward=tcp:127.0.0.1:{port}-:22"))
            mem = self.a.memory.rstrip("Mm")
            if mem.upper().endswith("G"):
                mem = str(int(mem[:-1]) * 1024)
            cmd = [QEMU, "-accel", "tcg", "-m", mem, "-smp", str(definition.get("cpus", 1)),
                   "-object", f"memory-backend-memfd,id=mem,size={mem}M,share=on",
                   "-numa", "node,memdev=mem", "-nodefaults", "-display", "none", "-no-reboot",
                   "-serial", f"file:{vm_dir / 'serial.log'}", "-device", "virtio-rng-pci"]
            for k in ("root", "seed"):
                cmd += ["-chardev", f"socket,id=blk-{k},path={socks[k]}",
                        "-device", f"vhost-user-blk-pci,chardev=blk-{k},num-queues=1"]
            # vectors=0: QEMU 7.2 under TCG crashes on vhost-user virtio-net with MSI-X
            # (tests/common/tcg.rs).
            cmd += ["-chardev", f"socket,id=net0,path={socks['net']}",
                    "-netdev", "vhost-user,id=net0,chardev=net0",
                    "-device", f"virtio-net-pci,netdev=net0,mac={nic['mac']},vectors=0"]
            cmd += ["-kernel", boot["kernel"], "-append", boot["cmdline"]]
            if boot.get("initrd"):
                cmd += ["-initrd", boot["initrd"]]
            stamper.start()
            with open(log, "a") as out:
                procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=subprocess.STDOUT))
            ev["started"] = time.monotonic() - t0
            self.ssh(name, log)
            ev["ssh"] = time.monotonic() - t0
        finally:
            if stamper.is_alive():
                stamper.stop()
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if lock:
                lock.close()
            self.vessel("rm", name, check=False, log=log)
        ev.update(stamper.seen)
        return ev

    def backend(self, log, kind, sock, *args):
        """Start `vessel vhost-user-KIND` and wait until it says it listens."""
        sock.unlink(missing_ok=True)
        cmd = [self.a.vessel, f"vhost-user-{kind}", "--socket", str(sock), *args]
        p = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        with open(log, "a") as out:
            for line in p.stderr:
                out.write(line)
                if f"vhost-user-{kind} listening on" in line:
                    break
            else:
                raise RuntimeError(f"{' '.join(cmd)} exited {p.wait()}: see {log}")
        # Keep draining its stderr so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
        return p


def phases(ev):
    return {name: ev[b] - ev[a] if a in ev and b in ev else None for name, a, b in PHASES}


def fmt(v):
    return f"{v:8.1f}" if v is not None else "       -"


def report(results):
    names = [n for n, _, _ in PHASES]
    print(f"{'system':9} {'run':>3} {'total':>8} " + " ".join(f"{n:>8.8}" for n in names))
    for system, run, ev in results:
        p = phases(ev)
        print(f"{system:9} {run:3} {fmt(ev.get('ssh'))} " + " ".join(fmt(p[n]) for n in names))
    medians = {}
    for system in ("vessel", "qemu-tcg"):
        evs = [ev for s, _, ev in results if s == system]
        if not evs:
            continue
        med = {"total": statistics.median(ev["ssh"] for ev in evs)}
        for n in names:
            vals = [phases(ev)[n] for ev in evs if phases(ev)[n] is not None]
            med[n] = statistics.median(vals) if vals else None
        medians[system] = med
        print(f"{system:9} med {fmt(med['total'])} " + " ".join(fmt(med[n]) for n in names))
    print("(seconds of host wall time; phases end at: create done, `vessel start` returned /"
          " QEMU spawned with its vhost-user backends up, `Run /init`, systemd's banner,"
          " `Started ssh.service`, cloud-init's host keys on the console, the first successful"
          " `vessel ssh -- true`)")
    if len(medians) == 2:
        ratio = medians["vessel"]["total"] / medians["qemu-tcg"]["total"]
        print(f"create to first ssh, medians: vessel {medians['vessel']['total']:.1f} s, "
              f"QEMU TCG {medians['qemu-tcg']['total']:.1f} s, vessel/QEMU-TCG ratio {ratio:.2f}")


def main():
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so every run's VM, QEMU and backends go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    for opt in ("vessel", "state-dir", "data-home", "logs", "image", "memory", "cmdline-append"):
        ap.add_argument(f"--{opt}", required=opt != "cmdline-append", default="")
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--timeout", type=int, required=True)
    ap.add_argument("--systems", default="vessel,qemu-tcg")
    a = ap.parse_args()
    bench = Bench(a)
    systems = a.systems.split(",")
    results = []
    for run in range(1, a.runs + 1):
        for system in systems:
            go = bench.run_vessel if system == "vessel" else bench.run_qemu
            try:
                ev = go(run)
            except RuntimeError as e:
                print(f"{system} run {run} failed: {e}", file=sys.stderr)
                sys.exit(1)
            results.append((system, run, ev))
            p = phases(ev)
            print(f"{system} run {run}: first ssh at {ev['ssh']:.1f} s ("
                  + ", ".join(f"{n} {p[n]:.1f}" for n, _, _ in PHASES if p[n] is not None) + ")",
                  flush=True)
    print()
    report(results)


if __name__ == "__main__":
    main()
