#!/usr/bin/env bash
# kvm-unit-tests.sh - run the x86 kvm-unit-tests (x86/unittests.cfg) under vessel, and
# optionally under QEMU's microvm for reference; print one PASS/FAIL/SKIP/TIMEOUT row per entry.
#
# usage: scripts/kvm-unit-tests.sh [--qemu] [--list FILE] [ENTRY...]
#   ENTRY...      run only these entries (default: all of unittests.cfg)
#   --qemu        also run each entry under qemu-system-x86_64 -M microvm (KVM)
#   --list FILE   also write "ENTRY VESSEL QEMU" lines to FILE (for tests/kvm_unit_tests.rs)
# environment:
#   KUT_TARBALL   the source (default: $ROOT/../shared/third_party/kvm-unit-tests-*.tar.gz)
#   KUT_DIR       build and log directory (default: $ROOT/target/kvm-unit-tests)
#   VESSEL        the vessel binary (default: $ROOT/target/debug/vessel, built if missing)
#   TIMEOUT       seconds per run, overrides unittests.cfg (default there: 90)
#   KUT_MEMORY    guest memory in MiB when the entry sets no -m (default: 128, QEMU's)
#   QEMU_CPU      QEMU's -cpu (default: host,-arch-capabilities; nested KVM rejects that MSR)
# Needs gcc, make and python3 (to build the tests), and qemu-system-x86 for --qemu.
# A status is read as upstream's scripts/runtime.bash does: debug-exit status 1 is PASS,
# 77 SKIP (every check skipped), anything else FAIL; TIMEOUT when the run did not end.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUT_DIR=${KUT_DIR:-$ROOT/target/kvm-unit-tests}
KUT_MEMORY=${KUT_MEMORY:-128}
QEMU_CPU=${QEMU_CPU:-host,-arch-capabilities}
with_qemu=0 list= only=()
while [ $# -gt 0 ]; do
    case $1 in
    --qemu) with_qemu=1 ;;
    --list) list=$2; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) only+=("$1") ;;
    esac
    shift
done

die() { echo "kvm-unit-tests.sh: $*" >&2; exit 2; }

# --- build (once per tarball) -------------------------------------------------------------
if [ -z "${KUT_TARBALL:-}" ]; then
    for KUT_TARBALL in "$ROOT"/../shared/third_party/kvm-unit-tests-*.tar.gz; do :; done
fi
[ -f "$KUT_TARBALL" ] || die "no kvm-unit-tests tarball at $KUT_TARBALL (set KUT_TARBALL)"
SRC=$KUT_DIR/kvm-unit-tests
stamp=$KUT_DIR/built-from
if [ "$(cat "$stamp" 2>/dev/null)" != "$(basename "$KUT_TARBALL")" ]; then
    rm -rf "$SRC" "$stamp" && mkdir -p "$KUT_DIR" || die "cannot create $KUT_DIR"
    tar xzf "$KUT_TARBALL" -C "$KUT_DIR" || die "cannot extract $KUT_TARBALL"
    [ -d "$SRC" ] || die "$KUT_TARBALL has no kvm-unit-tests/ directory"
    echo "building kvm-unit-tests in $SRC" >&2
    (cd "$SRC" && ./configure >/dev/null && make -j"$(nproc)" >"$KUT_DIR/build.log" 2>&1) ||
        die "build failed; see $KUT_DIR/build.log"
    basename "$KUT_TARBALL" >"$stamp"
fi

if [ -z "${VESSEL:-}" ]; then
    VESSEL=$ROOT/target/debug/vessel
    [ -x "$VESSEL" ] && [ -x "$ROOT/target/debug/vessel-vmm" ] || (cd "$ROOT" && cargo build --quiet) || die "cannot build vessel"
fi
[ -x "$VESSEL" ] || die "no vessel binary at $VESSEL"
if [ $with_qemu = 1 ]; then
    command -v qemu-system-x86_64 >/dev/null || die "--qemu needs qemu-system-x86_64"
fi

# --- unittests.cfg -----------------------------------------------------------------------
# One line per entry: name|file|smp|test_args|qemu_params|arch|groups|accel|timeout|check
parse_cfg() {
    awk '
    function flush() {
        if (name != "") print name "|" f["file"] "|" f["smp"] "|" f["test_args"] "|" \
            f["qemu_params"] f["extra_params"] "|" f["arch"] "|" f["groups"] "|" f["accel"] "|" \
            f["timeout"] "|" f["check"]
        delete f
    }
    /^[ \t]*#/ || /^[ \t]*$/ { next }
    /^\[.*\]/ { flush(); name = substr($0, 2, index($0, "]") - 2); next }
    /=/ {
        key = $0; sub(/[ \t]*=.*/, "", key); gsub(/^[ \t]+/, "", key)
        val = $0; sub(/^[^=]*=[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
        f[key] = val
    }
    END { flush() }' "$SRC/x86/unittests.cfg"
}

# Why an entry cannot run here (empty if it can): the same rules as upstream's runtime.bash
# (arch, nodefault, accel, check), plus the QEMU devices and machines no microvm has.
skip_reason() {
    local arch=$1 groups=$2 accel=$3 check=$4 params=$5 file=$6 c
    [ -z "$arch" ] || [ "$arch" = x86_64 ] || { echo "$arch only"; return; }
    [[ " $groups " == *" nodefault "* ]] && { echo "manual run only (nodefault)"; return; }
    [ -z "$accel" ] || [ "$accel" = kvm ] || { echo "accel $accel only"; return; }
    for c in $check; do
        [ "$(cat "${c%%=*}" 2>/dev/null)" = "${c#*=}" ] || { echo "needs ${c}"; return; }
    done
    if [[ $params =~ -device[[:space:]]+([^[:space:]]+) ]]; then
        echo "needs QEMU device ${BASH_REMATCH[1]%%,*}"; return
    fi
    if [[ $params =~ (-M|-machine)[[:space:]]+(q35|[^[:space:]]*vmport=on) ]]; then
        echo "needs QEMU machine option ${BASH_REMATCH[2]}"; return
    fi
    [ -f "$SRC/x86/$file" ] || echo "x86/$file was not built"
}

# Guest memory in MiB: the entry's -m (M or G suffix), else KUT_MEMORY.
memory_mib() {
    if [[ $1 =~ -m[[:space:]]+([0-9]+)([MmGg]?)([[:space:]]|$) ]]; then
        case ${BASH_REMATCH[2]} in
        [Gg]) echo $((BASH_REMATCH[1] * 1024)) ;;
        *) echo "${BASH_REMATCH[1]}" ;;
        esac
    else
        echo "$KUT_MEMORY"
    fi
}

