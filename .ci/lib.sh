# shellcheck shell=bash disable=SC2153  # STAGE_DIR is set by stage() for stage functions
# The stage runner shared by .ci/run and .ci/hardening (sourced, not run).
#
# A stage is a shell function run in a bash process of its own, under a time
# limit, its stdout and stderr going to $CI_LOGS/<stage>/log so the console
# stays readable.  The console gets a line when a stage starts and one when it
# ends (result, seconds, pytest's counts); a failed stage also prints the last
# $CI_TAIL lines of its log, every sanitizer report and every fuzzer artifact
# it left.  A failure does not stop the run: later stages still run (so one
# run shows every failure), and ci_finish prints a table and a verdict and
# returns non-zero if anything failed.
#
# Knobs (all optional):
#   CI_STAGES="asan valgrind"  run only these stages; a word selects a stage of
#                              that name, a stage whose name starts with
#                              "word-", or any glob match ("py3.*").
#                              The others show as SKIP (not selected).
#   CI_LOGS=DIR                where logs go (default: a new /tmp/tcpframe-ci.*)
#   CI_TAIL=80                 log lines shown for a failed stage
#   CI_BUDGET=4800             seconds for the whole run: a stage never gets
#                              more than what is left, and stages that cannot
#                              start in time are failed, so the summary is
#                              printed before the outer 90-minute CI limit.

CI_TAIL=${CI_TAIL:-80}
CI_BUDGET=${CI_BUDGET:-4800}
CI_START=$(date +%s)
CI_LOGS=${CI_LOGS:-$(mktemp -d /tmp/tcpframe-ci.XXXXXX)}
mkdir -p "$CI_LOGS"
export CI_LOGS

# One entry per stage, in the order run: name, PASS/FAIL/SKIP, seconds, note.
STAGE_NAMES=()
STAGE_RESULTS=()
STAGE_SECONDS=()
STAGE_NOTES=()

# --- helpers for stage functions (they run inside the stage's own process) ---

# Skip the current stage with a reason (e.g. a Python not installed here).
skip() {
    printf '%s\n' "$*" > "$STAGE_DIR/skip"
    exit 77
}

# A one-line note for the console and the summary table.
note() {
    printf '%s\n' "$*" > "$STAGE_DIR/note"
}

# Make a fresh venv with the given interpreter and activate it in this shell.
fresh_venv() {
    local python=$1 venv=$2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
}

# The last pytest summary line of a log ("=== 280 passed, 1 skipped in 5s ===",
# or with -q "76 passed, 205 deselected in 30.01s"), without its "="
# padding; empty if pytest never got that far.
pytest_summary() {
    grep -E '^(=+ )?(no tests ran|[0-9]+ [a-z]+.*) in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$1" |
        tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true
}

# How many tests of one outcome ("passed", "failed", ...) a summary reports.
pytest_count() {
    local n
    n=$(grep -oE "[0-9]+ $2" <<<"$1" | head -n 1 | cut -d' ' -f1 || true)
    echo "${n:-0}"
}

# Fail unless the pytest run logged in $1 passed at least one test.  pytest
# itself exits 5 when it collects nothing, but a run where every test was
# skipped exits 0 and would hide a suite that tests nothing.
require_tests_ran() {
    local summary
    summary=$(pytest_summary "$1")
    if [ "$(pytest_count "$summary" passed)" -eq 0 ]; then
        echo "CI: pytest passed no test (summary: '${summary:-none}')" >&2
        return 1
    fi
}

# The C extension file a venv's interpreter imports, e.g. for a build check.
extension_file() {
    python -c 'import tcpframe._tcpframe as m; print(m.__file__)'
}

# --- the runner ---

# Is stage $1 selected by CI_STAGES?
selected() {
    local name=$1 word words
    [ -z "${CI_STAGES:-}" ] && return 0
    read -ra words <<<"$CI_STAGES"   # no pathname expansion of the globs
    for word in "${words[@]}"; do
        # shellcheck disable=SC2053  # $word is meant as a glob
        if [[ $name == $word || $name == "$word"-* ]]; then
            return 0
        fi
    done
    return 1
}

# The result recorded for stage $1, or nothing if it has not run.
result_of() {
    local i
    for i in "${!STAGE_NAMES[@]}"; do
        if [ "${STAGE_NAMES[$i]}" = "$1" ]; then
            echo "${STAGE_RESULTS[$i]}"
            return
        fi
    done
}

record() {   # record NAME RESULT SECONDS NOTE
    STAGE_NAMES+=("$1")
    STAGE_RESULTS+=("$2")
    STAGE_SECONDS+=("$3")
    STAGE_NOTES+=("$4")
}

# Print a file indented, at most $2 lines of it (the head: a sanitizer
# report's first lines say what went wrong).
show_file() {
    local file=$1 max=${2:-400} lines
    lines=$(wc -l < "$file")
    sed -n "1,${max}p" "$file" | sed 's/^/    | /'
    if [ "$lines" -gt "$max" ]; then
        echo "    | ... $((lines - max)) more lines in $file"
    fi
}

