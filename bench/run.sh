#!/usr/bin/env bash
# portier side by side with nginx and HAProxy, and the no-proxy limit (issues 4 and 11). Starts
# three app2 replicas (and, for the body-size scenarios, a static origin), then portier, nginx and
# HAProxy one at a time, each configured for the same job; pins the proxy under test to CPU 0 and
# the clients, the apps and the origin to CPU 1; rotates the order of the targets every round.
# bench/README.md says what each scenario means and how to read the report.
#
# Usage: bench/run.sh [--rounds N] [--seconds S] [--warmup S] [--scenarios LIST] [--clients N]
#                     [--no-report]
#        bench/run.sh --smoke                     one 1-second round of a and dr, no report (make test)
#        bench/run.sh --target http://HOST[:PORT] the client side only, against a proxy elsewhere
# LIST is comma-separated: a (keep-alive, 100 B), b (a new connection per request), c (4 KiB and
# 256 KiB bodies), d (HTTPS: dk keep-alive, dn a new TLS connection per request with a full
# handshake, dr the same resuming a session; each may also be named alone), e (10,000 idle
# keep-alive clients), w (2 workers, unpinned); default a,b,c,d,e,w.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

usage() {
    sed -n '8,15s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

rounds=5 seconds=5 warmup=1 scenarios=a,b,c,d,e,w clients=10000 report=1 target=""
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=${2:?}; shift 2 ;;
    --seconds) seconds=${2:?}; shift 2 ;;
    --warmup) warmup=${2:?}; shift 2 ;;
    --scenarios) scenarios=${2:?}; shift 2 ;;
    --clients) clients=${2:?}; shift 2 ;;
    --no-report) report=0; shift ;;
    --smoke) rounds=1 seconds=1 warmup=0 scenarios=a,dr report=0; shift ;;
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
conns=64
host_header='Host: app2.com'
results=$BENCH_TMP/results.txt idle_results=$BENCH_TMP/idle.txt tls_results=$BENCH_TMP/tls.txt
: >"$results"
: >"$idle_results"
: >"$tls_results"
tls_dir=$BENCH_TMP/tls

# The scenario ids (a b c4 c256 dk dn dr e w2), in the order LIST names them; each round runs them
# all.
ids=()
IFS=, read -ra wanted <<<"$scenarios"
for w in "${wanted[@]}"; do
    case $w in
    a) ids+=(a) ;;
    b) ids+=(b) ;;
    c) ids+=(c4 c256) ;;
    d) ids+=(dk dn dr) ;;
    dk | dn | dr) ids+=("$w") ;;
    e) ids+=(e) ;;
    w) ids+=(w2) ;;
    *) echo "bench: unknown scenario: $w" >&2; usage ;;
    esac
done

# scenario_set ID: sets s_label, s_path, s_args (extra wrk or tls-conns arguments), s_workers,
# s_proxy_cpu, s_client_cpu, s_threads, s_tls (1: over HTTPS, to the proxy's TLS listener), s_client
# (wrk, or tls-conns: a new TLS connection per request) and s_unit (what a row counts: req or conn)
# for one scenario.
scenario_set() {
    s_path=/api/info s_args=() s_workers=1 s_proxy_cpu=$proxy_cpu s_client_cpu=$client_cpu s_threads=1
    s_tls=0 s_client=wrk s_unit=req
    case $1 in
    a) s_label="(a) keep-alive, 100 B" ;;
    b) s_label="(b) a new connection per request" s_args=(-H 'Connection: close') ;;
    c4) s_label="(c) keep-alive, 4 KiB body" s_path=/bytes/4k ;;
    c256) s_label="(c) keep-alive, 256 KiB body" s_path=/bytes/256k ;;
    dk) s_label="(d) HTTPS keep-alive, 100 B" s_tls=1 ;;
    dn) s_label="(d) new TLS connections, full handshakes" s_tls=1 s_client=tls-conns s_unit=conn ;;
    dr) s_label="(d) new TLS connections, resumed sessions" s_tls=1 s_client=tls-conns s_unit=conn s_args=(-r) ;;
    w2) s_label="(a) with 2 workers, unpinned" s_workers=2 s_proxy_cpu=any s_client_cpu=any s_threads=2 ;;
    e) s_label="(e) $clients idle keep-alive clients" ;;
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
            "$conns" "$seconds" "$2" "$s_path"
        return
    fi
    printf '%swrk -t%s -c%s -d%ss --latency -H '\''%s'\''' "$pin" "$s_threads" "$conns" "$seconds" "$host_header"
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

