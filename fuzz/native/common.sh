# shellcheck shell=bash disable=SC2034  # the variables are for run.sh and coverage.sh
# Sourced by run.sh and coverage.sh: the toolchain, and how each harness and
# the C unit tests (tests/c) are built against the plain-C core in csrc/.

NATIVE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$NATIVE_DIR/../.." && pwd)
CSRC=$ROOT/csrc
HARNESSES=(fuzz_header fuzz_decoder fuzz_io)
CORE_FILES=(frame_header.c frame_decoder.c frame_io.c frame_outbuf.c)

# What the harness and the core are compiled with, whatever the purpose.
COMMON_CFLAGS=(-std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Werror -I"$CSRC" -I"$NATIVE_DIR")
# Fuzzing: libFuzzer, ASan and UBSan, every UBSan finding fatal.
# shellcheck disable=SC2054  # the commas are clang's
FUZZ_CFLAGS=(-O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
# While mutating, two things are left out so that a seed and a run count
# give the same run wherever it runs (any path, any environment):
# - UBSan's pointer-overflow checks: they compare addresses as integers,
#   clang 14's comparison tracing hands those values to libFuzzer's
#   mutations, and the run then depends on where things were allocated
#   (which moves with, say, the length of a path).  What the fuzzer finds is
#   replayed afterwards with every check on (run.sh does both).
# - the stack-depth feature: ASan realigns frames, so the depth reached
#   differs by a few bytes with where the stack starts (the size of the
#   environment), and so does what counts as new coverage.
REPEATABLE_CFLAGS=(-fno-sanitize=pointer-overflow -fno-sanitize-coverage=stack-depth)
# Coverage: source-based (llvm-cov); libFuzzer only for its main(), to replay.
COVERAGE_CFLAGS=(-O0 -fprofile-instr-generate -fcoverage-mapping)

is_harness() {
    local h
    for h in "${HARNESSES[@]}"; do
        [ "$h" = "$1" ] && return 0
    done
    return 1
}

# The core files a harness links, one a line as "file|defines": the defines
# reroute the core's calls into the harness (see the harness's comment).
core_sources() {
    case $1 in
        fuzz_header) echo "frame_header.c|" ;;
        fuzz_decoder)
            echo "frame_header.c|"
            echo "frame_decoder.c|-Drealloc=tf_fuzz_realloc"
            ;;
        fuzz_io)
            echo "frame_io.c|-Drecv=tf_fuzz_recv -Dsendmsg=tf_fuzz_sendmsg -Dpoll=tf_fuzz_poll -Dclock_gettime=tf_fuzz_clock_gettime"
            ;;
    esac
}

# The largest input libFuzzer makes for a harness.
max_len() {
    case $1 in
        fuzz_header) echo 64 ;;
        fuzz_decoder) echo 4096 ;;
        *) echo 2048 ;;
    esac
}

# clang, and the llvm-profdata and llvm-cov of the same version.  Sets CLANG,
# LLVM_PROFDATA, LLVM_COV; returns 1 (saying why) if clang is missing.
find_toolchain() {
    CLANG=${CLANG:-clang}
    if ! command -v "$CLANG" > /dev/null; then
        echo "no $CLANG on PATH (Debian: apt-get install clang llvm)" >&2
        return 1
    fi
    local major tool var
    major=$("$CLANG" -dumpversion | cut -d. -f1)
    for tool in llvm-profdata llvm-cov; do
        var=$(echo "$tool" | tr 'a-z-' 'A-Z_')
        if [ -z "${!var:-}" ]; then
            printf -v "$var" '%s' "$(command -v "$tool-$major" || command -v "$tool" || true)"
        fi
    done
}

# Can this clang link a libFuzzer program?  (Debian ships the runtime in
# libclang-rt-N-dev, which clang-N depends on.)
can_link_fuzzer() {
    local dir
    dir=$(mktemp -d)
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        > "$dir/t.c"
    "$CLANG" -fsanitize=fuzzer,address,undefined "$dir/t.c" -o "$dir/t" > "$dir/log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && cat "$dir/log" >&2
    rm -rf "$dir"
    return $rc
}

# build_harness NAME OUTDIR CFLAGS...: OUTDIR/NAME, with the core's files
# compiled on their own (as in the extension), each with its defines.
build_harness() {
    local name=$1 out=$2 src defs
    shift 2
    local objs=() obj=$out/obj-$name
    mkdir -p "$obj"
    while IFS='|' read -r src defs; do
        # shellcheck disable=SC2086  # defs is a list of words
        "$CLANG" "${COMMON_CFLAGS[@]}" "$@" $defs -c "$CSRC/$src" -o "$obj/${src%.c}.o" || return 1
        objs+=("$obj/${src%.c}.o")
    done < <(core_sources "$name")
    "$CLANG" "${COMMON_CFLAGS[@]}" "$@" "$NATIVE_DIR/$name.c" "${objs[@]}" -o "$out/$name"
}

# build_c_tests OUTDIR CFLAGS...: OUTDIR/test_core, the unit tests of tests/c.
build_c_tests() {
    local out=$1
    shift
    "$CLANG" "${COMMON_CFLAGS[@]}" "$@" "$ROOT/tests/c/test_core.c" \
        "$CSRC/frame_header.c" "$CSRC/frame_io.c" "$CSRC/frame_decoder.c" \
        "$CSRC/frame_outbuf.c" -pthread \
        -o "$out/test_core"
}
