# Shared helpers for the bench scripts: installing tools, starting and stopping pinned processes, wrk.
# Sourced, not run. Every process started here is recorded and stopped by PID on exit.

BENCH_PIDS=()
BENCH_TMP=$(mktemp -d /tmp/portier-bench.XXXXXX)

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT INT TERM

# Installs the Debian packages named (binary:package pairs) whose binary is missing.
bench_need() {
    local missing=() entry
    for entry in "$@"; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bench: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# bench_start CPU LOGFILE CMD...: starts CMD pinned to CPU in the background; sets BENCH_LAST_PID.
bench_start() {
    local cpu=$1 log=$2
    shift 2
    taskset -c "$cpu" "$@" >"$log" 2>&1 &
    BENCH_LAST_PID=$!
    BENCH_PIDS+=("$BENCH_LAST_PID")
}

# bench_stop PID: stops one process started by bench_start and waits for it.
bench_stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# bench_wait_port HOST PORT: waits up to 5 s for a TCP listener.
bench_wait_port() {
    local i
    for i in $(seq 50); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing listens on $1:$2" >&2
    return 1
}

# bench_wrk CPU SECONDS CONNS URL [wrk args...]: prints "req/s p50_ms p99_ms" of one wrk run.
bench_wrk() {
    local cpu=$1 secs=$2 conns=$3 url=$4
    shift 4
    taskset -c "$cpu" wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                         if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

# median of the numbers on stdin.
bench_median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
                                         else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
