#!/usr/bin/env bash
# Build the native libFuzzer harnesses of the plain-C core (clang,
# -fsanitize=fuzzer,address,undefined) and run each for a fixed number of
# executions with a fixed seed: the same command does the same work and gives
# the same answer.  Exits non-zero if any harness crashed, failed one of its
# invariants, leaked, or timed out.
#
#   fuzz/native/run.sh [options] [HARNESS...]        fuzz (default: all three)
#   fuzz/native/run.sh [options] --replay HARNESS INPUT...
#                                                    run saved inputs once
# Options:
#   -r, --runs N     executions per harness (default: per harness, below,
#                    10-35 s each on an idle 2-core machine, one at a time)
#   -s, --seed S     libFuzzer seed (default 1; "random" for a new one)
#   -o, --out DIR    builds, the corpus found (DIR/corpus/HARNESS) and
#                    failing inputs (DIR/artifacts) go here (default: a new
#                    temporary directory, printed)
#   -a, --artifacts DIR   failing inputs go here instead, named
#                    <kind>-<harness>-<sha1> (crash-fuzz_io-0a1b...)
#   --strict         also check what the core mishandles today (see
#                    fuzz/native/README.md): fails until csrc/ is fixed
#   -j, --jobs N     harnesses run at once (default 1)
#   --check          only check that clang can build libFuzzer programs
#                    (exit 0), or say why not (exit 3)
# Environment: CLANG (default clang).
#
# Each harness's seeds are fuzz/native/corpus/HARNESS; what the run adds goes
# to DIR/corpus/HARNESS, which coverage.sh replays.
set -euo pipefail
# shellcheck source=fuzz/native/common.sh
. "$(dirname "$0")/common.sh"

default_runs() {
    case $1 in
        fuzz_header) echo 1000000 ;;
        fuzz_decoder) echo 500000 ;;
        fuzz_io) echo 150000 ;;
    esac
}

RUNS="" SEED=1 OUT="" ARTIFACTS="" STRICT=0 JOBS=1 REPLAY=0 CHECK=0
ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
        -r | --runs) RUNS=$2; shift 2 ;;
        -s | --seed) SEED=$2; shift 2 ;;
        -o | --out) OUT=$2; shift 2 ;;
        -a | --artifacts) ARTIFACTS=$2; shift 2 ;;
        -j | --jobs) JOBS=$2; shift 2 ;;
        --strict) STRICT=1; shift ;;
        --replay) REPLAY=1; shift ;;
        --check) CHECK=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if [ "$SEED" = random ]; then
    SEED=$(((RANDOM << 15 | RANDOM) + 1))
fi
find_toolchain || exit 3
if ! can_link_fuzzer; then
    echo "run.sh: $CLANG cannot link -fsanitize=fuzzer programs (Debian: libclang-rt-N-dev)" >&2
    exit 3
fi
if [ "$CHECK" = 1 ]; then
    echo "run.sh: $CLANG $("$CLANG" -dumpversion) links libFuzzer + ASan + UBSan programs"
    exit 0
fi
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tcpframe-native-fuzz.XXXXXX")}
ARTIFACTS=${ARTIFACTS:-$OUT/artifacts}
mkdir -p "$OUT/bin" "$ARTIFACTS"
OUT=$(cd "$OUT" && pwd)
ARTIFACTS=$(cd "$ARTIFACTS" && pwd)

EXTRA=()
[ "$STRICT" = 1 ] && EXTRA=(-DTF_FUZZ_STRICT=1)

# The sanitizers' reports on stderr, every finding fatal; LeakSanitizer on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# bin/HARNESS to fuzz with, bin-full/HARNESS (every UBSan check) to replay.
build() {
    echo "build: $1 ($CLANG $("$CLANG" -dumpversion), ${FUZZ_CFLAGS[*]}${EXTRA[*]:+ ${EXTRA[*]}}; fuzzing with ${REPEATABLE_CFLAGS[*]})"
    build_harness "$1" "$OUT/bin-full" "${FUZZ_CFLAGS[@]}" "${EXTRA[@]}"
    if [ "$REPLAY" = 0 ]; then
        build_harness "$1" "$OUT/bin" "${FUZZ_CFLAGS[@]}" "${REPEATABLE_CFLAGS[@]}" "${EXTRA[@]}"
    fi
}

