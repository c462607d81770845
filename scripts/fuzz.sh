#!/usr/bin/env bash
# Run every cargo-fuzz target under fuzz/ for a time budget each, starting from the seed
# corpora committed under fuzz/corpus/<target>/, and print one line of figures per target
# (executions, coverage, corpus size, findings).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS is each target's budget (default 20; libFuzzer's -max_total_time). Without
# TARGETs every target in fuzz/Cargo.toml runs. New inputs go to a scratch corpus under
# fuzz/target-corpus/ (never into the committed seeds); crashes, timeouts and out-of-memory
# inputs go to fuzz/artifacts/<target>/ and make the script exit 1 after all targets ran.
# A single input running longer than FUZZ_UNIT_TIMEOUT seconds (default 10) counts as a
# finding: that is how quadratic work on hostile input shows up.
#
# Builds are release with debug assertions. FUZZ_BUILD picks the rest: `long` (default:
# AddressSanitizer, one codegen unit, for long runs) or `ci` (scripts/test.sh: no sanitizer
# and 16 codegen units, a much cheaper build that still finds every panic, overflow and
# timeout; the code under test is safe Rust).
# Crashes print the end of the target's log, with the reproducer's path, to stderr.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. cargo-fuzz itself is installed from crates.io (a pinned version) when missing.
set -euo pipefail

secs=${1:-20}
shift || true
case $secs in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;;
esac
unit_timeout=${FUZZ_UNIT_TIMEOUT:-10}
cargo_fuzz_version=0.13.2
case ${FUZZ_BUILD:-long} in
    long) build_flags=(--debug-assertions --sanitizer address) ;;
    ci) build_flags=(--debug-assertions --sanitizer none --codegen-units 16) ;;
    *) echo "fuzz.sh: FUZZ_BUILD must be long or ci, not '$FUZZ_BUILD'" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    echo "fuzz.sh: installing cargo-fuzz $cargo_fuzz_version" >&2
    install_start=$(date +%s)
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --quiet
    echo "fuzz.sh: installed cargo-fuzz in $(($(date +%s) - install_start)) s"
fi

mapfile -t all < <(cargo fuzz list)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all[@]}" | grep -qx -- "$t"; then
        echo "fuzz.sh: no fuzz target '$t' (targets: ${all[*]})" >&2
        exit 2
    fi
done

build_start=$(date +%s)
if [ $# -eq 0 ]; then
    cargo fuzz build "${build_flags[@]}"
else
    for t in "${targets[@]}"; do
        cargo fuzz build "${build_flags[@]}" "$t"
    done
fi
echo "fuzz.sh: built ${#targets[@]} targets (${FUZZ_BUILD:-long} build) in $(($(date +%s) - build_start)) s"

logs=$root/fuzz/target-logs
mkdir -p "$logs"
failed=()
run_start=$(date +%s)
printf '%-24s %10s %8s %8s %8s %s\n' target execs cov features corpus result
for t in "${targets[@]}"; do
    scratch=$root/fuzz/target-corpus/$t
    seeds=$root/fuzz/corpus/$t
    artifacts=$root/fuzz/artifacts/$t/
    mkdir -p "$scratch" "$seeds" "$artifacts"
    result=ok
    # The scratch corpus comes first: libFuzzer adds new inputs to the first directory.
    if ! cargo fuzz run "${build_flags[@]}" "$t" "$scratch" "$seeds" -- \
        -max_total_time="$secs" -timeout="$unit_timeout" -print_final_stats=1 \
        -artifact_prefix="$artifacts" >"$logs/$t.log" 2>&1; then
        result="FINDING (see $logs/$t.log, $artifacts)"
        failed+=("$t")
        # The reproducer's path ("Test unit written to ...") and the panic, for CI logs.
        echo "fuzz.sh: $t found a crash; the end of $logs/$t.log:" >&2
        tail -n 40 "$logs/$t.log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    printf '%-24s %10s %8s %8s %8s %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
        "${corp:-?}" "$result"
done
echo "fuzz.sh: ran ${#targets[@]} targets for ${secs} s each in $(($(date +%s) - run_start)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: findings in: ${failed[*]}" >&2
    exit 1
fi
