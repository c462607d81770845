#!/usr/bin/env bash
# bench/vsock.sh [ROUNDS (default 2000)] [MIB (default 64)] - virtio-vsock round-trip
# latency (one byte each way, ROUNDS times) and stream throughput (MIB MiB guest → host,
# three times) between a guest program and host servers on vessel's Firecracker-style
# vsock (the host side on unix sockets UDS_PATH_PORT). The reference, in the same boot:
# the same program and servers over TCP through vessel's virtio-net (nat: passt, the
# router address being the host's loopback). Prints the medians and vsock/TCP ratios.
# The guest is the stock Debian cloud kernel with the nested-host profile
# (tests/guests/tcg/nested-vsock-bench.sh, tests/guests/vsock/vsockt.c). On a nested host
# (kvm_pvm) every guest exit is emulated: absolute figures are lower bounds, the ratio is
# what compares.
set -euo pipefail
ROUNDS=${1:-2000}
MIB=${2:-64}
PORT=${VSOCK_BENCH_PORT:-47001}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
nested_guest "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vsock-bench.XXXXXX")
SERVERS=
trap '[ -z "$SERVERS" ] || kill "$SERVERS" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/root/bin"
gcc -static -O2 -s -o "$WORK/root/bin/vsockt" "$ROOT/tests/guests/vsock/vsockt.c"
(cd "$WORK/root" && find . | sort | cpio -o -H newc --quiet) > "$WORK/extra.cpio"
cat "$GUEST/initramfs-nested.cpio" "$WORK/extra.cpio" > "$WORK/initramfs.cpio"

# The host's servers: echo on PORT, sink (one byte back after the stream) on PORT+1, both
# on the vsock's unix sockets and on TCP at 127.0.0.1.
python3 - "$WORK/v.sock" "$PORT" <<'PY' &
import os, socket, sys, threading
uds, port = sys.argv[1], int(sys.argv[2])
def serve(listener, handle):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
def echo(c):
    with c:
        while (b := c.recv(64)):
            c.sendall(b)
def sink(c):
    with c:
        while c.recv(1 << 20):
            pass
        c.sendall(b"k")
for p, handle in ((port, echo), (port + 1, sink)):
    u = socket.socket(socket.AF_UNIX)
    u.bind(f"{uds}_{p}")
    u.listen(8)
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", p))
    t.listen(8)
    for l in (u, t):
        threading.Thread(target=serve, args=(l, handle), daemon=True).start()
threading.Event().wait()
PY
SERVERS=$!
sleep 1
CMDLINE="$(sed '/^#/d' "$ROOT/scripts/nested-host.cmdline" | tr '\n' ' ') vessel.test=nested-vsock-bench vessel.rounds=$ROUNDS vessel.mib=$MIB vessel.port=$PORT"
echo "vsock bench: $ROUNDS round trips, 3 x $MIB MiB streams; Debian $(cat "$GUEST/kernel.version"), $(nproc) host CPUs, $(date -u +%F)"
start=$(date +%s)
timeout 3600 "$VESSEL" run --kernel "$GUEST/vmlinux" --initrd "$WORK/initramfs.cpio" \
    --memory 256M --cpus 1 --cmdline "$CMDLINE" --nic nat,host-loopback=on --vsock "cid=3,uds=$WORK/v.sock" \
    > "$WORK/run.log" 2>&1 || { echo "the VM failed:" >&2; tail -30 "$WORK/run.log" >&2; exit 1; }
grep -q "VESSEL-TEST-PASS nested-vsock-bench" "$WORK/run.log" ||
    { echo "the guest test failed:" >&2; tail -30 "$WORK/run.log" >&2; exit 1; }
echo "boot + test: $(( $(date +%s) - start )) s"
tr -d '\r' < "$WORK/run.log" | grep '^VESSEL-RESULT \(vsock\|tcp\)_' | python3 -c '
import re, statistics, sys
rr, mibs = {}, {}
for line in sys.stdin:
    path, kind = re.match(r"VESSEL-RESULT (\w+)_(rr|stream)", line).groups()
    vals = dict(kv.split("=") for kv in line.split()[2:])
    if kind == "rr":
        rr[path] = (float(vals["p50_us"]), float(vals["p99_us"]))
    else:
        mibs.setdefault(path, []).append(float(vals["mib_s"]))
for path in ("vsock", "tcp"):
    print(f"{path:5} round trip p50 {rr[path][0]:9.1f} us  p99 {rr[path][1]:9.1f} us  "
          f"stream median of {len(mibs[path])} {statistics.median(mibs[path]):8.1f} MiB/s")
lat = rr["vsock"][0] / rr["tcp"][0]
thr = statistics.median(mibs["vsock"]) / statistics.median(mibs["tcp"])
print(f"vsock/tcp: round trip p50 {lat:.2f}, stream {thr:.2f}")
'
