# lib.sh - helpers sourced by the TCG guest test scripts (tests/common/tcg.rs boots them).
# Results go to the console as "VESSEL-RESULT key=value" lines for the host to check;
# a failed step prints "VESSEL-ERROR ..." and exits non-zero (/init then prints
# VESSEL-TEST-FAIL and powers off).
set -eu
set -o pipefail

# arg NAME: the value of vessel.NAME=VALUE on the kernel command line (empty if absent).
arg() { sed -n "s/.*vessel\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }

result() { echo "VESSEL-RESULT $*"; }

fail() {
    echo "VESSEL-ERROR $*"
    exit 1
}

# wait_for PATH SECONDS: a device appears asynchronously after its driver loads.
wait_for() {
    local tries=0
    while [ ! -e "$1" ]; do
        tries=$((tries + 1))
        [ "$tries" -le $(($2 * 10)) ] || fail "$1 did not appear within $2 s"
        sleep 0.1
    done
}

# now_us: monotonic microseconds (busybox dd prints no rate and busybox date has no %N;
# /proc/timer_list starts with the clock in ns).
now_us() { awk '/^now at/ { printf "%.0f", $3 / 1000; exit }' /proc/timer_list; }

# dd_rate NAME MIB DD-ARGS...: run dd moving MIB MiB, report "NAME=<MiB/s> MiB/s (...)".
dd_rate() {
    local name=$1 mib=$2 start out us
    shift 2
    start=$(now_us)
    out=$(dd "$@" 2>&1) || {
        echo "$out"
        fail "dd for $name failed"
    }
    us=$(($(now_us) - start))
    [ "$us" -gt 0 ] || us=1
    result "$name=$(awk "BEGIN { printf \"%.1f MiB/s (%d MiB in %.3f s)\", $mib * 1e6 / $us, $mib, $us / 1e6 }")"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# dhcp IFACE: lease an address with udhcpc (/etc/udhcpc/default.script configures IFACE).
dhcp() {
    wait_for "/sys/class/net/$1" 10
    ip link set lo up
    ip link set "$1" up
    udhcpc -i "$1" -n -q -t 10 -T 1 || fail "udhcpc got no lease on $1"
    result "lease=$(ip -4 addr show "$1" | awk '/inet /{print $2; exit}')"
    result "router=$(cat /tmp/router)"
}
