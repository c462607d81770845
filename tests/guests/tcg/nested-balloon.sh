# nested-balloon: Linux's virtio_balloon driver against vessel's balloon. The guest touches
# nearly all of its free memory (a tmpfs file, then unmounted: the pages go back to the
# guest's free lists but stay in the VMM's RSS), says so, and waits while the host inflates
# the balloon by 128 MiB and deflates it again: without deflate_on_oom the driver takes the
# pages it hands over out of MemTotal, so the guest sees both steps there.
. /tests/lib.sh
wait_for /sys/bus/virtio/drivers/virtio_balloon 600
kib() { awk "/^$1:/ { print \$2; exit }" /proc/meminfo; }
# 96 MiB stay free: the tmpfs pages and the kernel's own allocations while dd runs
# (24 MiB was too few: the OOM killer took dd).
fill=$(($(kib MemFree) / 1024 - 96))
[ "$fill" -gt 64 ] || fail "only $fill MiB to fill"
mkdir -p /mnt/fill
mount -t tmpfs -o size=100% fill /mnt/fill || fail "cannot mount a tmpfs"
dd if=/dev/zero of=/mnt/fill/data bs=1M count="$fill" 2>/dev/null || fail "dd into the tmpfs failed"
umount /mnt/fill
before=$(kib MemTotal)
result "touched_mib=$fill"
echo "VESSEL-BALLOON-TOUCHED memtotal_kib=$before"
# wait_memtotal CMP KIB WHAT: poll MemTotal until `[ MemTotal CMP KIB ]` (10 minutes).
wait_memtotal() {
    local tries=0
    until [ "$(kib MemTotal)" "$1" "$2" ]; do
        tries=$((tries + 1))
        [ "$tries" -le 6000 ] || fail "MemTotal $(kib MemTotal) KiB never $1 $2 KiB ($3)"
        sleep 0.1
    done
}
wait_memtotal -le $((before - 128 * 1024)) "inflate"
result "inflated_memtotal_kib=$(kib MemTotal)"
echo "VESSEL-BALLOON-INFLATED"
wait_memtotal -ge "$before" "deflate"
result "deflated_memtotal_kib=$(kib MemTotal)"