# goals: how portier stands against the goals of issue 4 (and issue 11's for the (d) rows), from
# $stats_out and the idle results.
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
        print "| goal (issue 4; issue 11 for (d)) | measured | |"
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
}

# skipped: the scenarios this run does not measure, and why.
skipped() {
    if [ -n "$target" ]; then
        echo "- (d) HTTPS: skipped: it needs the bench's own certificate in the proxy, which only local runs start"
        echo "- (c) 4 KiB and 256 KiB bodies: skipped: they need the static origin, which only local runs start"
        echo "- (e) idle clients, and CPU and RSS everywhere: skipped: they need the proxy's /proc"
        echo "- 2 workers, unpinned: skipped: the remote proxy's workers are its own business"
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
            line=$(bench_wrk any "$seconds" "$conns" "$target$s_path" -H "$host_header" "${s_args[@]}")
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
bench_need "${need[@]}"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
if [ ! -x "$build/app2" ] || [ ! -x "$build/portier" ]; then
    make --no-print-directory BUILD="$build" all >/dev/null
fi

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
origin=0
if [[ " ${ids[*]} " == *" c4 "* ]]; then
    origin=1
    mkdir -p "$BENCH_TMP/www/bytes"
    for size in 100:100 4k:4096 256k:262144; do
        head -c "${size#*:}" /dev/zero | tr '\0' x >"$BENCH_TMP/www/bytes/${size%:*}"
    done
    chmod -R a+rX "$BENCH_TMP/www"
    bench_start "$client_cpu" "$BENCH_TMP/origin.log" "$nginx_bin" -e "$BENCH_TMP/nginx-origin-error.log" \
        -c "$BENCH_TMP/origin.conf"
    bench_wait_port 127.0.0.22 "$origin_port"
    check_url "http://127.0.0.24:$origin_port/bytes/256k" 262144
fi
check_url "http://127.0.0.22:$app_port/api/info"
info_bytes=$(curl -s -H "$host_header" "http://127.0.0.22:$app_port/api/info" | wc -c)

# limit_url ID: where wrk goes without a proxy: the first replica.
limit_url() {
    case $1 in
    c4 | c256) echo "http://127.0.0.22:$origin_port$s_path" ;;
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
        WRK_THREADS=$s_threads bench_wrk "$s_client_cpu" "$secs" "$conns" "$url" -H "$host_header" "${s_args[@]}"
        return
    fi
    hostport=${url#https://}
    hostport=${hostport%%/*}
    out=$(bench_pin "$s_client_cpu" timeout $((secs + 30)) "$BENCH_TMP/tls-conns" "${s_args[@]}" -c "$conns" \
        -d "$secs" -n app2.com -H app2.com "${hostport%:*}" "${hostport#*:}" "$s_path" 2>>"$BENCH_TMP/tls-conns.log") ||
        true
    [ -n "$out" ] || out="0 0 0 0 1 0 0 - - -"
    [ -z "${3:-}" ] || echo "$3 $(cut -d' ' -f4,6- <<<"$out")" >>"$tls_results"
    cut -d' ' -f1-5 <<<"$out"
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
            case $s in
            c4) check_url "$url" 4096 ;;
            c256) check_url "$url" 262144 ;;
            *) check_url "$url" ;;
            esac
        fi
        pid=$proxy_pid
        if [ "$warmup" -gt 0 ]; then
            client_run "$warmup" "$url" >/dev/null
        fi
        t0=$(bench_cpu_ticks "$pid")
    fi
    c0=$(bench_cpu_stat "$s_client_cpu")
    line=$(client_run "$seconds" "$url" "$s $round $t")
    c1=$(bench_cpu_stat "$s_client_cpu")
    # The client CPU (wrk or tls-conns, and the servers behind the proxy): how busy, and its time per request.
    # Unpinned runs share every CPU with the proxy: no such figure.
    if [ "$s_client_cpu" != any ]; then
        client=$(awk -v a="$c0" -v b="$c1" -v hz="$clk_tck" -v n="$(cut -d' ' -f4 <<<"$line")" 'BEGIN {
            split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
            printf "%.0f %.3f", (busy + idle > 0 ? 100 * busy / (busy + idle) : 0), (n > 0 ? busy * 1e6 / hz / n : 0) }')
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
    echo "round $round/$rounds done" >&2
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the tables ------------------------------------------------------------------------------
stats_out=$(stats)
body() {
    local s
    for s in "${ids[@]}"; do
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
    echo
    skipped
}
tables=$(body)
echo "$tables"
if awk '$8 > 0 { bad = 1 } END { exit !bad }' "$results"; then
    echo "warning: some runs had errors (non-2xx responses or socket errors); see the errors column" >&2
fi

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
    echo
    echo "load average $load_before before, $load_after after"
    exit 0
fi

# ---- the report and the chart ---------------------------------------------------------------
stamp=$(date -u +%Y-%m-%d-%H%M)
out=bench/results/$stamp.md png=bench/results/$stamp.png
mkdir -p bench/results
{
    echo "label portier_rps nginx_rps haproxy_rps limit_rps portier_cpu nginx_cpu haproxy_cpu"
    for s in "${ids[@]}"; do
        [ "$s" = e ] && continue
        awk -v s="$s" -v label="$(short_label "$s")" '
            function d(v) { return v == "" ? "-" : v }
            $1 == s { rps[$2] = $3; cpu[$2] = $10 }
            END { printf "\"%s\" %s %s %s %s %s %s %s\n", label, d(rps["portier"]), d(rps["nginx"]),
                         d(rps["haproxy"]), d(rps["limit"]), d(cpu["portier"]), d(cpu["nginx"]), d(cpu["haproxy"]) }' \
            <<<"$stats_out"
    done
} >"$BENCH_TMP/chart.dat"
gnuplot -e "data='$BENCH_TMP/chart.dat'; out='$png'; title='portier, nginx, HAProxy — $started'" bench/plot.gp

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
cat >"$out" <<REPORT
# portier against nginx and HAProxy — $started

\`bench/run.sh --rounds $rounds --seconds $seconds --warmup $warmup --scenarios $scenarios --clients $clients\`

![req/s and CPU per request by proxy and scenario]($stamp.png)

## How it was measured
- Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r),
  TCP congestion control $(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
  (it decides much of the 256 KiB row: \`bench/README.md\`);
  load average $load_before before, $load_after after (the machine may be shared: read the ratios, not
  the absolute figures).
- $(versions).
- The proxy under test runs alone, pinned to CPU 0 (\`taskset\`); the client (wrk, or tls-conns for the
  new TLS connections), the three app2 replicas and the static origin share CPU 1. The 2-worker run unpins the proxy and wrk (\`-t2\`); the apps stay on CPU 1.
- All three proxies do the same job: 1 worker (nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`,
  portier \`workers: 1\`), Host \`app2.com\` → app2 ×3 (127.0.0.22–24:$app_port) round-robin and \`/bytes/\` →
  the static origin ×3 (127.0.0.22–24:$origin_port), keep-alive to the servers, the same forwarding headers
  (X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP, X-Request-Id), **access logs off in all three**.
- Bodies: 100 B is app2's \`/api/info\` (JSON, $info_bytes bytes here); 4 KiB and 256 KiB are static files of
  one nginx worker (the origin, not under test), the same server behind every proxy and for the limit.
- The limit is wrk straight at the first replica (the app, or the origin), no proxy.
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

## The scenarios
$tables

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
REPORT

# latest FILE LINE: LINE replaces what stands between FILE's latest:begin and latest:end markers.
latest() {
    awk -v line="$2" '
        /<!-- latest:end -->/ { skip = 0 }
        !skip { print }
        /<!-- latest:begin -->/ { print line; skip = 1 }' "$1" >"$BENCH_TMP/latest.md"
    cat "$BENCH_TMP/latest.md" >"$1"
}

# Both READMEs show the latest chart, each linking to its report.
latest bench/README.md "[![the latest bench](results/$stamp.png)](results/$stamp.md)"
latest README.md "[![the latest bench: req/s and CPU per request by proxy and scenario](bench/results/$stamp.png)](bench/results/$stamp.md)"
echo "report: $out, chart: $png"
