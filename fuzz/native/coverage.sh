#!/usr/bin/env bash
# Line and branch coverage of the plain-C core (csrc/frame_header.c,
# frame_decoder.c, frame_io.c, frame_outbuf.c) by the C unit tests (tests/c) and the native
# fuzzers' corpora, measured with clang's source-based coverage (llvm-cov).
#
#   fuzz/native/coverage.sh [options]
# Options:
#   -o, --out DIR        builds, profiles and reports (default: a new
#                        temporary directory, printed)
#   -c, --corpus DIR     a directory with one subdirectory per harness
#                        (DIR/fuzz_io/...), as run.sh -o DIR leaves in
#                        DIR/corpus; may be given more than once.  Without
#                        one, run.sh is run first (its default runs) to
#                        make one.  The seeds in fuzz/native/corpus are
#                        always replayed.
#   --seeds-only         replay only the seeds (no corpus, no fuzzing)
#   -s, --seed S         the seed of that first run.sh (default 1)
#   --min-lines P        fail if a file's line coverage is below P percent
#   --min-branches P     the same for branch coverage
# Environment: CLANG (default clang); LLVM_PROFDATA and LLVM_COV default to
# the ones of clang's version.
#
# Prints one line per file and a total, "coverage: frame_io.c lines 100.00%
# (92/92) branches 97.06% (66/68)", and lists every line and branch never
# reached.  OUT/coverage.txt has llvm-cov's table, OUT/uncovered.txt the
# annotated source of what was missed.
set -euo pipefail
# shellcheck source=fuzz/native/common.sh
. "$(dirname "$0")/common.sh"

OUT="" MIN_LINES=0 MIN_BRANCHES=0 SEEDS_ONLY=0 SEED=1
CORPORA=()
while [ $# -gt 0 ]; do
    case $1 in
        -o | --out) OUT=$2; shift 2 ;;
        -c | --corpus) CORPORA+=("$2"); shift 2 ;;
        --seeds-only) SEEDS_ONLY=1; shift ;;
        -s | --seed) SEED=$2; shift 2 ;;
        --min-lines) MIN_LINES=$2; shift 2 ;;
        --min-branches) MIN_BRANCHES=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "coverage.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
find_toolchain
for tool in "$LLVM_PROFDATA" "$LLVM_COV"; do
    if [ -z "$tool" ]; then
        echo "coverage.sh: llvm-profdata or llvm-cov missing (Debian: apt-get install llvm)" >&2
        exit 3
    fi
done
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tcpframe-native-cov.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "${OUT:?}/bin" "${OUT:?}/profiles"
mkdir -p "$OUT/bin" "$OUT/profiles"
echo "coverage: $CLANG $("$CLANG" -dumpversion), $LLVM_PROFDATA, $LLVM_COV; out $OUT"

