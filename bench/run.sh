#!/usr/bin/env bash
# portier side by side with nginx and HAProxy, and the no-proxy limit (issues 4, 11 and 15). Starts
# three app2 replicas (and, for the body-size scenarios and the nginx pods, a static origin), then
# portier, nginx and HAProxy one at a time, each configured for the same job; pins the proxy under
# test to CPU 0 and the clients, the apps and the origin to CPU 1; rotates the order of the targets
# every round. A local run goes into a network namespace of its own, with cubic as TCP's congestion
# control. bench/README.md says what each scenario means and how to read the report.
#
# Usage: bench/run.sh [--rounds N] [--seconds S] [--warmup S] [--scenarios LIST] [--clients N]
#                     [--no-report] [--no-netns]
#        bench/run.sh --smoke                     one short round of a, kn64, dr and on (25% only), no report
#        bench/run.sh --target http://HOST[:PORT] the client side only, against a proxy elsewhere
# LIST is comma-separated: a (keep-alive, 100 B), b (a new connection per request), c (4 KiB and
# 256 KiB bodies), d (HTTPS: dk keep-alive, dn a new TLS connection per request with a full
# handshake, dr the same resuming a session; each may also be named alone), e (10,000 idle
# keep-alive clients), w (2 workers, unpinned), s (the load sweep: keep-alive 100 B at 1, 4, 16, 64
# and 256 clients, kaN behind the app2 pods and knN behind nginx pods, and a new connection per
# request at 4 and 64, naN and nnN; each may be named alone; ka64 is a, na64 is b), o (open loop:
# latency at 25, 50 and 75% of nginx's saturated req/s; oa behind the app2 pods, on behind the nginx
# pods). Default: a,b,c,d,e,w,s,o. --no-netns: stay in the machine's network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
. bench/lib.sh

usage() {
    sed -n '9,23s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

rounds=5 seconds=5 warmup=1 scenarios=a,b,c,d,e,w,s,o clients=10000 report=1 target="" netns=1
# The open loop's rates, in percent of nginx's saturated req/s.
ol_pcts="25 50 75"
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=${2:?}; shift 2 ;;
    --seconds) seconds=${2:?}; shift 2 ;;
    --warmup) warmup=${2:?}; shift 2 ;;
    --scenarios) scenarios=${2:?}; shift 2 ;;
    --clients) clients=${2:?}; shift 2 ;;
    --no-report) report=0; shift ;;
    --no-netns) netns=0; shift ;;
    --smoke) rounds=1 seconds=1 warmup=0 scenarios=a,kn64,dr,on report=0 ol_pcts=25; shift ;;
    --target) target=${2:?}; shift 2 ;;
    *) usage ;;
    esac
done
for n in "$rounds" "$seconds" "$warmup" "$clients"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "bench: not a whole number: $n" >&2; usage; }
done
if [ "$rounds" -lt 1 ] || [ "$seconds" -lt 1 ]; then usage; fi

build=${BUILD:-build}
app_port=28300 origin_port=28301
declare -A proxy_addr=([portier]=127.0.0.40:28310 [nginx]=127.0.0.41:28311 [haproxy]=127.0.0.42:28312)
# The HTTPS listeners of the same proxies, in the configs of the (d) rows.
declare -A proxy_tls_addr=([portier]=127.0.0.40:28320 [nginx]=127.0.0.41:28321 [haproxy]=127.0.0.42:28322)
proxies=(portier nginx haproxy)
proxy_cpu=0 client_cpu=1
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: one CPU only: everything shares CPU 0, and the figures mean little" >&2
    client_cpu=0
fi
conns=64 ol_conns=64
host_header='Host: app2.com'
results=$BENCH_TMP/results.txt idle_results=$BENCH_TMP/idle.txt tls_results=$BENCH_TMP/tls.txt
ol_results=$BENCH_TMP/openloop.txt
: >"$results"
: >"$idle_results"
: >"$tls_results"
: >"$ol_results"
tls_dir=$BENCH_TMP/tls

# The load sweep's points, by backend: "a" the app2 pods, "n" the nginx pods (the static origin's
# three workers). sweep_id BACKEND KIND CLIENTS: a point's scenario id, KIND "k" (keep-alive) or "n"
# (a new connection per request); the 64-client points behind the apps are (a) and (b).
sweep_backends=(a n)
sweep_k=(1 4 16 64 256) sweep_n=(4 64)
sweep_id() {
    case $1$2$3 in
    ak64) echo a ;;
    an64) echo b ;;
    *) echo "$2$1$3" ;;
    esac
}
sweep_all=()
for b in "${sweep_backends[@]}"; do
    for n in "${sweep_k[@]}"; do sweep_all+=("$(sweep_id "$b" k "$n")"); done
done
for b in "${sweep_backends[@]}"; do
    for n in "${sweep_n[@]}"; do sweep_all+=("$(sweep_id "$b" n "$n")"); done
done

# The scenario ids (a b c4 c256 dk dn dr e w2 and the sweep's), in the order LIST names them, each
# once; each round runs them all, then the open loop's (ol_ids: oa, on), which take their rates from
# the same round's nginx rows.
ids=() ol_ids=()
add_id() {
    [[ " ${ids[*]} " == *" $1 "* ]] || ids+=("$1")
}
IFS=, read -ra wanted <<<"$scenarios"
for w in "${wanted[@]}"; do
    case $w in
    a | b | e | dk | dn | dr) add_id "$w" ;;
    c) add_id c4; add_id c256 ;;
    d) add_id dk; add_id dn; add_id dr ;;
    w) add_id w2 ;;
    s) for i in "${sweep_all[@]}"; do add_id "$i"; done ;;
    ka64) add_id a ;;
    na64) add_id b ;;
    o) ol_ids=(oa on) ;;
    oa | on) [[ " ${ol_ids[*]} " == *" $w "* ]] || ol_ids+=("$w") ;;
    *)
        if [[ " ${sweep_all[*]} " == *" $w "* ]]; then
            add_id "$w"
        else
            echo "bench: unknown scenario: $w" >&2
            usage
        fi
        ;;
    esac
done
# The open loop needs nginx's saturated rate behind the same backend: its 64-client keep-alive row
# at least.
for o in "${ol_ids[@]}"; do
    b=${o#o}
    [[ " ${ids[*]} " == *" $(sweep_id "$b" k 64) "* || " ${ids[*]} " == *" $(sweep_id "$b" k 256) "* ]] ||
        add_id "$(sweep_id "$b" k 64)"
done

# in_sweep ID: true for the sweep's points, (a) and (b) among them.
in_sweep() {
    [[ " ${sweep_all[*]} " == *" $1 "* ]]
}

# backend_name BACKEND: the pods behind the proxy, in words.
backend_name() {
    case $1 in
    a) echo "app2 pods" ;;
    n) echo "nginx pods" ;;
    esac
}

# scenario_set ID: sets s_label, s_path, s_args (extra wrk or tls-conns arguments), s_conns (the
# client's connections), s_workers, s_proxy_cpu, s_client_cpu, s_threads, s_tls (1: over HTTPS, to
# the proxy's TLS listener), s_client (wrk, or tls-conns: a new TLS connection per request), s_unit
# (what a row counts: req or conn) and s_backend (a: the app2 pods, n: the static origin) for one
# scenario.
scenario_set() {
    s_path=/api/info s_args=() s_workers=1 s_proxy_cpu=$proxy_cpu s_client_cpu=$client_cpu s_threads=1
    s_tls=0 s_client=wrk s_unit=req s_conns=$conns s_backend=a
    case $1 in
    a) s_label="(a) keep-alive, 100 B" ;;
    b) s_label="(b) a new connection per request" s_args=(-H 'Connection: close') ;;
    c4) s_label="(c) keep-alive, 4 KiB body" s_path=/bytes/4k s_backend=n ;;
    c256) s_label="(c) keep-alive, 256 KiB body" s_path=/bytes/256k s_backend=n ;;
    dk) s_label="(d) HTTPS keep-alive, 100 B" s_tls=1 ;;
    dn) s_label="(d) new TLS connections, full handshakes" s_tls=1 s_client=tls-conns s_unit=conn ;;
    dr) s_label="(d) new TLS connections, resumed sessions" s_tls=1 s_client=tls-conns s_unit=conn s_args=(-r) ;;
    w2) s_label="(a) with 2 workers, unpinned" s_workers=2 s_proxy_cpu=any s_client_cpu=any s_threads=2 ;;
    e) s_label="(e) $clients idle keep-alive clients" ;;
    [kn][an][0-9]*)
        s_conns=${1:2} s_backend=${1:1:1}
        [ "$s_backend" = n ] && s_path=/bytes/100
        local cl="$s_conns clients"
        [ "$s_conns" = 1 ] && cl="1 client"
        if [ "${1:0:1}" = k ]; then
            s_label="(s) $(backend_name "$s_backend"), keep-alive, $cl"
        else
            s_label="(s) $(backend_name "$s_backend"), a new connection per request, $cl"
            s_args=(-H 'Connection: close')
        fi
        ;;
    esac
}

# short_label ID: the scenario's name in the chart and the goals.
short_label() {
    case $1 in
    a) echo "(a) 100 B" ;;
    b) echo "(b) new connections" ;;
    c4) echo "(c) 4 KiB" ;;
    c256) echo "(c) 256 KiB" ;;
    dk) echo "(d) HTTPS 100 B" ;;
    dn) echo "(d) TLS full" ;;
    dr) echo "(d) TLS resumed" ;;
    w2) echo "(w) 2 workers" ;;
    e) echo "(e) idle clients" ;;
    esac
}

