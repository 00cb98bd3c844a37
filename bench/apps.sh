#!/usr/bin/env bash
# Are the apps fast enough never to be the proxy's bottleneck? wrk straight at one app versus nginx's
# `return 200`, each pinned to CPU 0 with wrk on CPU 1, interleaved over several rounds.
#
# Usage: bench/apps.sh [--seconds S] [--rounds N] [--no-report]
# Prints a table of medians and writes bench/results/apps-DATE.md unless --no-report.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

seconds=5 rounds=5 report=1
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-report) report=0; shift ;;
    *) echo "usage: bench/apps.sh [--seconds S] [--rounds N] [--no-report]" >&2; exit 2 ;;
    esac
done

build=${BUILD:-build}
bench_need wrk:wrk nginx:nginx-light taskset:util-linux
[ -x "$build/app2" ] || make --no-print-directory all >/dev/null

app_addr=127.0.0.21 app_port=28180 ngx_addr=127.0.0.30 ngx_port=28181
sed -e "s|@TMP@|$BENCH_TMP|g" -e "s|@LISTEN@|$ngx_addr:$ngx_port|" bench/peers/nginx-return200.conf \
    >"$BENCH_TMP/nginx.conf"

bench_start 0 "$BENCH_TMP/nginx.log" nginx -c "$BENCH_TMP/nginx.conf"
bench_start 0 "$BENCH_TMP/app.log" env LISTEN="$app_addr:$app_port" POD_NAME=bench "$build/app2"
bench_wait_port "$ngx_addr" "$ngx_port"
bench_wait_port "$app_addr" "$app_port"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A results
targets=(nginx app-page app-health)
url_of() {
    case $1 in
    nginx) echo "http://$ngx_addr:$ngx_port/" ;;
    app-page) echo "http://$app_addr:$app_port/" ;;
    app-health) echo "http://$app_addr:$app_port/healthz" ;;
    esac
}
for round in $(seq "$rounds"); do
    # Rotate the order each round so that drift on a shared machine does not favour one target.
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do
        t=${targets[$(((i + round) % n))]}
        results[$t]+="$(bench_wrk 1 "$seconds" 64 "$(url_of "$t")")"$'\n'
    done
    echo "round $round/$rounds done" >&2
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

median_col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF { print $c }' | bench_median; }
ratio_median() {
    paste <(printf '%s' "${results[$1]}" | awk 'NF { print $1 }') \
        <(printf '%s' "${results[nginx]}" | awk 'NF { print $1 }') |
        awk '{ print $1 / $2 }' | bench_median
}

page_ratio=$(ratio_median app-page)
verdict=$(awk -v r="$page_ratio" 'BEGIN { print (r >= 0.9 ? "PASS" : "FAIL") }')
table=$(
    echo "| target | req/s (median) | × nginx (median of per-round ratios) | p50 ms | p99 ms |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for t in "${targets[@]}"; do
        printf '| %s | %.0f | %.3f | %s | %s |\n' "$t" "$(median_col "$t" 1)" "$(ratio_median "$t")" \
            "$(median_col "$t" 2)" "$(median_col "$t" 3)"
    done
)
summary="app page at $page_ratio × nginx's return 200 (goal ≥ 0.9): $verdict"
echo "$table"
echo "$summary"

if [ "$report" = 1 ]; then
    out="bench/results/apps-$(date -u +%Y-%m-%d).md"
    cat >"$out" <<REPORT
# The apps against nginx's \`return 200\` — $(date -u '+%Y-%m-%d %H:%M UTC')

\`bench/apps.sh --seconds $seconds --rounds $rounds\`: \`wrk -t1 -c64 -d${seconds}s --latency\` on CPU 1 against
one target at a time on CPU 0, targets rotated each round, $rounds rounds. nginx $(nginx -v 2>&1 | sed 's/.*\///'),
1 worker, access log off, \`return 200 "ok\n"\` (config: \`bench/peers/nginx-return200.conf\`). The app is
\`app2\` serving its real pages: \`/\` (HTML, $(curl -s "$(url_of app-page)" | wc -c) bytes) and \`/healthz\`.

$table

**$summary**

Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average
$load_before before, $load_after after.
REPORT
    echo "report: $out"
fi
