#!/usr/bin/env bash
# Builds every libFuzzer harness tests/fuzz/fuzz_*.c with clang (ASan, UBSan) and runs it from its
# committed seeds, tests/fuzz/corpus/<harness>/. New inputs only ever go under the build dir.
#
# Usage: tests/fuzz/run.sh [--regress] [BUILD_DIR]
#   (default)  fuzz each harness for FUZZ_SECONDS (60), starting from the seeds and from what
#              earlier runs found, kept in BUILD_DIR/<harness>.out/corpus; then say how to merge
#              the finds into the seeds.
#   --regress  run every seed of each harness once, then fuzz for FUZZ_REGRESS_SECONDS (5) into
#              a scratch dir emptied first: the brief run of `make test`.
# BUILD_DIR: the argument, else $FUZZ_BUILD, else build/fuzz. FUZZ_HARNESSES="fuzz_http ..."
# runs only those; FUZZ_CC names the compiler (clang). Each harness names the sources and
# libraries it links on "fuzz-links:" lines of its first comment (as many as it needs).
#
# Exit status: 0 when every harness ran clean; 1 when one crashed, leaked, hung or broke an
# invariant (the input that did it is named); 2 for usage or build errors.
set -euo pipefail

usage() {
    if [ "$1" -eq 0 ]; then
        sed -n '5,16s/^# \{0,1\}//p' "$0"
    else
        sed -n '5,16s/^# \{0,1\}//p' "$0" >&2
    fi
    exit "$1"
}

mode=full
build=${FUZZ_BUILD:-build/fuzz}
while [ $# -gt 0 ]; do
    case $1 in
    --regress) mode=regress ;;
    -h | --help) usage 0 ;;
    -*) usage 2 ;;
    *) build=$1 ;;
    esac
    shift
done
seconds=${FUZZ_SECONDS:-60}
[ "$mode" = full ] || seconds=${FUZZ_REGRESS_SECONDS:-5}
# libFuzzer takes -max_total_time=0 as "no limit": at least a second.
case $seconds in '' | *[!0-9]* | 0*) echo "run.sh: not a number of seconds: $seconds" >&2 && exit 2 ;; esac

case $build in /*) ;; *) build=$PWD/$build ;; esac
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$self")/../.."
mkdir -p "$build"

CC=${FUZZ_CC:-clang}
CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 -fno-omit-frame-pointer
    '-fsanitize=fuzzer,address,undefined' -fno-sanitize-recover=all -Wall -Wextra -Ilib -Iproxy/src)
# A stack for UBSan's reports too; sanitizer settings given by the caller win.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# The fuzzer runs in the background so that an interrupt reaches it (timeout(1) moves it out of
# the terminal's process group); the watchdog bounds even a run that libFuzzer cannot stop.
child=
trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; exit 130' INT
trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; exit 143' TERM

# Runs the fuzzer with a watchdog, output to the log $1. Returns its exit status.
run_fuzzer() {
    local log=$1 rc=0
    shift
    timeout -k 5 $((seconds + 120)) "$@" >"$log" 2>&1 &
    child=$!
    wait "$child" || rc=$?
    child=
    return "$rc"
}

# Builds harness $1 into $build/$1 unless the binary is newer than everything it is made of.
build_harness() {
    local name=$1 src=tests/fuzz/$1.c bin=$build/$1 links srcs=() libs=() w
    links=$(sed -n 's/^ \* fuzz-links: //p' "$src")
    if [ -z "$links" ]; then
        echo "run.sh: $src has no \" * fuzz-links: FILE.c ... -lLIB\" line" >&2
        return 2
    fi
    for w in $links; do
        case $w in
        *.c)
            if [ ! -f "$w" ]; then
                echo "run.sh: $src links $w, which does not exist" >&2
                return 2
            fi
            srcs+=("$w")
            ;;
        *) libs+=("$w") ;;
        esac
    done
    # Every harness source counts: one may include another (fuzz_conn_tls.c, fuzz_conn.c).
    if [ -x "$bin" ] && [ -z "$(find tests/fuzz/fuzz_*.c "${srcs[@]}" "$self" -newer "$bin")" ] &&
        [ -z "$(find lib proxy/src -name '*.h' -newer "$bin" -print -quit)" ]; then
        return 0
    fi
    echo "  CLANG   $bin"
    if ! "$CC" "${CFLAGS[@]}" "$src" "${srcs[@]}" -o "$bin.tmp" "${libs[@]}" \
        >"$build/$name.build.log" 2>&1; then
        cat "$build/$name.build.log" >&2
        rm -f "$bin.tmp"
        return 2
    fi
    mv "$bin.tmp" "$bin"
}

# "cov N ft N corp N/SIZE" from the line of libFuzzer's log $1 that says $2 (INITED or DONE).
stats() {
    sed -n "s/.*$2 *cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\).*/cov \1 ft \2 corp \3/p" "$1" |
        tail -n 1
}

