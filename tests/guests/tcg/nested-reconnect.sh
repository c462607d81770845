# nested-reconnect: a disk, a TCP stream and console lines that outlive a suspend and resume
# and a live migration (tests/nested/across_moves.rs). The guest counts once a second: "tick N" in
# block N of its virtio-blk disk (synced), on the virtio-console ("console tick N"), and on a
# connection to the host's port vessel.port (through the nat NIC's gateway, the host's
# loopback reachable there). A resumed or migrated VM has a fresh passt that does not know
# the old connection: the host tells the guest of each move with a file in the shared
# folder, and the guest drops the dead connection, connects again and counts on.
. /tests/lib.sh
bb=/bin/busybox
port=$(arg port)
[ -n "$port" ] || fail "no vessel.port= on the command line"
wait_for /sys/class/net/eth0 300
wait_for /dev/hvc0 300
wait_for /dev/vda 300
$bb ip link set lo up
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add default via 10.0.2.2 dev eth0
# Where the guest stalls for minutes (ring 0 emulated on a loaded host), its TCP must not
# give a live connection up: the default 15 retransmissions (about 15 minutes) stay. The
# nat stream does not wait for them after a move: the move is announced (below).
echo 15 > /proc/sys/net/ipv4/tcp_retries2
# Each process the loop starts costs seconds where ring 0 is emulated (page faults, exec):
# the count reads and writes /tmp/n with the shell's own redirections and pauses with a
# read that times out on a FIFO nobody writes (opened read-write, so the open does not
# wait for a writer); dd is the one process a tick starts.
echo 0 > /tmp/n
echo 0 > /tmp/moves
$bb mkfifo /tmp/pause
pause() { read -t 1 _ <>/tmp/pause || true; }
# With vessel.bridgeport=P, a second NIC (eth1, bridged to the host's bridge at
# 192.168.177.1) carries one more stream for the whole run: the host's own TCP stack is at
# the other end, so the connection must outlive every move (the receiver's tap is another
# port of the bridge; the guest's MAC is announced there). It never reconnects.
bridgeport=$(arg bridgeport)
if [ -n "$bridgeport" ]; then
    wait_for /sys/class/net/eth1 300
    $bb ip link set eth1 up
    $bb ip addr add 192.168.177.2/24 dev eth1
    (
        i=0
        while :; do
            i=$((i + 1))
            echo "bridge tick $i"
            pause
        done | $bb nc 192.168.177.1 "$bridgeport" || true
        echo "VESSEL-ERROR the bridged connection broke"
        # Why, for the record: TcpExt's counters (TCPAbortOnTimeout and the like).
        while read -r line; do
            case $line in TcpExt:*) echo "VESSEL-TCPEXT $line" ;; esac
        done </proc/net/netstat
    ) &
fi
# With vessel.share=TAG, the guest mounts that virtio-fs share and appends each tick to its
# file ticks (a shell redirection: no process): the mount must outlive every move too. The
# host announces move K by creating the share's file moved-K.
share=$(arg share)
ticks=/dev/null
moved=
if [ -n "$share" ]; then
    while read -r m; do insmod "/lib/modules/fs/$m" 2>/dev/null || true; done </etc/modules.fs
    grep -q virtiofs /proc/filesystems || fail "the virtiofs module did not load"
    mkdir -p /mnt/share
    tries=0
    # The device's probe can finish after insmod returns: retry for up to a minute.
    until mount -t virtiofs "$share" /mnt/share 2>/tmp/mount.err; do
        tries=$((tries + 1))
        [ "$tries" -le 600 ] || fail "mount -t virtiofs $share: $(cat /tmp/mount.err)"
        sleep 0.1
    done
    ticks=/mnt/share/ticks
    moved=/mnt/share/moved-
fi
count() {
    while :; do
        read -r n </tmp/n
        n=$((n + 1))
        echo "$n" > /tmp/n
        echo "tick $n" | $bb dd of=/dev/vda bs=512 seek="$n" conv=notrunc,fsync 2>/dev/null ||
            echo "VESSEL-ERROR disk write of tick $n failed" >/dev/console
        echo "console tick $n" > /dev/hvc0
        echo "tick $n" >>"$ticks" ||
            echo "VESSEL-ERROR share write of tick $n failed" >/dev/console
        echo "tick $n"
        pause
    done
}
# Whether the host has announced its next move (the file moved-K, K one more than the moves
# seen so far); counts it as seen.
moved_now() {
    read -r k </tmp/moves
    [ -n "$moved" ] && [ -e "$moved$((k + 1))" ] || return 1
    echo $((k + 1)) >/tmp/moves
    echo "VESSEL-MOVED $((k + 1))"
}
# Whether process $1 has ended (a zombie until waited for: its state in /proc is Z).
ended() {
    st=Z
    read -r _ _ st _ 2>/dev/null <"/proc/$1/stat" || true
    [ "$st" = Z ]
}
while :; do
    count | $bb nc 10.0.2.2 "$port" &
    nc_pid=$!
    # Until the connection breaks, or a move makes it dead: then nc is killed, and count
    # ends at its next write (SIGPIPE).
    until ended "$nc_pid"; do
        if moved_now; then
            kill "$nc_pid" 2>/dev/null || true
            break
        fi
        pause
    done
    wait "$nc_pid" 2>/dev/null || true
    read -r n </tmp/n
    echo "VESSEL-RECONNECT after tick $n"
    pause
done
