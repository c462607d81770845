# nested-balloon: Linux's virtio_balloon driver against vessel's balloon. The guest says it
# is ready and waits while the host inflates the balloon by 128 MiB and deflates it again:
# without deflate_on_oom the driver takes the pages it hands over out of MemTotal, so the
# guest sees both steps there. (The host makes all of the guest's RAM resident first, by a
# snapshot loaded as a copy: tests/nested/balloon.rs says why.)
. /tests/lib.sh
wait_for /sys/bus/virtio/drivers/virtio_balloon 600
kib() { awk "/^$1:/ { print \$2; exit }" /proc/meminfo; }
before=$(kib MemTotal)
echo "VESSEL-BALLOON-READY memtotal_kib=$before"
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