# Says which input broke harness $1 (exit status $2, log $3) and how, from its log.
report_crash() {
    local name=$1 rc=$2 log=$3 input seed
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    seed=$(sed -n 's/^Running: \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "FAIL $name (exit $rc)"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "  killed by the watchdog after $((seconds + 120)) s"
    fi
    [ -z "$seed" ] || echo "  seed:  $seed"
    [ -z "$input" ] || echo "  input: $input"
    echo "  log:   $log"
    echo "  again: $build/$name ${input:-$seed}"
    awk '/^==[0-9]+==|runtime error:|ERROR: libFuzzer|^SUMMARY:/ { p = 1 } p' "$log" |
        head -n 60 | sed 's/^/  | /'
}

harnesses=()
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    if [ -z "${FUZZ_HARNESSES:-}" ] || [[ " $FUZZ_HARNESSES " == *" $name "* ]]; then
        harnesses+=("$name")
    fi
done
if [ ${#harnesses[@]} -eq 0 ]; then
    echo "run.sh: no harness tests/fuzz/fuzz_*.c matches FUZZ_HARNESSES=${FUZZ_HARNESSES:-}" >&2
    exit 2
fi

for name in "${harnesses[@]}"; do
    build_harness "$name" || exit 2
done

failed=0
merge_hints=()
for name in "${harnesses[@]}"; do
    bin=$build/$name seeds=tests/fuzz/corpus/$name out=$build/$name.out
    mkdir -p "$out/crashes"
    flags=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/crashes/")
    files=()
    if [ -d "$seeds" ]; then
        mapfile -t files < <(find "$seeds" -type f | sort)
    fi
    [ ${#files[@]} -gt 0 ] || echo "warning: $name has no seeds in $seeds" >&2

    if [ "$mode" = regress ]; then
        # Every seed once, by name, so that a seed that fails is named as such.
        rc=0
        if [ ${#files[@]} -gt 0 ]; then
            run_fuzzer "$out/seeds.log" "$bin" "${flags[@]}" "${files[@]}" || rc=$?
        fi
        if [ "$rc" -ne 0 ]; then
            report_crash "$name" "$rc" "$out/seeds.log"
            failed=1
            continue
        fi
        scratch=$out/regress
        rm -rf "$scratch"
    else
        scratch=$out/corpus
    fi
    mkdir -p "$scratch"
    before=$(find "$scratch" -type f | wc -l)
    # The scratch dir comes first: libFuzzer writes its finds to the first dir only.
    dirs=("$scratch")
    [ ${#files[@]} -eq 0 ] || dirs+=("$seeds")
    log=$out/$mode.log
    rc=0
    run_fuzzer "$log" "$bin" "${flags[@]}" -max_total_time="$seconds" "${dirs[@]}" || rc=$?
    if [ "$rc" -ne 0 ]; then
        report_crash "$name" "$rc" "$log"
        failed=1
        continue
    fi
    after=$(find "$scratch" -type f | wc -l)
    echo "ok   $name: ${#files[@]} seeds + $before earlier finds: $(stats "$log" INITED)"
    echo "     after $seconds s: $(stats "$log" DONE)"
    if [ "$mode" = full ]; then
        echo "     $((after - before)) new inputs in $scratch ($after in all)"
        merge_hints+=("$bin -merge=1 $seeds $scratch")
    fi
done

if [ ${#merge_hints[@]} -gt 0 ]; then
    echo "To add the finds that cover something the seeds do not (libFuzzer picks the fewest and"
    echo "smallest; they are named by their SHA-1), run from the repo root, then commit the files:"
    printf '  %s\n' "${merge_hints[@]}"
fi
exit "$failed"