if [ "$REPLAY" = 1 ]; then
    if [ ${#ARGS[@]} -lt 2 ] || ! is_harness "${ARGS[0]}"; then
        echo "usage: run.sh --replay HARNESS INPUT... (HARNESS: ${HARNESSES[*]})" >&2
        exit 2
    fi
    build "${ARGS[0]}"
    "$OUT/bin-full/${ARGS[0]}" -runs=1 "${ARGS[@]:1}"
    exit
fi

if [ ${#ARGS[@]} -eq 0 ]; then
    ARGS=("${HARNESSES[@]}")
fi
for h in "${ARGS[@]}"; do
    if ! is_harness "$h"; then
        echo "run.sh: no harness $h (there are: ${HARNESSES[*]})" >&2
        exit 2
    fi
done
for h in "${ARGS[@]}"; do
    build "$h"
done

# The same seed and run count give the same run only if addresses do not
# change: libFuzzer feeds the operands of the program's comparisons back into
# its mutations, pointers among them (the core's "grown == NULL").  So
# address space randomization is turned off for the fuzzer where we can.
NORANDOM=()
if setarch "$(uname -m)" -R true 2> /dev/null; then
    NORANDOM=(setarch "$(uname -m)" -R)
    norandom_note="address randomization off (setarch -R), so the run is repeatable"
else
    norandom_note="setarch -R failed: with address randomization on, runs with one seed may differ a little"
fi

# fuzz_one HARNESS: fuzz, then print one line; 0 on a clean run.
fuzz_one() {
    local h=$1 runs=${RUNS:-$(default_runs "$1")} log=$OUT/$1.log own=$OUT/artifacts-$1
    mkdir -p "$OUT/corpus/$h" "$own"
    local start rc=0 seconds
    start=$(date +%s)
    # -reload=0: no timed re-reads of the corpus, so the seed and the run
    # count alone decide what is done.
    "${NORANDOM[@]}" "$OUT/bin/$h" -seed="$SEED" -runs="$runs" -max_len="$(max_len "$h")" -reload=0 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$own/" \
        "$OUT/corpus/$h" "$NATIVE_DIR/corpus/$h" > "$log" 2>&1 || rc=$?
    # Everything in the corpus again, with every UBSan check on (-runs=0:
    # each input once; into an empty first directory, so nothing is added).
    local replayed=0
    if [ "$rc" -eq 0 ]; then
        rm -rf "$OUT/replay-$h" && mkdir -p "$OUT/replay-$h"
        "$OUT/bin-full/$h" -runs=0 -max_len="$(max_len "$h")" -timeout=10 -artifact_prefix="$own/" \
            "$OUT/replay-$h" "$OUT/corpus/$h" "$NATIVE_DIR/corpus/$h" > "$OUT/$h.replay.log" 2>&1 ||
            { rc=$?; log=$OUT/$h.replay.log; }
        replayed=$(find "$OUT/corpus/$h" "$NATIVE_DIR/corpus/$h" -type f | wc -l)
    fi
    seconds=$(($(date +%s) - start))
    local done_line execs speed
    # libFuzzer's last status line: "#2000000  DONE   cov: 32 ft: 182 corp: 64/4324b ..."
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$OUT/$h.log" | tail -n 1 |
        grep -oE '(cov|ft|corp): [^ ]+' | paste -sd' ' || true)
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$OUT/$h.log" | head -n 1 | grep -oE '[0-9]+$' || true)
    speed=-
    if [ -n "$execs" ] && [ "$seconds" -gt 0 ]; then
        speed=$((execs / seconds))
    fi
    local f kind found=0
    for f in "$own"/*; do
        [ -e "$f" ] || continue
        kind=${f##*/}
        kind=${kind%%-*}
        mv "$f" "$ARTIFACTS/$kind-$h-${f##*-}"
        found=$((found + 1))
        echo "$h: $kind input saved as $ARTIFACTS/$kind-$h-${f##*-}"
        echo "    replay: fuzz/native/run.sh$([ "$STRICT" = 1 ] && echo ' --strict') --replay $h $ARTIFACTS/$kind-$h-${f##*-}"
    done
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ] || [ -z "$done_line" ]; then
        echo "--- $h: last lines of $log:"
        grep -vE '^(#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|INFO: )' "$log" | tail -n 60 | sed 's/^/    | /'
        echo "$h: FAIL (exit $rc) seed $SEED, ${execs:-?} of $runs runs, ${seconds} s"
        return 1
    fi
    echo "$h: PASS seed $SEED, $execs runs, ${seconds} s, $speed exec/s: $done_line; corpus $(find "$OUT/corpus/$h" -type f | wc -l) found + $(find "$NATIVE_DIR/corpus/$h" -type f | wc -l) seeds, all $replayed replayed with every UBSan check"
}

echo "fuzzing: seed $SEED, out $OUT; $norandom_note"
failed=0
if [ "$JOBS" -gt 1 ]; then
    # At most JOBS at once, each into its own file, printed in order.
    pids=()
    for h in "${ARGS[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
            wait -n || true
        done
        fuzz_one "$h" > "$OUT/$h.result" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed=$((failed + 1))
        cat "$OUT/${ARGS[$i]}.result"
    done
else
    for h in "${ARGS[@]}"; do
        fuzz_one "$h" || failed=$((failed + 1))
    done
fi
echo "native fuzz: ${#ARGS[@]} harness(es), $failed failed (seed $SEED; reproduce: fuzz/native/run.sh -s $SEED${RUNS:+ -r $RUNS}$([ "$STRICT" = 1 ] && echo ' --strict'))"
[ "$failed" -eq 0 ]