# Every sanitizer log file a stage left (ASan/UBSan log_path files:
# asan.<pid>, ubsan.<pid>), whichever of the two kinds exist.
sanitizer_files() {
    find "$1" -maxdepth 1 -type f \( -name 'asan.*' -o -name 'ubsan.*' \) | sort
}

# A file holding nothing but ASan's "failed to allocate" warnings is what
# allocator_may_return_null=1 logs when it hands back NULL (the program sees a
# MemoryError): not an error.  Anything else in a file, or an empty file, is.
is_alloc_warning() {
    [ -s "$1" ] && ! grep -qvE '^==[0-9]+==WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes$' "$1"
}

# The sanitizer files of stage directory $1 that are reports (not warnings).
sanitizer_reports() {
    local file
    while IFS= read -r file; do
        is_alloc_warning "$file" || echo "$file"
    done < <(sanitizer_files "$1")
}

# Inputs libFuzzer or the replay saved for a failure.
fuzz_artifacts() {
    find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'replay-input' \
        -o -name 'oom-*' -o -name 'leak-*' -o -name 'slow-unit-*' \) | sort
}

# Everything that explains a failed stage, on the console.
explain_failure() {
    local name=$1 dir=$2 log=$2/log file
    echo "--- last $CI_TAIL lines of $log:"
    # Less pip's warnings about this machine's missing extra index folders.
    grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$" "$log" |
        tail -n "$CI_TAIL" | sed 's/^/    | /' || true
    while IFS= read -r file; do
        if is_alloc_warning "$file"; then
            echo "--- sanitizer warning $file (not an error by itself):"
        else
            echo "--- sanitizer report $file:"
        fi
        show_file "$file"
    done < <(sanitizer_files "$dir")
    while IFS= read -r file; do
        local replay="python fuzz/fuzz_tcpframe.py $file"
        case $(basename "$file") in
            *-fuzz_header-* | *-fuzz_decoder-* | *-fuzz_io-*)
                local harness
                harness=$(basename "$file" | grep -oE 'fuzz_(header|decoder|io)')
                replay="bash fuzz/native/run.sh --strict --replay $harness $file" ;;
        esac
        echo "--- fuzz input $file ($(stat -c %s "$file") bytes; replay it with: $replay):"
        od -A x -t x1z -v "$file" | head -n 16 | sed 's/^/    | /'
    done < <(fuzz_artifacts "$dir")
    echo "--- (end of $name)"
}

# stage [--needs OTHER] [--limit SECONDS] NAME DESCRIPTION FUNCTION [ARGS...]
#
# Runs FUNCTION ARGS in its own bash process (so `exit` and `set -e` end the
# stage, not the run), with STAGE_NAME, STAGE_DIR and STAGE_LOG exported.  The
# stage fails if it exits non-zero, runs out of time, or leaves a sanitizer
# report (a report from a child process does not always change the exit code).
# With --needs, the stage is skipped if OTHER ran in this run and did not pass.
stage() {
    local needs="" limit=1800
    while [ $# -gt 0 ]; do
        case $1 in
            --needs) needs=$2; shift 2 ;;
            --limit) limit=$2; shift 2 ;;
            *) break ;;
        esac
    done
    local name=$1 description=$2
    shift 2
    local dir=$CI_LOGS/$name
    if ! selected "$name"; then
        record "$name" SKIP 0 "not selected by CI_STAGES"
        return 0
    fi
    if [ -n "$needs" ] && [ -n "$(result_of "$needs")" ] && [ "$(result_of "$needs")" != PASS ]; then
        printf '\n=== %s: skipped, it needs %s, which did not pass\n' "$name" "$needs"
        record "$name" SKIP 0 "needs $needs"
        return 0
    fi
    local left=$((CI_BUDGET - ($(date +%s) - CI_START)))
    if [ "$left" -lt 60 ]; then
        rm -rf "$dir"
        printf '\n=== %s: FAIL, not started: the run is out of time (CI_BUDGET=%s s)\n' "$name" "$CI_BUDGET"
        record "$name" FAIL 0 "out of time, not run"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left

    rm -rf "$dir"
    mkdir -p "$dir"
    printf '\n=== %s: %s\n    started %s, limit %s s, log %s\n' \
        "$name" "$description" "$(date +%H:%M:%S)" "$limit" "$dir/log"
    local start rc=0
    start=$(date +%s)
    # The stage's bash needs every function; timeout signals the stage's
    # whole process group when the limit passes.  In the background, so that
    # a Ctrl-C or TERM reaches on_signal at once (see below).
    # shellcheck disable=SC2046
    export -f $(compgen -A function)
    STAGE_NAME=$name STAGE_DIR=$dir STAGE_LOG=$dir/log \
        timeout --kill-after=30 "$limit" bash -c 'set -euo pipefail; "$@"' stage "$@" \
        > "$dir/log" 2>&1 < /dev/null &
    STAGE_PID=$!
    wait "$STAGE_PID" || rc=$?
    STAGE_PID=""
    local seconds=$(($(date +%s) - start)) result=PASS why="" summary text
    summary=$(pytest_summary "$dir/log")
    if [ "$rc" -eq 77 ] && [ -f "$dir/skip" ]; then
        result=SKIP
        why=$(cat "$dir/skip")
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        result=FAIL
        why="timed out after $limit s"
    elif [ "$rc" -ne 0 ]; then
        result=FAIL
        why="exit status $rc"
        if [ "$rc" -eq 5 ] && [ -n "$summary" ]; then
            why="$why: pytest ran no test"
        fi
    fi
    local reports warnings
    reports=$(sanitizer_reports "$dir" | wc -l)
    warnings=$(($(sanitizer_files "$dir" | wc -l) - reports))
    if [ "$reports" -gt 0 ] && [ "$result" != SKIP ]; then
        result=FAIL
        why="${why:+$why; }$reports sanitizer report(s)"
    fi
    if [ -f "$dir/note" ]; then
        text=$(cat "$dir/note")
    else
        text=${summary:+pytest: $summary}
    fi
    [ -n "$summary" ] && printf '%s\n' "$summary" > "$dir/pytest"
    text="${why}${why:+${text:+; }}${text}"
    if [ "$warnings" -gt 0 ]; then
        text="${text:+$text; }$warnings ASan allocation warning(s) (NULL returned, as allowed)"
    fi
    printf '    %s %s in %s s%s\n' "$result" "$name" "$seconds" "${text:+: $text}"
    [ "$result" = FAIL ] && explain_failure "$name" "$dir"
    record "$name" "$result" "$seconds" "$text"
    return 0
}