# scenario_cmd ID URL: the client's command line of a scenario, for the report; for tls-conns, URL
# is "ADDRESS PORT".
scenario_cmd() {
    scenario_set "$1"
    local pin="taskset -c $s_client_cpu "
    [ "$s_client_cpu" = any ] && pin=""
    if [ "$s_client" = tls-conns ]; then
        printf '%stls-conns %s-c%s -d%s -n app2.com -H app2.com %s %s\n' "$pin" "${s_args[*]/%/ }" \
            "$s_conns" "$seconds" "$2" "$s_path"
        return
    fi
    printf '%swrk -t%s -c%s -d%ss --latency -H '\''%s'\''' "$pin" "$s_threads" "$s_conns" "$seconds" "$host_header"
    [ ${#s_args[@]} -eq 0 ] || printf " -H '%s'" "${s_args[1]}"
    printf ' %s\n' "$2"
}

# check_url URL [SIZE [CURL ARGS...]]: one request; fails the bench unless it is a 200 (of SIZE
# bytes if SIZE is given and not empty).
check_url() {
    local got url=$1 size=${2:-}
    shift $(($# < 2 ? $# : 2))
    got=$(curl -sS -o /dev/null --max-time 5 -H "$host_header" -w '%{http_code} %{size_download}' "$@" "$url") ||
        got="no answer"
    if [ "${got%% *}" != 200 ] || { [ -n "$size" ] && [ "${got#* }" != "$size" ]; }; then
        echo "bench: GET $url (${host_header}) gave \"$got\", expected 200${size:+ with $size bytes}" >&2
        return 1
    fi
}

# check_tls ADDRESS:PORT: one HTTPS request to a proxy's TLS listener as app2.com, the certificate
# checked against the bench's own.
check_tls() {
    check_url "https://app2.com:${1#*:}/api/info" "" --cacert "$tls_dir/cert.pem" --resolve "app2.com:${1#*:}:${1%:*}"
}

# The medians: one line per scenario and target of the results file, "-" where a figure does not
# apply: scenario target rps ×nginx ×haproxy ×limit ×best-peer p50 p99 cpu_us cpu×nginx rss_kb
# errors runs cpu1_busy_pct cpu1_us p99×nginx. Each × is the median over rounds of that round's
# ratio.
stats() {
    awk "$BENCH_AWK_MED"'
    function ratio(s, r, t, u) {
        return ((s, r, u) in rps && rps[s, r, u] > 0) ? " " rps[s, r, t] / rps[s, r, u] : ""
    }
    {
        s = $1; r = $2; t = $3
        if (!(s in seen)) { seen[s] = 1; order[++ns] = s }
        runs[s, t]++; round[s, r] = 1
        rps[s, r, t] = $4; cpu[s, r, t] = $9; p99r[s, r, t] = $6
        rpsl[s, t] = rpsl[s, t] " " $4; p50[s, t] = p50[s, t] " " $5; p99[s, t] = p99[s, t] " " $6
        errs[s, t] += $8
        if ($9 != "-") cpul[s, t] = cpul[s, t] " " $9
        if ($10 != "-") rssl[s, t] = rssl[s, t] " " $10
        if ($11 != "-" && $11 != "") { cbl[s, t] = cbl[s, t] " " $11; cul[s, t] = cul[s, t] " " $12 }
    }
    END {
        for (i = 1; i <= ns; i++) {
            s = order[i]
            nt = split("portier nginx haproxy limit remote", tl, " ")
            for (k = 1; k <= nt; k++) {
                t = tl[k]; xng = xha = xli = xbest = xcpu = xp99 = ""
                if (!((s, t) in runs)) continue
                for (key in round) {
                    split(key, kk, SUBSEP)
                    if (kk[1] != s || !((s, kk[2], t) in rps)) continue
                    r = kk[2]
                    xng = xng ratio(s, r, t, "nginx"); xha = xha ratio(s, r, t, "haproxy")
                    xli = xli ratio(s, r, t, "limit")
                    if ((s, r, "nginx") in rps && (s, r, "haproxy") in rps)
                        xbest = xbest ratio(s, r, t, rps[s, r, "nginx"] > rps[s, r, "haproxy"] ? "nginx" : "haproxy")
                    if (cpu[s, r, t] != "-" && (s, r, "nginx") in cpu && cpu[s, r, "nginx"] > 0)
                        xcpu = xcpu " " cpu[s, r, t] / cpu[s, r, "nginx"]
                    if ((s, r, "nginx") in p99r && p99r[s, r, "nginx"] > 0)
                        xp99 = xp99 " " p99r[s, r, t] / p99r[s, r, "nginx"]
                }
                print s, t, med(rpsl[s, t]), med(xng), med(xha), med(xli), med(xbest), med(p50[s, t]),
                      med(p99[s, t]), med(cpul[s, t]), med(xcpu), med(rssl[s, t]), errs[s, t], runs[s, t],
                      med(cbl[s, t]), med(cul[s, t]), med(xp99)
            }
        }
    }' "$results"
}

# table ID: the markdown table of one scenario from $stats_out.
table() {
    if [ -n "$target" ]; then
        echo "| target | req/s | p50 ms | p99 ms | errors |"
        echo "| --- | ---: | ---: | ---: | ---: |"
        awk -v s="$1" -v url="$target" '$1 == s { printf "| %s | %.0f | %.2f | %.2f | %d |\n", url, $3, $8, $9, $13 }' \
            <<<"$stats_out"
        return
    fi
    # A row of the new-TLS-connection scenarios counts connections (each carries one request).
    scenario_set "$1"
    local u=$s_unit
    echo "| target | $u/s | × nginx | × HAProxy | × limit | p50 ms | p99 ms | CPU µs/$u | RSS MiB | errors | client CPU busy | client CPU µs/$u |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    awk -v s="$1" '
    function f(v, fmt) { return v == "-" ? "-" : sprintf(fmt, v) }
    $1 == s {
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |\n", ($2 == "limit" ? "limit (no proxy)" : $2),
               f($3, "%.0f"), f($4, "%.3f"), f($5, "%.3f"), f($6, "%.3f"), f($8, "%.2f"), f($9, "%.2f"),
               f($10, "%.2f"), f(($12 == "-" ? "-" : $12 / 1024), "%.1f"), $13, f($15, "%.0f%%"), f($16, "%.2f")
    }' <<<"$stats_out"
}

# tls_table ID: what tls-conns saw of the handshakes of a (d) scenario, by target, over all rounds.
tls_table() {
    echo "| target | negotiated | connections | resumed | session tickets per connection |"
    echo "| --- | --- | ---: | ---: | ---: |"
    awk -v s="$1" '
    $1 == s { if (!($3 in n)) order[++k] = $3; n[$3] += $4; r[$3] += $5; tk[$3] += $6
              if (!($3 in neg)) neg[$3] = $7 " " $8 " " $9
              else if (neg[$3] != $7 " " $8 " " $9) neg[$3] = neg[$3] " (not in every round)" }
    END { for (i = 1; i <= k; i++) { t = order[i]
              printf "| %s | %s | %d | %.1f%% | %.2f |\n", t, neg[t], n[t], n[t] ? 100 * r[t] / n[t] : 0,
                     n[t] ? tk[t] / n[t] : 0 } }' "$tls_results"
}

# idle_table: the markdown table of scenario (e), medians over rounds.
idle_table() {
    echo "| proxy | clients answered (worst round) | failed | closed by the proxy | RSS fresh MiB | RSS with the clients MiB | KiB per connection |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    local t
    for t in "${proxies[@]}"; do
        awk -v t="$t" -v want="$clients" "$BENCH_AWK_MED"'
        $3 == t { n++; fresh = fresh " " $4; loaded = loaded " " $5
                  if (n == 1 || $6 < ok) ok = $6; if ($7 > failed) failed = $7; if ($8 > closed) closed = $8 }
        END { if (n) printf "| %s | %d of %d | %d | %d | %.1f | %.1f | %.2f |\n", t, ok, want, failed, closed,
                         med(fresh) / 1024, med(loaded) / 1024, ok ? (med(loaded) - med(fresh)) / ok : 0 }' \
            "$idle_results"
    done
}

# sweep_table BACKEND: the load sweep behind one backend, a row per point, from $stats_out.
sweep_table() {
    local b=$1 kind n id
    echo "| load | clients | portier req/s | nginx | HAProxy | limit | portier × nginx | portier × HAProxy | p99 ms: portier, nginx, HAProxy, limit | CPU µs/req: portier, nginx, HAProxy | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for kind in k n; do
        for n in $([ "$kind" = k ] && echo "${sweep_k[@]}" || echo "${sweep_n[@]}"); do
            id=$(sweep_id "$b" "$kind" "$n")
            awk -v s="$id" -v n="$n" -v load="$([ "$kind" = k ] && echo keep-alive || echo "new connection")$([ "$id" = a ] && echo " (a)")$([ "$id" = b ] && echo " (b)")" '
            function f(v, fmt) { return (v == "" || v == "-") ? "-" : sprintf(fmt, v) }
            $1 == s { rps[$2] = $3; xn[$2] = $4; xh[$2] = $5; p99[$2] = $9; cpu[$2] = $10; err += $13; seen = 1 }
            END {
                if (!seen) exit
                printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s, %s, %s, %s | %s, %s, %s | %d |\n", load, n,
                       f(rps["portier"], "%.0f"), f(rps["nginx"], "%.0f"), f(rps["haproxy"], "%.0f"), f(rps["limit"], "%.0f"),
                       f(xn["portier"], "**%.3f**"), f(xh["portier"], "**%.3f**"), f(p99["portier"], "%.2f"), f(p99["nginx"], "%.2f"),
                       f(p99["haproxy"], "%.2f"), f(p99["limit"], "%.2f"), f(cpu["portier"], "%.1f"), f(cpu["nginx"], "%.1f"),
                       f(cpu["haproxy"], "%.1f"), err }' <<<"$stats_out"
        done
    done
}

# ol_stats: the open loop's medians, one line per backend, rate and target: id pct target rate
# achieved p50 p99 p999 max errors cpu_us, then portier's (or the target's) p50, p99, p99.9 over
# nginx's and over HAProxy's (medians of the per-round ratios), the runs, and the client CPU's busy
# share and time per request.
ol_stats() {
    awk "$BENCH_AWK_MED"'
    function ratios(k, t, u,   key, kk, r, a, b, c) {
        a = b = c = ""
        for (key in rnd) {
            split(key, kk, SUBSEP)
            if (kk[1] SUBSEP kk[2] != k) continue
            r = kk[3]
            if (!((k, r, t) in v50) || !((k, r, u) in v50)) continue
            if (v50[k, r, u] > 0) a = a " " v50[k, r, t] / v50[k, r, u]
            if (v99[k, r, u] > 0) b = b " " v99[k, r, t] / v99[k, r, u]
            if (v999[k, r, u] > 0) c = c " " v999[k, r, t] / v999[k, r, u]
        }
        return med(a) " " med(b) " " med(c)
    }
    {
        k = $1 SUBSEP $3; t = $6
        if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
        rnd[$1, $3, $2] = 1; runs[k, t]++
        rate[k, t] = rate[k, t] " " $7; ach[k, t] = ach[k, t] " " $8
        p50[k, t] = p50[k, t] " " $9; p99[k, t] = p99[k, t] " " $10; p999[k, t] = p999[k, t] " " $11
        mx[k, t] = mx[k, t] " " $12; errs[k, t] += $14
        if ($15 != "-") cpu[k, t] = cpu[k, t] " " $15
        c1b[k, t] = c1b[k, t] " " $16; c1u[k, t] = c1u[k, t] " " $17
        v50[k, $2, t] = $9; v99[k, $2, t] = $10; v999[k, $2, t] = $11
    }
    END {
        nt = split("portier nginx haproxy limit", tl, " ")
        for (i = 1; i <= nk; i++) {
            k = order[i]; split(k, kk, SUBSEP)
            for (j = 1; j <= nt; j++) {
                t = tl[j]
                if (!((k, t) in runs)) continue
                print kk[1], kk[2], t, med(rate[k, t]), med(ach[k, t]), med(p50[k, t]), med(p99[k, t]),
                      med(p999[k, t]), med(mx[k, t]), errs[k, t], med(cpu[k, t]), ratios(k, t, "nginx"),
                      ratios(k, t, "haproxy"), runs[k, t], med(c1b[k, t]), med(c1u[k, t])
            }
        }
    }' "$ol_results"
}

# ol_base ID: which of nginx's rows set the open loop's rates behind a backend, round by round.
ol_base() {
    awk -v o="$1" '
    $1 == o && !(($2) in seen) { seen[$2] = 1; printf "%sround %d: %d clients, %.0f req/s", (n++ ? "; " : ""), $2, $4, $5 }
    END { print "" }' "$ol_results"
}

# ol_table ID: the open loop behind one backend, a row per rate and target, from $ol_stats_out.
ol_table() {
    echo "| rate | target | sent req/s | answered req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | CPU µs/req | p50, p99, p99.9 × nginx | p50, p99, p99.9 × HAProxy | client CPU busy | client CPU µs/req |"
    echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    awk -v o="$1" '
    function f(v, fmt) { return (v == "" || v == "-") ? "-" : sprintf(fmt, v) }
    function x3(a, b, c, self) { return self ? "-" : f(a, "%.2f") ", " f(b, "%.2f") ", " f(c, "%.2f") }
    $1 == o {
        printf "| %s%% | %s | %.0f | %.0f | %.3f | %.3f | %.3f | %.2f | %d | %s | %s | %s | %s | %s |\n", $2,
               ($3 == "limit" ? "limit (no proxy)" : $3), $4, $5, $6, $7, $8, $9, $10, f($11, "%.2f"),
               x3($12, $13, $14, $3 == "nginx"), x3($15, $16, $17, $3 == "haproxy"), f($19, "%.0f%%"), f($20, "%.1f")
    }' <<<"$ol_stats_out"
}

# goals: how portier stands against the goals of issue 4 (issue 11's for the (d) rows, issue 15's
# for the sweep and the open loop), from $stats_out, $ol_stats_out and the idle results.
goals() {
    local idle_rss labels s
    idle_rss=$(awk '{ n[$3]++; v[$3] = v[$3] " " $5 } END { for (t in v) print t, v[t] }' "$idle_results")
    labels=$(for s in a b c4 c256 w2; do printf '%s=%s;' "$s" "$(short_label "$s")"; done)
    awk -v idle="$idle_rss" -v labels="$labels" "$BENCH_AWK_MED"'
    # strict: v must exceed want ("ahead of"), not only reach it.
    function row(goal, v, want, fmt, strict) {
        if (v == "-" || v == "") return
        printf "| %s | %s | %s |\n", goal, sprintf(fmt, v),
               (v + 0 > want || (!strict && v + 0 == want) ? "met" : "**not met**")
    }
    BEGIN { n = split(labels, l, ";"); for (i = 1; i <= n; i++) { split(l[i], kv, "="); label[kv[1]] = kv[2] } }
    { for (i = 3; i <= NF; i++) st[$1, $2, i] = $i; if ($2 == "portier") sc[++ns] = $1 }
    END {
        print "| goal (issue 4; issue 11 for (d); issue 15 for (s) and the open loop) | measured | |"
        print "| --- | ---: | --- |"
        if (("a", "portier", 3) in st) {
            row("(a) req/s ≥ 0.95 × the limit", st["a", "portier", 6], 0.95, "%.3f ×")
            row("(a) req/s ≥ 1.1 × nginx", st["a", "portier", 4], 1.1, "%.3f ×")
            row("(a) req/s ≥ 1.1 × HAProxy", st["a", "portier", 5], 1.1, "%.3f ×")
            if (st["a", "portier", 11] != "-")
                row("(a) CPU per request ≤ 0.75 × nginx", 0.75 / st["a", "portier", 11], 1,
                    sprintf("%.3f × nginx", st["a", "portier", 11]) "%.0s")
        }
        if (("b", "portier", 3) in st) {
            row("(b) req/s ≥ 1.1 × nginx", st["b", "portier", 4], 1.1, "%.3f ×")
            row("(b) req/s ≥ 1.1 × HAProxy", st["b", "portier", 5], 1.1, "%.3f ×")
        }
        if (("c4", "portier", 3) in st)
            row("(c) 4 KiB req/s ≥ 1.0 × the better of nginx and HAProxy", st["c4", "portier", 7], 1, "%.3f ×")
        if (("c256", "portier", 3) in st)
            row("(c) 256 KiB req/s ≥ 1.0 × the better of nginx and HAProxy", st["c256", "portier", 7], 1, "%.3f ×")
        if (("dk", "portier", 3) in st) {
            row("(d) HTTPS keep-alive req/s ≥ 1.1 × nginx", st["dk", "portier", 4], 1.1, "%.3f ×")
            row("(d) HTTPS keep-alive req/s ≥ 1.1 × HAProxy", st["dk", "portier", 5], 1.1, "%.3f ×")
        }
        if (("dn", "portier", 3) in st) {
            row("(d) new TLS connections, full handshakes: conn/s ahead of nginx", st["dn", "portier", 4], 1, "%.3f ×", 1)
            row("(d) new TLS connections, full handshakes: conn/s ahead of HAProxy", st["dn", "portier", 5], 1, "%.3f ×", 1)
        }
        if (("dr", "portier", 3) in st) {
            row("(d) new TLS connections, resumed: conn/s ahead of nginx", st["dr", "portier", 4], 1, "%.3f ×", 1)
            row("(d) new TLS connections, resumed: conn/s ahead of HAProxy", st["dr", "portier", 5], 1, "%.3f ×", 1)
        }
        for (i = 1; i <= ns; i++) {
            s = sc[i]
            # The p99 and RSS goals are those of issue 4, for its scenarios.
            if (!(s in label) || !((s, "nginx", 3) in st)) continue
            # Like req/s, p99 is compared round by round: the median of the per-round p99 ratios.
            x = st[s, "portier", 17]; p = st[s, "portier", 9]; q = st[s, "nginx", 9]
            if (x != "-" && x > 0)
                row(label[s] ": p99 ≤ nginx (median " sprintf("%.2f", q) " ms)", 1 / x, 1,
                    sprintf("%.2f ms, %.3f × nginx", p, x) "%.0s")
            p = st[s, "portier", 12]; q = st[s, "nginx", 12]
            if (p > 0) row(label[s] ": RSS ≤ nginx worker (" sprintf("%.1f", q / 1024) " MiB)", q / p, 1,
                           sprintf("%.1f MiB", p / 1024) "%.0s")
        }
        n = split(idle, il, " "); t = ""
        for (i = 1; i <= n; i++) {
            if (il[i] ~ /^[a-z]/) { t = il[i]; continue }
            ilist[t] = ilist[t] " " il[i]
        }
        if (("portier" in ilist) && ("nginx" in ilist)) {
            p = med(ilist["portier"]); q = med(ilist["nginx"])
            row("(e) RSS with the idle clients ≤ nginx (" sprintf("%.1f", q / 1024) " MiB)", q / p, 1,
                sprintf("%.1f MiB", p / 1024) "%.0s")
        }
        if (("w2", "portier", 3) in st)
            row("2 workers, unpinned: req/s ≥ 1.0 × nginx", st["w2", "portier", 4], 1, "%.3f ×")
    }' <<<"$stats_out"
    sweep_goals
    ol_goals
}

# point_label ID: a sweep point's name, the same for (a) and (b) as for the others.
point_label() {
    case $1 in
    a) echo "(s) app2 pods, keep-alive, 64 clients = (a)" ;;
    b) echo "(s) app2 pods, a new connection per request, 64 clients = (b)" ;;
    *) scenario_set "$1"; echo "$s_label" ;;
    esac
}

# sweep_goals: issue 15's rows of the goals table for the sweep: at every load, behind either
# backend, req/s at least nginx's and at least HAProxy's (both ratios medians of per-round ratios).
sweep_goals() {
    local b id
    for b in "${sweep_backends[@]}"; do
        for id in "${sweep_all[@]}"; do
            scenario_set "$id"
            [ "$s_backend" = "$b" ] || continue
            awk -v s="$id" -v label="$(point_label "$id")" '
            $1 == s && $2 == "portier" && $4 != "-" && $5 != "-" {
                printf "| %s: req/s ≥ 1.0 × nginx and ≥ 1.0 × HAProxy | %.3f × nginx, %.3f × HAProxy | %s |\n",
                       label, $4, $5, ($4 >= 1 && $5 >= 1 ? "met" : "**not met**") }' <<<"$stats_out"
        done
    done
}

# ol_goals: issue 15's rows of the goals table for the open loop: at each rate, behind either
# backend, portier's p50, p99 and p99.9 at most nginx's (medians of per-round ratios).
ol_goals() {
    awk -v names="a=$(backend_name a);n=$(backend_name n)" '
    BEGIN { n = split(names, l, ";"); for (i = 1; i <= n; i++) { split(l[i], kv, "="); name[kv[1]] = kv[2] } }
    $3 == "portier" && $12 != "-" && $13 != "-" && $14 != "-" {
        printf "| open loop, %s, %s%% of nginx'"'"'s rate (%.0f req/s): p50, p99, p99.9 ≤ nginx | %.3f, %.3f, %.3f × nginx | %s |\n",
               name[substr($1, 2)], $2, $4, $12, $13, $14, ($12 <= 1 && $13 <= 1 && $14 <= 1 ? "met" : "**not met**") }' \
        <<<"$ol_stats_out"
}

# skipped: the scenarios this run does not measure, and why.
skipped() {
    if [ -n "$target" ]; then
        echo "- (d) HTTPS: skipped: it needs the bench's own certificate in the proxy, which only local runs start"
        echo "- (c) 4 KiB and 256 KiB bodies: skipped: they need the static origin, which only local runs start"
        echo "- (e) idle clients, and CPU and RSS everywhere: skipped: they need the proxy's /proc"
        echo "- 2 workers, unpinned: skipped: the remote proxy's workers are its own business"
        echo "- the load sweep (but (a) and (b)) and the open loop: skipped: they need the pods' addresses and the origin, which only local runs have"
    fi
}

# ---- client side only, against a proxy elsewhere ----------------------------------------------
if [ -n "$target" ]; then
    [[ $target =~ ^http://[A-Za-z0-9.:-]+/?$ || $target =~ ^http://\[[0-9a-fA-F:]+\](:[0-9]+)?/?$ ]] ||
        { echo "bench: --target wants http://HOST[:PORT], not $target" >&2; exit 2; }
    target=${target%/}
    bench_need wrk:wrk curl:curl
    check_url "$target/api/info"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    for round in $(seq "$rounds"); do
        for s in "${ids[@]}"; do
            case $s in a | b) ;; *) continue ;; esac
            scenario_set "$s"
            line=$(bench_wrk any "$seconds" "$s_conns" "$target$s_path" -H "$host_header" "${s_args[@]}")
            echo "$s $round remote $line - -" >>"$results"
        done
        echo "round $round/$rounds done" >&2
    done
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    stats_out=$(stats)
    for s in a b; do
        grep -q "^$s " "$results" || continue
        scenario_set "$s"
        echo
        echo "### $s_label: \`$(scenario_cmd "$s" "$target$s_path" | sed 's/^taskset -c [^ ]* //')\`"
        echo
        table "$s"
    done
    echo
    skipped
    echo
    echo "load average $load_before before, $load_after after; client: $(nproc) CPUs," \
        "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
    exit 0
fi

# ---- local: start the apps, the origin and each proxy in turn ---------------------------------
need=(wrk:wrk nginx:nginx-light haproxy:haproxy taskset:util-linux curl:curl)
[ "$report" = 1 ] && need+=(gnuplot:gnuplot-nox)
[[ " ${ids[*]} " == *" e "* ]] && need+=(python3:python3)
tls=0
[[ " ${ids[*]} " =~ \ d[knr]\  ]] && tls=1 && need+=(openssl:openssl cc:gcc pkg-config:pkg-config)
# The open loop's client is built with libevent's headers, which portier's build needs anyway.
[ ${#ol_ids[@]} -eq 0 ] || need+=(cc:gcc pkg-config:pkg-config)
bench_need "${need[@]}"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
if [ ! -x "$build/app2" ] || [ ! -x "$build/portier" ]; then
    make --no-print-directory BUILD="$build" all >/dev/null
fi

# ---- a network namespace of its own -----------------------------------------------------------
# Every connection of the bench is on loopback. In a namespace of its own the bench sets TCP's
# congestion control for them (cubic: bench/README.md says why) and leaves the machine's setting
# untouched, and no other program's sockets share its loopback. The script runs itself again in
# the namespace: as root under `unshare -n`; otherwise under `unshare -rn` (a user namespace too),
# where it sets the network up as that namespace's root, then goes back to the user's own uid in a
# nested user namespace: nginx, believing itself root, would switch its workers to nobody, whom
# that namespace does not know. PORTIER_BENCH_NET tells each instance its stage: "setup" (or
# "setup:UID:GID" in a user namespace), then "done", with PORTIER_BENCH_NOTE what the report says.
netns_setup() { # in the new namespace, as its root: loopback up, then cubic; sets cc_how.
    local allowed
    ip link set lo up || return 1
    if { printf cubic >/proc/sys/net/ipv4/tcp_congestion_control; } 2>/dev/null; then
        cc_how="cubic, by net.ipv4.tcp_congestion_control=cubic in the namespace"
        return 0
    fi
    # A namespace other than the machine's may default only to an algorithm the machine allows
    # (net.ipv4.tcp_allowed_congestion_control); a route's congctl may name any that is loaded. Both
    # loopback routes: a reply to 127.0.0.1 takes the /32 one.
    allowed=$(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control 2>/dev/null || echo unknown)
    if ip route replace local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1 congctl cubic &&
        ip route replace local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 congctl cubic; then
        cc_how="cubic, by \`congctl cubic\` on the namespace's loopback routes (a namespace may default only to an algorithm of the machine's net.ipv4.tcp_allowed_congestion_control, here: $allowed)"
    else
        cc_how="$(cat /proc/sys/net/ipv4/tcp_congestion_control), the namespace's default: **cubic could not be set**"
    fi
}
net_note="" cc_how=""
case ${PORTIER_BENCH_NET:-} in
"")
    host_cc=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
    why="--no-netns"
    if [ "$netns" = 1 ]; then
        if ! bench_need ip:iproute2; then
            why="no \`ip\` command (iproute2) to bring its loopback up"
        elif [ "$(id -u)" = 0 ]; then
            if why=$(unshare -n true 2>&1); then
                bench_cleanup
                exec unshare -n -- env PORTIER_BENCH_NET=setup PORTIER_BENCH_HOST_CC="$host_cc" "$PWD/bench/run.sh" "${args[@]}"
            fi
            why="\`unshare -n\` failed: ${why:-?}"
        elif why=$(unshare -rn unshare -U --map-user="$(id -u)" --map-group="$(id -g)" true 2>&1); then
            bench_cleanup
            exec unshare -rn -- env PORTIER_BENCH_NET="setup:$(id -u):$(id -g)" PORTIER_BENCH_HOST_CC="$host_cc" \
                "$PWD/bench/run.sh" "${args[@]}"
        else
            why="not root, and user namespaces fail (\`unshare -rn\`: ${why:-?})"
        fi
        echo "bench: warning: the bench runs in the machine's own network namespace: $why" >&2
    fi
    net_note="**the machine's own network namespace** ($why); TCP congestion control $host_cc, the machine's"
    ;;
setup*)
    if ! netns_setup; then
        echo "bench: could not bring loopback up in the bench's network namespace" >&2
        exit 1
    fi
    how_ns="\`unshare -n\`"
    [ "$PORTIER_BENCH_NET" = setup ] || how_ns="\`unshare -rn\`, in a user namespace"
    net_note="its own network namespace ($how_ns), loopback up; TCP congestion control $cc_how; the machine's own (${PORTIER_BENCH_HOST_CC:-?}) untouched"
    if [ "$PORTIER_BENCH_NET" != setup ]; then
        user=${PORTIER_BENCH_NET#setup:}
        bench_cleanup
        exec unshare -U --map-user="${user%:*}" --map-group="${user#*:}" -- env PORTIER_BENCH_NET=done \
            PORTIER_BENCH_NOTE="$net_note" "$PWD/bench/run.sh" "${args[@]}"
    fi
    ;;
done) net_note=${PORTIER_BENCH_NOTE:-} ;;
esac

# 10,000 idle clients need as many descriptors in the proxy and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$clients" -gt $((nofile - 2000)) ]; then
    echo "bench: ulimit -n is $nofile: $((nofile - 2000)) idle clients instead of $clients" >&2
    clients=$((nofile - 2000))
fi
[ "$nofile" = unlimited ] && nofile=1048576
maxconn=$((clients + 1000))
clk_tck=$(getconf CLK_TCK)
# nginx's workers may run as nobody: they must reach the origin's files and the temp directories.
chmod 755 "$BENCH_TMP"

for addr in "${proxy_addr[@]}" "${proxy_tls_addr[@]}" 127.0.0.2{2,3,4}:$app_port 127.0.0.2{2,3,4}:$origin_port; do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
        echo "bench: something already listens on $addr (another bench running?)" >&2
        exit 1
    fi
done

# render TEMPLATE OUT NAME WORKERS [tls]: fills in a config of bench/peers/. Lines starting "#tls "
# belong to the HTTPS variant only, lines ending "# not tls" to the plain one only.
render() {
    local variant=(-e '/^#tls\( \|$\)/d' -e 's/ # not tls$//')
    [ "${5:-}" = tls ] && variant=(-e '/# not tls$/d' -e 's/^#tls\( \|$\)//')
    sed "${variant[@]}" -e "s|@TMP@|$BENCH_TMP|g" -e "s|@LISTEN@|${proxy_addr[$3]:-}|g" \
        -e "s|@TLS_LISTEN@|${proxy_tls_addr[$3]:-}|g" -e "s|@WORKERS@|$4|g" \
        -e "s|@APP_PORT@|$app_port|g" -e "s|@ORIGIN_PORT@|$origin_port|g" \
        -e "s|@NOFILE@|$nofile|g" -e "s|@MAXCONN@|$maxconn|g" "$1" >"$2"
}
for w in 1 2; do
    render bench/peers/portier.yaml "$BENCH_TMP/portier-w$w.conf" portier "$w"
    render bench/peers/nginx.conf "$BENCH_TMP/nginx-w$w.conf" nginx "$w"
    render bench/peers/haproxy.cfg "$BENCH_TMP/haproxy-w$w.conf" haproxy "$w"
done
render bench/peers/nginx-origin.conf "$BENCH_TMP/origin.conf" origin 1
if [ "$tls" = 1 ]; then
    # The one certificate of every proxy: ECDSA P-256, self-signed, for app2.com, made for this run.
    mkdir -p "$tls_dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=app2.com \
        -addext subjectAltName=DNS:app2.com -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>"$tls_dir/openssl.log" ||
        { cat "$tls_dir/openssl.log" >&2; exit 1; }
    cat "$tls_dir/cert.pem" "$tls_dir/key.pem" >"$tls_dir/haproxy.pem" # HAProxy takes both in one file
    render bench/peers/portier.yaml "$BENCH_TMP/portier-w1-tls.conf" portier 1 tls
    render bench/peers/nginx.conf "$BENCH_TMP/nginx-w1-tls.conf" nginx 1 tls
    render bench/peers/haproxy.cfg "$BENCH_TMP/haproxy-w1-tls.conf" haproxy 1 tls
    # The client of the new-connection rows, built with the project's warnings.
    # shellcheck disable=SC2046 # pkg-config's flags, one a word
    if ! cc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wshadow \
        -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough -fno-common -O2 \
        -o "$BENCH_TMP/tls-conns" bench/tls-conns.c $(pkg-config --cflags --libs openssl) 2>"$BENCH_TMP/cc.log"; then
        cat "$BENCH_TMP/cc.log" >&2
        echo "bench: could not build bench/tls-conns.c (OpenSSL's headers: libssl-dev, which scripts/deps.sh --build installs)" >&2
        exit 1
    fi
fi
if [ ${#ol_ids[@]} -gt 0 ]; then
    # The open loop's client, built like tls-conns.
    # shellcheck disable=SC2046 # pkg-config's flags, one a word
    if ! cc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wshadow \
        -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough -fno-common -O2 \
        -o "$BENCH_TMP/openloop" bench/openloop.c $(pkg-config --cflags --libs libevent) 2>"$BENCH_TMP/cc.log"; then
        cat "$BENCH_TMP/cc.log" >&2
        echo "bench: could not build bench/openloop.c (libevent's headers: libevent-dev, which scripts/deps.sh --build installs)" >&2
        exit 1
    fi
fi
for c in "$BENCH_TMP"/portier-w1{,-tls}.conf; do
    [ -f "$c" ] || continue
    if ! check=$("$build/portier" -t -c "$c" 2>&1); then
        echo "$check" >&2
        exit 1
    fi
done
"$haproxy_bin" -c -q -f "$BENCH_TMP/haproxy-w1.conf"
[ "$tls" = 0 ] || "$haproxy_bin" -c -q -f "$BENCH_TMP/haproxy-w1-tls.conf"

for i in 0 1 2; do
    ip=127.0.0.2$((i + 2))
    bench_start "$client_cpu" "$BENCH_TMP/app2-$i.log" env LISTEN="$ip:$app_port" POD_NAME="app2-bench-$i" \
        POD_IP="$ip" "$build/app2"
    bench_wait_port "$ip" "$app_port"
done
# The origin serves (c) and stands for the nginx pods (the sweep's kn and nn points, the open loop's on).
origin=0
for s in "${ids[@]}"; do
    scenario_set "$s"
    [ "$s_backend" = n ] && origin=1
done
[[ " ${ol_ids[*]} " == *" on "* ]] && origin=1
if [ "$origin" = 1 ]; then
    mkdir -p "$BENCH_TMP/www/bytes"
    for size in 100:100 4k:4096 256k:262144; do
        head -c "${size#*:}" /dev/zero | tr '\0' x >"$BENCH_TMP/www/bytes/${size%:*}"
    done
    chmod -R a+rX "$BENCH_TMP/www"
    bench_start "$client_cpu" "$BENCH_TMP/origin.log" "$nginx_bin" -e "$BENCH_TMP/nginx-origin-error.log" \
        -c "$BENCH_TMP/origin.conf"
    bench_wait_port 127.0.0.22 "$origin_port"
    check_url "http://127.0.0.24:$origin_port/bytes/256k" 262144
    check_url "http://127.0.0.23:$origin_port/bytes/100" 100
fi
check_url "http://127.0.0.22:$app_port/api/info"
info_bytes=$(curl -s -H "$host_header" "http://127.0.0.22:$app_port/api/info" | wc -c)

# limit_url ID: where wrk goes without a proxy: the first replica.
limit_url() {
    scenario_set "$1"
    case $s_backend in
    n) echo "http://127.0.0.22:$origin_port$s_path" ;;
    *) echo "http://127.0.0.22:$app_port$s_path" ;;
    esac
}

# proxy_start NAME WORKERS CPU [tls]: starts one proxy (with the HTTPS listener of its TLS config
# when "tls" is given) and waits until it listens; sets proxy_pid.
proxy_start() {
    local name=$1 conf="$BENCH_TMP/$1-w$2${4:+-$4}.conf" log="$BENCH_TMP/$1.log" addr
    case $name in
    portier) bench_start "$3" "$log" "$build/portier" -c "$conf" ;;
    nginx) bench_start "$3" "$log" "$nginx_bin" -e "$BENCH_TMP/nginx-proxy-error.log" -c "$conf" ;;
    haproxy) bench_start "$3" "$log" "$haproxy_bin" -db -f "$conf" ;;
    esac
    proxy_pid=$BENCH_LAST_PID
    for addr in "${proxy_addr[$1]}" ${4:+"${proxy_tls_addr[$1]}"}; do
        if ! bench_wait_port "${addr%:*}" "${addr#*:}"; then
            echo "bench: $name did not start; it wrote:" >&2
            cat "$log" >&2
            exit 1
        fi
    done
}