# status of one run -> PASS/SKIP/FAIL(n)/TIMEOUT
verdict() {
    case $1 in
    1) echo PASS ;;
    77) echo SKIP ;;
    124 | 137) echo TIMEOUT ;;
    *) echo "FAIL($1)" ;;
    esac
}

run_vessel() { # name kernel env args cpus mem timeout
    timeout -k 5 "$7" "$VESSEL" run --kernel "$2" --initrd "$3" --cmdline="$4" --cpus "$5" \
        --memory "$6M" --serial "file:$KUT_DIR/logs/$1.vessel.log" \
        </dev/null >/dev/null 2>"$KUT_DIR/logs/$1.vessel.err"
}

run_qemu() { # name kernel env args cpus mem timeout
    timeout -k 5 "$7" qemu-system-x86_64 -M microvm -enable-kvm -cpu "$QEMU_CPU" -m "$6" \
        -smp "$5" -nodefaults -no-reboot -display none \
        -device isa-debug-exit,iobase=0xf4,iosize=0x4 -serial "file:$KUT_DIR/logs/$1.qemu.log" \
        -kernel "$2" -initrd "$3" -append "$4" </dev/null >/dev/null 2>"$KUT_DIR/logs/$1.qemu.err"
}

summary_of() { grep -a '^SUMMARY:' "$1" 2>/dev/null | tail -1 | sed 's/^SUMMARY: //; s/\r$//'; }

# --- run -----------------------------------------------------------------------------------
set -f # test_args such as "ept_access*" are no file names
mkdir -p "$KUT_DIR/logs" "$KUT_DIR/env"
[ -z "$list" ] || : >"$list"
declare -A total
start=$SECONDS
if [ $with_qemu = 1 ]; then
    printf '%-40s %-12s %-12s %s\n' ENTRY VESSEL QEMU NOTE
else
    printf '%-40s %-12s %s\n' ENTRY VESSEL NOTE
fi
while IFS='|' read -r name file smp args params arch groups accel tmo check; do
    if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then
        continue
    fi
    smp=${smp:-1}
    # test_args may hold quotes and backticks (kvmclock_test): expand them as upstream does.
    args=$(eval "echo $args" 2>/dev/null)
    mem=$(memory_mib "$params")
    why=$(skip_reason "$arch" "$groups" "$accel" "$check" "$params" "$file")
    if [ -n "$why" ]; then
        v=SKIP q=SKIP note=$why
    else
        envfile=$KUT_DIR/env/$name
        printf 'NR_CPUS=%s\nMEMSIZE=%s\n' "$smp" "$mem" >"$envfile"
        t=${TIMEOUT:-${tmo:-90}}
        t=${t%s}
        run_vessel "$name" "$SRC/x86/$file" "$envfile" "$args" "$smp" "$mem" "$t"
        v=$(verdict $?)
        note=$(summary_of "$KUT_DIR/logs/$name.vessel.log")
        q=-
        if [ $with_qemu = 1 ]; then
            run_qemu "$name" "$SRC/x86/$file" "$envfile" "$args" "$smp" "$mem" "$t"
            q=$(verdict $?)
            qnote=$(summary_of "$KUT_DIR/logs/$name.qemu.log")
            [ -z "$qnote" ] || [ "$qnote" = "$note" ] || note="$note | qemu: $qnote"
        fi
    fi
    vs=${v%%'('*} qs=${q%%'('*}
    total[vessel.$vs]=$((${total[vessel.$vs]:-0} + 1))
    total[qemu.$qs]=$((${total[qemu.$qs]:-0} + 1))
    if [ $with_qemu = 1 ]; then
        printf '%-40s %-12s %-12s %s\n' "$name" "$v" "$q" "$note"
    else
        printf '%-40s %-12s %s\n' "$name" "$v" "$note"
    fi
    [ -z "$list" ] || echo "$name $vs $qs" >>"$list"
done < <(parse_cfg)

for who in vessel qemu; do
    [ $who = vessel ] || [ $with_qemu = 1 ] || continue
    printf '%-7s PASS %s  FAIL %s  SKIP %s  TIMEOUT %s\n' "$who:" "${total[$who.PASS]:-0}" \
        "${total[$who.FAIL]:-0}" "${total[$who.SKIP]:-0}" "${total[$who.TIMEOUT]:-0}"
done
echo "logs in $KUT_DIR/logs; $((SECONDS - start)) s"