# timeout runs a stage in a process group of its own, which a Ctrl-C on the
# terminal does not reach: pass the signal on (timeout forwards it to the
# whole group), so that stopping the run stops the stage too.
STAGE_PID=""
on_signal() {
    if [ -n "$STAGE_PID" ]; then
        kill -TERM "$STAGE_PID" 2>/dev/null || true
        wait "$STAGE_PID" 2>/dev/null || true
    fi
    printf '\nCI verdict: FAIL (interrupted by SIG%s; logs in %s)\n' "$1" "$CI_LOGS"
    exit 130
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# The summary table, the test count over every pytest run, the verdict.
# Returns 1 if any stage failed or none passed.
ci_finish() {
    local i passed=0 failed=0 skipped=0 failures=() total=$(($(date +%s) - CI_START))
    printf '\n=== summary (logs in %s)\n' "$CI_LOGS"
    printf '%-16s %-6s %7s  %s\n' stage result seconds note
    for i in "${!STAGE_NAMES[@]}"; do
        printf '%-16s %-6s %7s  %s\n' "${STAGE_NAMES[$i]}" "${STAGE_RESULTS[$i]}" \
            "${STAGE_SECONDS[$i]}" "${STAGE_NOTES[$i]}"
        case ${STAGE_RESULTS[$i]} in
            PASS) passed=$((passed + 1)) ;;
            FAIL) failed=$((failed + 1)); failures+=("${STAGE_NAMES[$i]}") ;;
            *) skipped=$((skipped + 1)) ;;
        esac
    done
    local t_pass=0 t_fail=0 t_skip=0 summary
    for i in "${!STAGE_NAMES[@]}"; do
        # Only stages that ran now: a reused CI_LOGS keeps older stages' files.
        if [ "${STAGE_RESULTS[$i]}" = SKIP ] || [ ! -f "$CI_LOGS/${STAGE_NAMES[$i]}/pytest" ]; then
            continue
        fi
        summary=$(cat "$CI_LOGS/${STAGE_NAMES[$i]}/pytest")
        t_pass=$((t_pass + $(pytest_count "$summary" passed)))
        t_fail=$((t_fail + $(pytest_count "$summary" failed) + $(pytest_count "$summary" errors?)))
        t_skip=$((t_skip + $(pytest_count "$summary" skipped)))
    done
    printf 'tests: %s passed, %s failed, %s skipped\n' "$t_pass" "$t_fail" "$t_skip"
    local counts="$passed passed, $failed failed, $skipped skipped; $((total / 60))m$((total % 60))s"
    if [ "$failed" -gt 0 ]; then
        echo "CI verdict: FAIL (${failures[*]}) -- stages: $counts"
        return 1
    elif [ "$passed" -eq 0 ]; then
        echo "CI verdict: FAIL (no stage ran) -- stages: $counts"
        return 1
    fi
    echo "CI verdict: PASS -- stages: $counts"
}
