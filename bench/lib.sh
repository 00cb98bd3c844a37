# shellcheck shell=bash
# Shared helpers for the bench scripts: installing tools, starting and stopping pinned processes, wrk.
# Sourced, not run. Every process started here is recorded and stopped by PID on exit.

BENCH_PIDS=()
BENCH_TMP=$(mktemp -d /tmp/portier-bench.XXXXXX)

bench_cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$BENCH_TMP"
}
# Ctrl-C and SIGTERM end the script (which runs the EXIT trap) instead of resuming after the handler.
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Installs the Debian packages named (binary:package pairs) whose binary is missing. A user's PATH
# may lack /usr/sbin, where nginx and haproxy live; a user that is not root installs with sudo.
bench_need() {
    local missing=() entry bin sudo=""
    for entry in "$@"; do
        bin=${entry%%:*}
        command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${entry#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "bench: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# bench_pin CPU CMD...: runs CMD on the CPU list CPU (taskset syntax), or anywhere when CPU is "any".
bench_pin() {
    local cpu=$1
    shift
    if [ "$cpu" = any ]; then
        "$@"
    else
        taskset -c "$cpu" "$@"
    fi
}

# bench_start CPU LOGFILE CMD...: starts CMD pinned to CPU ("any": unpinned) in the background,
# stdout and stderr to LOGFILE; sets BENCH_LAST_PID.
bench_start() {
    local cpu=$1 log=$2
    shift 2
    # Simple commands, not bench_pin: a function in the background would be a subshell, and $! its
    # PID rather than CMD's. taskset execs CMD, so $! is CMD's own PID.
    if [ "$cpu" = any ]; then
        "$@" >"$log" 2>&1 </dev/null &
    else
        taskset -c "$cpu" "$@" >"$log" 2>&1 </dev/null &
    fi
    BENCH_LAST_PID=$!
    BENCH_PIDS+=("$BENCH_LAST_PID")
}

# bench_stop PID: stops one process started by bench_start, waits for it and forgets it, so that the
# exit trap never signals a PID the system may since have given to another process.
bench_stop() {
    local pid keep=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for pid in "${BENCH_PIDS[@]}"; do
        [ "$pid" = "$1" ] || keep+=("$pid")
    done
    BENCH_PIDS=("${keep[@]}")
}

# bench_tree PID: prints PID and its descendants (nginx's workers, say), one a line.
bench_tree() {
    # The command name may hold spaces and parentheses: the fields that follow start after the last
    # ")". cat, unlike awk, goes on when a process ends between the glob and the read (and then
    # fails, which is no failure here).
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
        { pid = $1; sub(/.*\) /, ""); parent[pid] = $2 }
        END { print root; n = 1; list[1] = root
              for (i = 1; i <= n; i++) for (p in parent) if (parent[p] == list[i]) { list[++n] = p; print p } }'
}

# bench_cpu_ticks PID: utime + stime, in clock ticks, of PID and its descendants (all their threads).
bench_cpu_ticks() {
    local p total=0 t
    for p in $(bench_tree "$1"); do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# bench_cpu_stat CPU: "busy idle", the clock ticks CPU (a number, or "any": all CPUs together) has
# spent busy (user, nice, system, irq, softirq) and idle (idle, iowait) since boot, from /proc/stat.
bench_cpu_stat() {
    local name=cpu
    [ "$1" = any ] || name=cpu$1
    awk -v n="$name" '$1 == n { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
}

# bench_rss_kb PID...: the sum of VmRSS, in KiB, of the processes named.
bench_rss_kb() {
    local p total=0 r
    for p in "$@"; do
        r=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$p/status" 2>/dev/null) || r=0
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# bench_wait_port HOST PORT: waits up to 5 s for a TCP listener.
bench_wait_port() {
    local _
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing listens on $1:$2" >&2
    return 1
}

# bench_wrk CPU SECONDS CONNS URL [wrk args...]: one wrk run pinned to CPU ("any": unpinned) with
# $WRK_THREADS threads (1 by default); prints "req/s p50_ms p99_ms requests errors", errors being
# non-2xx/3xx responses plus socket errors.
bench_wrk() {
    local cpu=$1 secs=$2 conns=$3 url=$4
    shift 4
    bench_pin "$cpu" wrk -t"${WRK_THREADS:-1}" -c"$conns" -d"${secs}s" --latency "$@" "$url" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                         if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { errs += $NF }
        /Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
        END { printf "%.0f %.3f %.3f %d %d\n", rps, p50, p99, reqs, errs }'
}

# An awk function, prepended to awk programs that need it: med("v1 v2 ...") is the median of the
# space-separated numbers of its argument, or "-" when there are none.
# shellcheck disable=SC2034 # used by run.sh
BENCH_AWK_MED='
function med(list,   n, a, i, j, x) {
    n = split(list, a, " ")
    if (n == 0) return "-"
    for (i = 2; i <= n; i++) {
        x = a[i] + 0
        for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]
        a[j + 1] = x
    }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
'

# median of the numbers on stdin.
bench_median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
                                         else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