if [ ${#CORPORA[@]} -eq 0 ] && [ "$SEEDS_ONLY" = 0 ]; then
    echo "coverage: no corpus given: fuzzing first (run.sh -s $SEED -o $OUT/fuzz)"
    bash "$NATIVE_DIR/run.sh" -s "$SEED" -j 2 -o "$OUT/fuzz"
    CORPORA=("$OUT/fuzz/corpus")
fi

# Build everything instrumented; libFuzzer's main() replays the corpora
# (-runs=0: each input once, no mutation).
objects=()
for h in "${HARNESSES[@]}"; do
    build_harness "$h" "$OUT/bin" "${COVERAGE_CFLAGS[@]}" -DTF_FUZZ_STRICT=1 -fsanitize=fuzzer
    objects+=("$OUT/bin/$h")
done
build_c_tests "$OUT/bin" "${COVERAGE_CFLAGS[@]}"
objects+=("$OUT/bin/test_core")

LLVM_PROFILE_FILE="$OUT/profiles/test_core.profraw" "$OUT/bin/test_core" | tail -n 1 |
    sed 's/^/tests\/c: /'
for h in "${HARNESSES[@]}"; do
    dirs=("$NATIVE_DIR/corpus/$h")
    for c in "${CORPORA[@]}"; do
        [ -d "$c/$h" ] && dirs+=("$c/$h")
    done
    inputs=$(find "${dirs[@]}" -type f | wc -l)
    # Into an empty first directory: libFuzzer writes nothing into ours.
    rm -rf "$OUT/replay-$h" && mkdir -p "$OUT/replay-$h"
    LLVM_PROFILE_FILE="$OUT/profiles/$h.profraw" "$OUT/bin/$h" -runs=0 \
        -max_len="$(max_len "$h")" "$OUT/replay-$h" "${dirs[@]}" > "$OUT/replay-$h.log" 2>&1 ||
        { tail -n 30 "$OUT/replay-$h.log"; echo "coverage: replaying $h failed" >&2; exit 1; }
    echo "$h: replayed $inputs inputs"
done

"$LLVM_PROFDATA" merge -sparse "$OUT"/profiles/*.profraw -o "$OUT/merged.profdata"
sources=()
for f in "${CORE_FILES[@]}"; do
    sources+=("$CSRC/$f")
done
cov_args=(-instr-profile="$OUT/merged.profdata" "${objects[0]}")
for o in "${objects[@]:1}"; do
    cov_args+=(-object "$o")
done
"$LLVM_COV" report "${cov_args[@]}" -show-branch-summary "${sources[@]}" > "$OUT/coverage.txt"
"$LLVM_COV" show "${cov_args[@]}" -show-branches=count -show-line-counts \
    "${sources[@]}" > "$OUT/annotated.txt"

# llvm-cov report's columns: Filename, Regions, Missed, Cover, Functions,
# Missed, Executed, Lines, Missed, Cover, Branches, Missed, Cover.
summary=$(awk -v min_l="$MIN_LINES" -v min_b="$MIN_BRANCHES" '
    function pct(hit, all) { return all ? sprintf("%.2f%%", 100 * hit / all) : "n/a" }
    $1 ~ /\.c$/ || $1 == "TOTAL" {
        name = $1; sub(/.*\//, "", name)
        lines = $8; lmiss = $9; br = $11; bmiss = $12
        printf "coverage: %-15s lines %s (%d/%d) branches %s (%d/%d)\n", name,
            pct(lines - lmiss, lines), lines - lmiss, lines, pct(br - bmiss, br), br - bmiss, br
        if (name != "TOTAL" && ((lines && 100 * (lines - lmiss) / lines < min_l) ||
                                (br && 100 * (br - bmiss) / br < min_b)))
            printf "coverage: %s is below the threshold (lines %s%%, branches %s%%)\n", name, min_l, min_b > "/dev/stderr"
    }' "$OUT/coverage.txt" 2> "$OUT/below.txt")
echo "$summary"

# Every line with a zero count and every branch with a zero side.
awk '
    /^\/.*\.c:$/ { file = $0; sub(/.*\//, "", file); sub(/:$/, "", file); next }
    /^ *[0-9]+\| *0\|/ { split($0, f, "|"); gsub(/ /, "", f[1]); print "  never run:   " file ":" f[1] ":" substr($0, index($0, f[3])) }
    /Branch \([0-9]+:[0-9]+\): \[True: 0,|False: 0\]/ { b = $0; sub(/^ *\| */, "", b); print "  never taken: " file " " b }
' "$OUT/annotated.txt" | tee "$OUT/uncovered.txt" | head -n 60
echo "coverage: $(grep -c 'never run' "$OUT/uncovered.txt" || true) line(s) never run, $(grep -c 'never taken' "$OUT/uncovered.txt" || true) branch side(s) never taken (details: $OUT/annotated.txt)"

if [ -s "$OUT/below.txt" ]; then
    cat "$OUT/below.txt" >&2
    exit 1
fi