# proxy_stop NAME PID: stops it and keeps what it wrote, for the report.
proxy_stop() {
    bench_stop "$2"
    cat "$BENCH_TMP/$1.log" >>"$BENCH_TMP/$1.all.log"
}

# proxy_rss NAME PID: the RSS in KiB of the processes that serve: nginx's workers, not its master.
proxy_rss() {
    if [ "$1" = nginx ]; then
        # shellcheck disable=SC2046 # one PID a word
        bench_rss_kb $(bench_tree "$2" | tail -n +2)
    else
        bench_rss_kb "$2"
    fi
}

# client_run SECONDS URL [RECORD]: one run of the scenario's client (after scenario_set) on its
# CPU; prints "req/s p50_ms p99_ms requests errors". For tls-conns, URL is https://IP:PORT/PATH,
# and RECORD ("ID ROUND TARGET") appends what it saw of the handshakes to $tls_results:
# "id round target connections resumed tickets version cipher group".
client_run() {
    local secs=$1 url=$2 hostport out
    if [ "$s_client" = wrk ]; then
        WRK_THREADS=$s_threads bench_wrk "$s_client_cpu" "$secs" "$s_conns" "$url" -H "$host_header" "${s_args[@]}"
        return
    fi
    hostport=${url#https://}
    hostport=${hostport%%/*}
    out=$(bench_pin "$s_client_cpu" timeout $((secs + 30)) "$BENCH_TMP/tls-conns" "${s_args[@]}" -c "$s_conns" \
        -d "$secs" -n app2.com -H app2.com "${hostport%:*}" "${hostport#*:}" "$s_path" 2>>"$BENCH_TMP/tls-conns.log") ||
        true
    [ -n "$out" ] || out="0 0 0 0 1 0 0 - - -"
    [ -z "${3:-}" ] || echo "$3 $(cut -d' ' -f4,6- <<<"$out")" >>"$tls_results"
    cut -d' ' -f1-5 <<<"$out"
}

# cc_sample_start CPU, cc_sample_stop: once in the whole bench, half a second into a client's run,
# what TCP congestion control its connections use (\`ss -ti\`), for the report.
cc_sample_pid=""
cc_sample_start() {
    [ ! -e "$BENCH_TMP/ss.txt" ] || return 0
    bench_start "$1" "$BENCH_TMP/ss.txt" sh -c 'sleep 0.5; exec ss -tinH state established'
    cc_sample_pid=$BENCH_LAST_PID
}
cc_sample_stop() {
    [ -n "$cc_sample_pid" ] || return 0
    bench_stop "$cc_sample_pid"
    cc_sample_pid=""
}
# cc_seen: the congestion control of the connections sampled, by algorithm.
cc_seen() {
    [ -s "$BENCH_TMP/ss.txt" ] || { echo "no connection sampled"; return 0; }
    # In each socket's second line the algorithm is the last word before the first "name:value".
    awk '/^[ \t]/ { w = ""; for (i = 1; i <= NF && $i !~ /:/; i++) w = $i; if (w != "") { n[w]++; total++ } }
         END { for (a in n) printf "%s%s on %d", (k++ ? ", " : ""), a, n[a]; printf " of the %d connections sampled\n", total }' \
        "$BENCH_TMP/ss.txt"
}

# client_cpu BEFORE AFTER REQUESTS: "busy_pct us_per_request" of the client CPU, from two of
# bench_cpu_stat's "busy idle" readings around a run that served REQUESTS.
client_cpu() {
    awk -v a="$1" -v b="$2" -v hz="$clk_tck" -v n="$3" 'BEGIN {
        split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%.0f %.3f", (busy + idle > 0 ? 100 * busy / (busy + idle) : 0), (n > 0 ? busy * 1e6 / hz / n : 0) }'
}

# measure ID ROUND TARGET: one wrk (or tls-conns) run of a scenario against a fresh proxy (or straight at the
# backend for the limit); appends "id round target rps p50 p99 requests errors cpu_us rss_kb
# cpu1_busy_pct cpu1_us"; the last two are "-" for unpinned runs.
measure() {
    local s=$1 round=$2 t=$3 url line pid="" t0=0 t1 cpu_us=- rss=- c0 c1 client="- -"
    scenario_set "$s"
    if [ "$t" = limit ]; then
        url=$(limit_url "$s")
    else
        if [ "$s_tls" = 1 ]; then
            proxy_start "$t" "$s_workers" "$s_proxy_cpu" tls
            url="https://${proxy_tls_addr[$t]}$s_path"
            check_tls "${proxy_tls_addr[$t]}"
        else
            proxy_start "$t" "$s_workers" "$s_proxy_cpu"
            url="http://${proxy_addr[$t]}$s_path"
            case $s_path in
            /bytes/4k) check_url "$url" 4096 ;;
            /bytes/256k) check_url "$url" 262144 ;;
            /bytes/100) check_url "$url" 100 ;;
            *) check_url "$url" ;;
            esac
        fi
        pid=$proxy_pid
        if [ "$warmup" -gt 0 ]; then
            cc_sample_start "$s_client_cpu"
            client_run "$warmup" "$url" >/dev/null
            cc_sample_stop
        fi
        t0=$(bench_cpu_ticks "$pid")
    fi
    cc_sample_start "$s_client_cpu"
    c0=$(bench_cpu_stat "$s_client_cpu")
    line=$(client_run "$seconds" "$url" "$s $round $t")
    c1=$(bench_cpu_stat "$s_client_cpu")
    cc_sample_stop
    # The client CPU (wrk or tls-conns, and the servers behind the proxy): how busy, and its time per request.
    # Unpinned runs share every CPU with the proxy: no such figure.
    if [ "$s_client_cpu" != any ]; then
        client=$(client_cpu "$c0" "$c1" "$(cut -d' ' -f4 <<<"$line")")
    fi
    if [ -n "$pid" ]; then
        t1=$(bench_cpu_ticks "$pid")
        rss=$(proxy_rss "$t" "$pid")
        proxy_stop "$t" "$pid"
        cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$clk_tck" -v n="$(cut -d' ' -f4 <<<"$line")" \
            'BEGIN { printf "%.3f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    fi
    echo "$s $round $t $line $cpu_us $rss $client" >>"$results"
}

# ol_base_rate BACKEND ROUND: nginx's saturated req/s behind BACKEND in ROUND, the higher of its
# 64- and 256-client keep-alive rows; prints "req/s clients", or nothing when neither ran.
ol_base_rate() {
    awk -v r="$2" -v k64="$(sweep_id "$1" k 64)" -v k256="$(sweep_id "$1" k 256)" '
    $2 == r && $3 == "nginx" && ($1 == k64 || $1 == k256) && $4 > best { best = $4; n = ($1 == k256 ? 256 : 64) }
    END { if (best > 0) print best, n }' "$results"
}

# measure_open ID ROUND PCT BASE CLIENTS TARGET: one open-loop run (bench/openloop.c) at PCT% of
# BASE req/s (nginx's saturated rate, from its CLIENTS-client row) against a fresh proxy or straight at
# the first replica; appends "id round pct base_clients base target target_rate achieved_rate p50_ms
# p99_ms p999_ms max_ms requests errors cpu_us cpu1_busy_pct cpu1_us".
measure_open() {
    local o=$1 round=$2 pct=$3 base=$4 base_c=$5 t=$6 rate path=/api/info ip port pid="" t0 t1 cpu_us=- line
    local c0 c1 sent
    rate=$(awk -v b="$base" -v p="$pct" 'BEGIN { r = int(b * p / 100 + 0.5); print (r < 1 ? 1 : r) }')
    [ "$o" = on ] && path=/bytes/100
    if [ "$t" = limit ]; then
        ip=127.0.0.22 port=$app_port
        [ "$o" = on ] && port=$origin_port
    else
        proxy_start "$t" 1 "$proxy_cpu"
        pid=$proxy_pid
        ip=${proxy_addr[$t]%:*} port=${proxy_addr[$t]#*:}
        check_url "http://$ip:$port$path" "$([ "$o" = on ] && echo 100)"
        t0=$(bench_cpu_ticks "$pid")
    fi
    c0=$(bench_cpu_stat "$client_cpu")
    line=$(bench_pin "$client_cpu" timeout $((warmup + seconds + 15)) "$BENCH_TMP/openloop" -r "$rate" \
        -d "$seconds" -w "$warmup" -c "$ol_conns" -H "$host_header" -p "$path" "$ip" "$port" \
        2>>"$BENCH_TMP/openloop.log") || true
    c1=$(bench_cpu_stat "$client_cpu")
    [ -n "$line" ] || line="$rate 0 0 0 0 0 0 1"
    # Over the whole run, warm-up included: every request sent.
    sent=$((rate * (warmup + seconds)))
    if [ -n "$pid" ]; then
        t1=$(bench_cpu_ticks "$pid")
        proxy_stop "$t" "$pid"
        cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$clk_tck" -v n="$sent" 'BEGIN { printf "%.3f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    fi
    echo "$o $round $pct $base_c $base $t $line $cpu_us $(client_cpu "$c0" "$c1" "$sent")" >>"$ol_results"
}

# open_loop ID ROUND K: the open loop behind one backend in a round, each rate against every target,
# their order rotated by ROUND and K like the other scenarios'.
open_loop() {
    local o=$1 round=$2 k=$3 base pct targets=("${proxies[@]}" limit) n i
    base=$(ol_base_rate "${o#o}" "$round")
    if [ -z "$base" ]; then
        echo "bench: no nginx row behind the $(backend_name "${o#o}") in round $round: no open loop there" >&2
        return 0
    fi
    n=${#targets[@]}
    for pct in $ol_pcts; do
        for i in $(seq 0 $((n - 1))); do
            measure_open "$o" "$round" "$pct" "${base% *}" "${base#* }" "${targets[$(((i + round - 1 + k) % n))]}"
        done
        k=$((k + 1))
    done
}

# measure_idle ROUND TARGET: RSS of a fresh proxy, then with $clients idle keep-alive clients;
# appends "e round target rss_fresh rss_loaded ok failed closed setup_seconds".
measure_idle() {
    local round=$1 t=$2 addr=${proxy_addr[$2]} pid cpid fresh loaded status="" i out="$BENCH_TMP/idle.out"
    proxy_start "$t" 1 "$proxy_cpu"
    pid=$proxy_pid
    check_url "http://$addr/api/info"
    fresh=$(proxy_rss "$t" "$pid")
    bench_start "$client_cpu" "$out" python3 bench/idle-clients.py "${addr%:*}" "${addr#*:}" "$clients" \
        --timeout 60 --hold 120
    cpid=$BENCH_LAST_PID
    for i in $(seq 900); do
        status=$(sed -n 's/^ready //p' "$out" 2>/dev/null)
        [ -n "$status" ] || ! kill -0 "$cpid" 2>/dev/null && break
        sleep 0.1
    done
    loaded=$(proxy_rss "$t" "$pid")
    bench_stop "$cpid"
    proxy_stop "$t" "$pid"
    if [ -z "$status" ]; then
        echo "bench: the idle clients did not get ready against $t (after ${i}00 ms); they wrote:" >&2
        cat "$out" >&2
        status="ok=0 failed=$clients closed=0 seconds=-"
    fi
    # "ok=1 failed=0 ..." -> "1 0 ..."
    echo "e $round $t $fresh $loaded $(awk '{ gsub(/[a-z]+=/, ""); print }' <<<"$status")" >>"$idle_results"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
for round in $(seq "$rounds"); do
    k=0
    for s in "${ids[@]}"; do
        targets=("${proxies[@]}")
        # No limit for (e), nor for (d): the apps speak no TLS.
        case $s in e | d?) ;; *) targets+=(limit) ;; esac
        # Rotate the order (A B C, B C A, ...) so that drift on a shared machine favours no target.
        n=${#targets[@]}
        for i in $(seq 0 $((n - 1))); do
            t=${targets[$(((i + round - 1 + k) % n))]}
            if [ "$s" = e ]; then measure_idle "$round" "$t"; else measure "$s" "$round" "$t"; fi
        done
        k=$((k + 1))
    done
    for o in "${ol_ids[@]}"; do
        open_loop "$o" "$round" "$k"
        k=$((k + 1))
    done
    echo "round $round/$rounds done" >&2
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the tables ------------------------------------------------------------------------------
stats_out=$(stats)
ol_stats_out=$(ol_stats)
# body ID...: the table of each scenario named (and the handshakes' after the tls-conns ones).
body() {
    local s
    for s in "$@"; do
        scenario_set "$s"
        echo
        if [ "$s" = e ]; then
            echo "### $s_label"
            echo
            echo "Each proxy fresh (1 worker, pinned), then \`bench/idle-clients.py\` opens $clients connections, makes"
            echo "one request on each (200 at a time) and keeps them all open; RSS from \`/proc/PID/status\`."
            echo
            idle_table
            continue
        fi
        echo "### $s_label"
        echo
        case $s_client$s_tls in
        wrk0) echo "\`$(scenario_cmd "$s" "http://PROXY$s_path")\`" ;;
        wrk1) echo "\`$(scenario_cmd "$s" "https://PROXY_TLS$s_path")\`" ;;
        *) echo "\`$(scenario_cmd "$s" "PROXY_TLS_IP PORT")\` (one request per connection)" ;;
        esac
        echo
        table "$s"
        if [ "$s_client" = tls-conns ]; then
            echo
            echo "The handshakes, as tls-conns saw them (over all rounds, completed connections):"
            echo
            tls_table "$s"
        fi
    done
}
# The scenarios apart from the sweep (which (a) and (b) also belong to), and the sweep's other points.
main_ids=() point_ids=()
for s in "${ids[@]}"; do
    if ! in_sweep "$s" || [ "$s" = a ] || [ "$s" = b ]; then main_ids+=("$s"); else point_ids+=("$s"); fi
done
# sweep_backends_run: the backends some point of the sweep ran behind.
sweep_backends_run() {
    local b s
    for b in "${sweep_backends[@]}"; do
        for s in "${ids[@]}"; do
            in_sweep "$s" || continue
            scenario_set "$s"
            [ "$s_backend" = "$b" ] && { echo "$b"; break; }
        done
    done
}
# sweep_summary: the sweep's table behind each backend.
sweep_summary() {
    local b
    for b in $(sweep_backends_run); do
        echo
        echo "### Load sweep, $(backend_name "$b")"
        echo
        if [ "$b" = a ]; then
            echo "Behind the three app2 replicas, \`/api/info\`."
        else
            echo "Behind the static origin's three nginx workers (\`worker_processes 3\`), \`/bytes/100\`."
        fi
        echo "Keep-alive: \`wrk -t1 -cN --latency -H '$host_header'\`; a new connection per request: the same"
        echo "with \`-H 'Connection: close'\`. Medians over rounds; the ratios are medians of per-round ratios. Each"
        echo "point in full: its own table below (the 64-client app2 points: (a) and (b))."
        echo
        sweep_table "$b"
    done
}
# ol_summary: the open loop's table behind each backend.
ol_summary() {
    local o
    for o in "${ol_ids[@]}"; do
        grep -q "^$o " "$ol_results" || continue
        echo
        echo "### Open loop, $(backend_name "${o#o}")"
        echo
        echo "\`openloop -r RATE -d $seconds -w $warmup -c $ol_conns -H '$host_header' -p $([ "$o" = on ] && echo /bytes/100 || echo /api/info) IP PORT\`, RATE"
        echo "a share of nginx's saturated req/s in the same round behind the same pods, the higher of its 64- and"
        echo "256-client keep-alive rows ($(ol_base "$o")). Latency counted from each request's due time."
        echo "Medians over rounds; the ratios are medians of per-round ratios (below 1: portier's latency is lower)."
        echo
        ol_table "$o"
    done
}
tables=$(body "${main_ids[@]}")
point_tables=$([ ${#point_ids[@]} -eq 0 ] || body "${point_ids[@]}")
sweep_tables=$(sweep_summary)
ol_tables=$(ol_summary)
echo "$sweep_tables"
echo "$ol_tables"
echo "$tables"
echo "$point_tables"
if awk '$8 > 0 { bad = 1 } END { exit !bad }' "$results"; then
    echo "warning: some runs had errors (non-2xx responses or socket errors); see the errors column" >&2
fi
if awk '$14 > 0 { bad = 1 } END { exit !bad }' "$ol_results"; then
    echo "warning: some open-loop runs had errors (non-2xx, unanswered or dropped requests, failed connects); see the errors column" >&2
fi
network="$net_note; on the bench's connections: $(cc_seen)"

# What each proxy wrote (stderr, and nginx's error log), each distinct line once with its count.
proxy_logs() {
    local t f
    for t in "${proxies[@]}"; do
        f="$BENCH_TMP/$t.all.log"
        [ "$t" = nginx ] && [ -f "$BENCH_TMP/nginx-proxy-error.log" ] && cat "$BENCH_TMP/nginx-proxy-error.log" >>"$f"
        [ -s "$f" ] || { echo "- $t: nothing"; continue; }
        echo "- $t: $(wc -l <"$f") lines; each distinct one (timestamps and PIDs stripped) with its count:"
        echo
        echo '```'
        sed -E -e 's/^[0-9]{4}[-/][0-9]{2}[-/][0-9]{2}[T ][0-9:]{8}Z? //' -e 's/\[[0-9]+\]|\([0-9]+\)|#[0-9]+/[N]/g' "$f" |
            sort | uniq -c | sort -rn | head -20
        echo '```'
    done
}
logs=$(proxy_logs)
# A sanitizer report (an ASan build of portier) goes out whole, whatever the counts above kept.
for t in "${proxies[@]}"; do
    if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$BENCH_TMP/$t.all.log" 2>/dev/null; then
        echo "bench: $t wrote a sanitizer report:" >&2
        cat "$BENCH_TMP/$t.all.log" >&2
    fi
done
if [ "$report" = 0 ]; then
    echo
    echo "What the proxies wrote:"
    echo "$logs"
    echo
    echo "Raw measurements (scenario round target req/s p50_ms p99_ms requests errors cpu_us_per_req rss_kib cpu1_busy_pct cpu1_us_per_req):"
    cat "$results" "$idle_results"
    if [ -s "$tls_results" ]; then
        echo "What tls-conns saw (scenario round target connections resumed tickets version cipher group):"
        cat "$tls_results"
    fi
    if [ -s "$ol_results" ]; then
        echo "The open loop (id round pct base_clients base target target_rate achieved_rate p50_ms p99_ms p999_ms max_ms requests errors cpu_us_per_req cpu1_busy_pct cpu1_us_per_req):"
        cat "$ol_results"
    fi
    echo
    echo "network: $network"
    echo "load average $load_before before, $load_after after"
    exit 0
fi

# ---- the report and the chart ---------------------------------------------------------------
stamp=$(date -u +%Y-%m-%d-%H%M)
out=bench/results/$stamp.md png=bench/results/$stamp.png
mkdir -p bench/results
# The scenarios' chart: every scenario but (e) and the sweep's other points, when there is one.
chart_ids=()
for s in "${main_ids[@]}"; do [ "$s" = e ] || chart_ids+=("$s"); done
[ ${#chart_ids[@]} -gt 0 ] || png=""
{
    echo "label portier_rps nginx_rps haproxy_rps limit_rps portier_cpu nginx_cpu haproxy_cpu"
    for s in "${chart_ids[@]}"; do
        awk -v s="$s" -v label="$(short_label "$s")" '
            function d(v) { return v == "" ? "-" : v }
            $1 == s { rps[$2] = $3; cpu[$2] = $10 }
            END { printf "\"%s\" %s %s %s %s %s %s %s\n", label, d(rps["portier"]), d(rps["nginx"]),
                         d(rps["haproxy"]), d(rps["limit"]), d(cpu["portier"]), d(cpu["nginx"]), d(cpu["haproxy"]) }' \
            <<<"$stats_out"
    done
} >"$BENCH_TMP/chart.dat"
[ -z "$png" ] || gnuplot -e "data='$BENCH_TMP/chart.dat'; out='$png'; title='portier, nginx, HAProxy — $started'" bench/plot.gp
# The sweep's chart: req/s and p99 against the clients, keep-alive, one data file per backend.
sweep_png="" sweep_files=""
for b in $(sweep_backends_run); do
    f=$BENCH_TMP/sweep-$b.dat
    {
        echo "# clients portier_rps nginx_rps haproxy_rps limit_rps portier_p99 nginx_p99 haproxy_p99 limit_p99"
        for n in "${sweep_k[@]}"; do
            awk -v s="$(sweep_id "$b" k "$n")" -v n="$n" '
                function d(v) { return v == "" ? "-" : v }
                $1 == s { rps[$2] = $3; p99[$2] = $9; seen = 1 }
                END { if (seen) print n, d(rps["portier"]), d(rps["nginx"]), d(rps["haproxy"]), d(rps["limit"]),
                                      d(p99["portier"]), d(p99["nginx"]), d(p99["haproxy"]), d(p99["limit"]) }' <<<"$stats_out"
        done
    } >"$f"
    [ "$(grep -vc '^#' "$f")" -gt 0 ] && sweep_files="$sweep_files $b:$f"
done
if [ -n "$sweep_files" ]; then
    sweep_png=bench/results/$stamp-sweep.png
    gnuplot -e "files='${sweep_files# }'; out='$sweep_png'; title='portier, nginx, HAProxy by load — $started'" bench/sweep.gp
fi

versions() {
    echo "portier $("$build/portier" -v | head -1 | cut -d' ' -f2) ($(git describe --always --dirty 2>/dev/null || echo 'no git'))," \
        "nginx $("$nginx_bin" -v 2>&1 | sed 's/.*\///'), HAProxy $("$haproxy_bin" -v | head -1 | cut -d' ' -f3)," \
        "wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)$([ "$tls" = 0 ] ||
            echo ", OpenSSL $(openssl version | cut -d' ' -f2) (the openssl command's; the proxies and clients link Debian's libssl3)")"
}
# tls_how: the report's paragraph on the HTTPS rows, when they ran.
tls_how() {
    [ "$tls" = 1 ] || return 0
    cat <<TLS
- HTTPS, the (d) rows: each proxy runs its HTTPS variant (the changes are under "The configs, as run"),
  with the same certificate, made for the run with \`openssl req -x509 -newkey ec -pkeyopt
  ec_paramgen_curve:prime256v1\` (ECDSA P-256, self-signed, SAN app2.com), TLS 1.2 and 1.3 with Mozilla's
  "intermediate" ciphers and groups X25519, P-256, P-384, session tickets and a session cache on in all
  three. The proxies still talk plain HTTP to the same app2 replicas. No limit: the apps speak no TLS.
  (dk) is wrk over https:// (TLS 1.3, 64 connections kept alive, so 64 handshakes in a run).
  (dn) and (dr) are \`bench/tls-conns.c\` (built by the bench; one thread, pinned like wrk): 64
  connections at a time, each a TCP connect, a TLS handshake with SNI app2.com, one \`GET /api/info\`
  with \`Connection: close\`, the response, close_notify and close. (dn) never offers a session: every
  handshake is a full one (the server still issues its tickets, as to any new client). (dr) offers
  each connection's slot the last session the server gave it; OpenSSL's client uses a TLS 1.3 ticket
  once, as browsers do, so a connection resumes only if the server issued a ticket on the one
  before. wrk is not used there: it resumes its sessions (\`SSL_clear\` keeps them) whenever it
  reconnects, so wrk with \`Connection: close\` would be (dr), not (dn). The tables after (dn) and (dr)
  give the version, cipher and group negotiated, the share of resumed handshakes and the tickets per
  connection of each proxy. conn/s and CPU µs/conn count connections, each carrying one request.
TLS
}
fence() { # fence LANG FILE: a file as a fenced block.
    echo '```'"$1"
    sed "s|$BENCH_TMP|/tmp/portier-bench.XXXXXX|g" "$2"
    echo '```'
}
# tls_configs: for the (d) rows, how each proxy's HTTPS variant differs from the config above.
tls_configs() {
    local t
    [ "$tls" = 1 ] || return 0
    echo
    echo "For the (d) rows each proxy runs its HTTPS variant, the config above with these changes:"
    for t in "${proxies[@]}"; do
        echo
        echo "$t:"
        diff -U1 "$BENCH_TMP/$t-w1.conf" "$BENCH_TMP/$t-w1-tls.conf" | tail -n +3 >"$BENCH_TMP/$t-tls.diff" || true
        fence diff "$BENCH_TMP/$t-tls.diff"
    done
}
# section TITLE TEXT: a "## TITLE" section of the report, or nothing when TEXT is empty.
section() {
    [ -n "${2//[[:space:]]/}" ] || return 0
    printf '\n## %s\n%s\n' "$1" "$2"
}
# sweep_how, ol_how: the report's paragraphs on the sweep and the open loop, when they ran.
sweep_how() {
    [ -n "$(sweep_backends_run)" ] || return 0
    cat <<SWEEP
- The load sweep (issue 15): keep-alive 100 B at 1, 4, 16, 64 and 256 clients (\`wrk -t1 -cN\`) and a new
  connection per request at 4 and 64, behind two kinds of pods: the **app2 pods** (\`/api/info\` of the three
  app2 replicas, as in (a); their 64-client points are (a) and (b)) and the **nginx pods** (\`/bytes/100\`, a
  100-byte file, of the static origin's three nginx workers on the same three addresses). Every point
  has the three proxies and the limit, in the rotated order.
SWEEP
}
ol_how() {
    [ -s "$ol_results" ] || return 0
    cat <<OPEN
- The open loop (issue 15): \`bench/openloop.c\` (built by the bench, libevent, pinned like wrk) sends requests
  on a schedule, $ol_conns keep-alive connections, one request in flight on each, whatever the answers, and
  counts each latency from the request's due time (no coordinated omission). Rates: ${ol_pcts// /%, }% of
  nginx's saturated req/s behind the same pods in the same round (the higher of its 64- and 256-client
  keep-alive rows). ${warmup} s of warm-up, then ${seconds} s measured; the same fresh-proxy and rotation rules.
  CPU µs/req there: the proxy's CPU over the whole run over every request sent; the client CPU's
  columns, as in the closed-loop tables, over the same run (openloop, the pods and the origin share
  it): near 100% the latency there is made in that CPU's run queue, whatever the proxy.
OPEN
}
cat >"$out" <<REPORT
# portier against nginx and HAProxy — $started

\`bench/run.sh --rounds $rounds --seconds $seconds --warmup $warmup --scenarios $scenarios --clients $clients\`

$([ -z "$png" ] || echo "![req/s and CPU per request by proxy and scenario]($stamp.png)")

## How it was measured
- Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r);
  load average $load_before before, $load_after after (the machine may be shared: read the ratios, not
  the absolute figures).
- Network: $network. (The congestion control decides much of the 256 KiB row: \`bench/README.md\`.)
- $(versions).
- The proxy under test runs alone, pinned to CPU 0 (\`taskset\`); the client (wrk, or tls-conns for the
  new TLS connections), the three app2 replicas and the static origin share CPU 1. The 2-worker run unpins the proxy and wrk (\`-t2\`); the apps stay on CPU 1.
- All three proxies do the same job: 1 worker (nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`,
  portier \`workers: 1\`), Host \`app2.com\` → app2 ×3 (127.0.0.22–24:$app_port) round-robin and \`/bytes/\` →
  the static origin ×3 (127.0.0.22–24:$origin_port), keep-alive to the servers, the same forwarding headers
  (X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP, X-Request-Id), **access logs off in all three**.
- Bodies: 100 B is app2's \`/api/info\` (JSON, $info_bytes bytes here); 4 KiB and 256 KiB are static files of
  the origin, one nginx with **three workers** (\`worker_processes 3\`, pinned to CPU 1 with the apps; not under
  test), the same server behind every proxy and for the limit.
- The limit is wrk straight at the first replica (the app, or the origin), no proxy.
$(sweep_how)
$(ol_how)
- Rounds: $rounds, of ${seconds} s per target and scenario; the order of the targets rotates every round
  (A B C D, B C D A, ...). Each run starts a fresh proxy, checks one request, warms up for ${warmup} s,
  then measures. Ratios are medians of the per-round ratios; req/s, latencies, CPU and RSS are medians.
- CPU µs/req: the proxy's utime + stime (all processes and threads, from \`/proc/PID/stat\`) over the run,
  divided by the requests wrk completed. RSS: \`VmRSS\` right after the run (nginx: its workers, without
  the master). errors: non-2xx responses plus socket errors, summed over rounds.
- Client CPU: how busy CPU 1 (the client, the apps, the origin) was during the run, and its busy time over
  the requests, from \`/proc/stat\`. Near 100% it is the client side, not the proxy, that sets the
  req/s: a proxy wins there by costing the other side less (fewer wake-ups, fuller reads).
$(tls_how)

## Where portier stands
$(goals)
$(section "The load sweep" "$([ -z "$sweep_png" ] || echo "![req/s and p99 against the number of clients, by proxy and pods](${sweep_png##*/})")
$sweep_tables")
$(section "Latency at a fixed rate: the open loop" "$ol_tables")
$(section "The scenarios" "$tables")
$(section "The sweep's points in full" "$point_tables")

## What the proxies wrote to stderr during the bench
$logs

## The configs, as run (the 2-worker run changes only the worker/thread count)
portier (\`bench/peers/portier.yaml\`):
$(fence yaml "$BENCH_TMP/portier-w1.conf")

nginx (\`bench/peers/nginx.conf\`):
$(fence nginx "$BENCH_TMP/nginx-w1.conf")

HAProxy (\`bench/peers/haproxy.cfg\`):
$(fence haproxy "$BENCH_TMP/haproxy-w1.conf")

The static origin (\`bench/peers/nginx-origin.conf\`, not under test$([ "$origin" = 1 ] || echo '; not started in this run')):
$(fence nginx "$BENCH_TMP/origin.conf")
$(tls_configs)

## Raw measurements
\`scenario round target req/s p50_ms p99_ms requests errors cpu_us_per_req rss_kib cpu1_busy_pct cpu1_us_per_req\`:
$(fence "" "$results")
$([ -s "$idle_results" ] && echo "\`e round target rss_fresh_kib rss_loaded_kib ok failed closed setup_s\`:" && fence "" "$idle_results")
$([ -s "$tls_results" ] && echo "What tls-conns saw, \`scenario round target connections resumed tickets version cipher group\`:" && fence "" "$tls_results")
$([ -s "$ol_results" ] && echo "The open loop, \`id round pct base_clients base target target_rate achieved_rate p50_ms p99_ms p999_ms max_ms requests errors cpu_us_per_req cpu1_busy_pct cpu1_us_per_req\`:" && fence "" "$ol_results")
REPORT

# latest FILE NAME LINE: LINE replaces what stands between FILE's NAME:begin and NAME:end markers.
latest() {
    awk -v line="$3" -v b="<!-- $2:begin -->" -v e="<!-- $2:end -->" '
        index($0, e) { skip = 0 }
        !skip { print }
        index($0, b) { print line; skip = 1 }' "$1" >"$BENCH_TMP/latest.md"
    cat "$BENCH_TMP/latest.md" >"$1"
}
# measured ID...: true when this run measured every scenario named.
measured() {
    local s
    for s in "$@"; do
        [[ " ${ids[*]} " == *" $s "* ]] || return 1
    done
}

# Both READMEs show the latest charts, each linking to its report: the scenarios' chart when the run
# measured all that chart shows by default, the sweep's when it measured the whole sweep, so that a
# partial run does not put a partial chart there.
if measured a b c4 c256 dk dn dr w2; then
    latest bench/README.md latest "[![the latest bench](results/$stamp.png)](results/$stamp.md)"
    latest README.md latest "[![the latest bench: req/s and CPU per request by proxy and scenario](bench/results/$stamp.png)](bench/results/$stamp.md)"
fi
if [ -n "$sweep_png" ] && measured "${sweep_all[@]}"; then
    latest bench/README.md latest-sweep "[![the latest load sweep](results/${sweep_png##*/})](results/$stamp.md)"
    latest README.md latest-sweep "[![the latest load sweep: req/s and p99 against the number of clients](bench/results/${sweep_png##*/})](bench/results/$stamp.md)"
fi
echo "report: $out; charts: ${png:-none}${sweep_png:+, $sweep_png}"
