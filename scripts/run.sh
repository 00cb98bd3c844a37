#!/usr/bin/env bash
# `make run`: the p2 topology on loopback. app1 on 127.0.0.21, app2 x3 on 127.0.0.22-24, app3 on
# 127.0.0.25 (all :8080) and portier on 127.0.0.1:8080 and 8443 (HTTPS, with the local CA's
# certificate that make run keeps in build/certs) in front of them; Ctrl-C stops everything.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."

pids=()
stop() {
    trap - EXIT INT TERM
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

# start NAME IP POD: one app process, its log prefixed with the pod name; $! is the app itself.
start() {
    local name=$1 ip=$2 pod=$3
    LISTEN="$ip:8080" POD_NAME="$pod" POD_IP="$ip" "$build/$name" > >(sed -u "s/^/[$pod] /") 2>&1 &
    pids+=($!)
}

start app1 127.0.0.21 app1-0
start app2 127.0.0.22 app2-0
start app2 127.0.0.23 app2-1
start app2 127.0.0.24 app2-2
start app3 127.0.0.25 app3-0

if [ -x "$build/portier" ] && [ -f config/local.yaml ]; then
    "$build/portier" -c config/local.yaml > >(sed -u 's/^/[portier] /') 2>&1 &
    pids+=($!)
    sleep 0.5
    cat <<'TXT'

portier listens on http://127.0.0.1:8080 and https://127.0.0.1:8443 in front of the apps. Try:
  curl -H 'Host: app1.com' http://127.0.0.1:8080/
  curl -H 'Host: app2.com' http://127.0.0.1:8080/api/info   # three times: three replicas in turn
  curl -H 'Host: anything.else' http://127.0.0.1:8080/      # the default app, app3
  curl --cacert build/certs/ca.crt --resolve app2.com:8443:127.0.0.1 https://app2.com:8443/api/info
A browser: "127.0.0.1 app1.com app2.com app3.com" in /etc/hosts, build/certs/ca.crt imported as an
authority (Firefox, Chromium: Settings, Certificates), then https://app2.com:8443/. For curl and the like:
  sudo cp build/certs/ca.crt /usr/local/share/ca-certificates/portier-local-ca.crt && sudo update-ca-certificates
The status page (routes, servers up or down, requests/s, latency): http://127.0.0.1:9180/
Prometheus metrics: http://127.0.0.1:9180/metrics; health: /healthz and /readyz there.
Press Ctrl-C to stop.
TXT
else
    sleep 0.5
    cat <<'TXT'

The apps listen on loopback (portier is not built yet). Try:
  curl http://127.0.0.21:8080/            # app1
  curl http://127.0.0.22:8080/api/info    # app2, replicas on 127.0.0.22, .23 and .24
  curl http://127.0.0.25:8080/healthz     # app3
Press Ctrl-C to stop.
TXT
fi
wait
