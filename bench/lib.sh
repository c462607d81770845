# bench/lib.sh - sourced by the bench scripts: a release build of vessel and the counting
# test guest (tests/guests/counter_guest.c, multiboot) built into a scratch directory.

# vessel_release ROOT - prints the path of vessel to bench: $VESSEL if set, else a fresh
# release build.
vessel_release() {
    if [ -n "${VESSEL:-}" ]; then
        echo "$VESSEL"
        return
    fi
    cargo build --release --manifest-path "$1/Cargo.toml" --bin vessel --bin vessel-vmm >&2
    echo "${CARGO_TARGET_DIR:-$1/target}/release/vessel"
}

# build_counter_guest ROOT OUT - links the counting multiboot guest to OUT.
build_counter_guest() {
    local g=$1/tests/guests dir
    dir=$(dirname "$2")
    local cflags=(-m32 -c -ffreestanding -fno-pic -fno-pie -fno-stack-protector
        -fno-asynchronous-unwind-tables -nostdlib -O2)
    gcc "${cflags[@]}" "$g/multiboot_header.S" -o "$dir/counter-header.o"
    gcc "${cflags[@]}" "$g/counter_guest.c" -o "$dir/counter-main.o"
    ld -m elf_i386 -nostdlib -z noexecstack --no-warn-rwx-segments -T "$g/multiboot.ld" \
        -o "$2" "$dir/counter-header.o" "$dir/counter-main.o"
}

# nested_guest ROOT - builds the stock-Debian-kernel test guest (scripts/make-guest.sh)
# into $GUEST (default $VESSEL_GUEST_DIR or ROOT/guest) and sets $VESSEL to a release build.
nested_guest() {
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$1/target}
    GUEST=${VESSEL_GUEST_DIR:-$1/guest}
    OUT=$GUEST "$1/scripts/make-guest.sh"
    VESSEL=$(vessel_release "$1")
}

# qemu_and_vessel ROOT - sets $QEMU (default qemu-system-x86_64; exits if missing) and
# $VESSEL (see vessel_release), makes $TMP (removed at exit, with the processes that name
# it) and links the counting guest to $TMP/counter.
qemu_and_vessel() {
    QEMU=${QEMU:-qemu-system-x86_64}
    command -v "$QEMU" > /dev/null ||
        { echo "$(basename "$0"): no $QEMU (apt install qemu-system-x86)" >&2; exit 1; }
    VESSEL=$(vessel_release "$1")
    TMP=$(mktemp -d)
    trap 'pkill -f "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
    build_counter_guest "$1" "$TMP/counter"
}
