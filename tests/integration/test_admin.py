"""Black-box tests of portier's admin listener (docs/admin.md is the contract): /metrics, /healthz,
/readyz, /api/status and the status page, read by the tools that read them for real.

What is tested, one section each:

  1. the listener: GET and HEAD on each path with its content type, 404 elsewhere, 405 with
     `Allow: GET, HEAD` for other methods, never served on the public listeners
  2. /metrics on a fresh portier: every documented family with HELP and TYPE, every service's
     histograms (documented buckets, zeros) and retries from the start, process_* plausible,
     portier_build_info; /api/status's documented fields
  3. mixed traffic (several services; 200, 404, 400, 502, 503; TLS): portier_requests_total exact
     per service and code, the other families consistent, and `promtool check metrics` (Debian's
     prometheus package) passes on the live scrape
  4. a real Prometheus server scraping portier every second: after a known load over many
     connections and 4 workers, its /api/v1/query answers exactly what the clients got
  5. counters exact under concurrent load across workers and SIGHUP reloads in the middle;
     portier_config_reloads_total and the last-reload timestamp on good and bad reloads
  6. /readyz: 503 naming the service when every server of it is down (active health check), 200
     again when one returns; SIGTERM closes the admin listener with the public ones
  7. the status page in headless Chromium (chromedriver's WebDriver API, as test_browser.py):
     services, servers and their states in the rendered DOM, numbers that move while traffic
     flows, and a screenshot saved as $PORTIER_BUILD/artifacts/status-page.png for the README

The metrics are read with this file's own parser of the text format (parse_metrics), which also
checks what the format requires (one TYPE per family before its samples, families in one group,
escapes, no duplicate series).

Addresses (no other test file uses them): portier on 127.0.0.90, port 28900 (HTTP), 28943 (HTTPS)
and 28901 (admin); the apps on 127.0.0.91-95:28910 (app1, app2 x3, app3); dnsmasq on
127.0.0.96:28953; a fake origin on 127.0.0.97:28920 and nothing on 127.0.0.97:28930 (refused);
Prometheus on 127.0.0.98:28950; chromedriver on 127.0.0.1:28960 (it listens on localhost only).
Python clients connect from 127.0.0.99. Every process is stopped by PID at teardown (portier must
exit 0 on SIGTERM without a sanitizer report), every load is bounded in requests and seconds, and
time is never asserted: waits poll (conftest.wait_until or settle below) with generous deadlines.
"""

import base64
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import backend
import httpc
import procs
from conftest import (REPO, BackgroundThreads, accepts, assert_alive, dnsmasq_at, stopping,
                      wait_until)
from test_browser import CHROMIUM_BASE_ARGS, chromium_session

PUBLIC = ("127.0.0.90", 28900)
PUBLIC_TLS = ("127.0.0.90", 28943)
ADMIN = ("127.0.0.90", 28901)
APP_PORT = 28910
APPS = [  # app, POD_NAME, address: make run's topology on this file's addresses
    ("app1", "app1-0", ("127.0.0.91", APP_PORT)),
    ("app2", "app2-0", ("127.0.0.92", APP_PORT)),
    ("app2", "app2-1", ("127.0.0.93", APP_PORT)),
    ("app2", "app2-2", ("127.0.0.94", APP_PORT)),
    ("app3", "app3-0", ("127.0.0.95", APP_PORT)),
]
APP1 = [a for _, _, a in APPS[:1]]
APP2 = [a for _, _, a in APPS[1:4]]
APP3 = [a for _, _, a in APPS[4:]]
DNS = ("127.0.0.96", 28953)
ORIGIN = ("127.0.0.97", 28920)  # a fake origin (backend.py)
DEAD = ("127.0.0.97", 28930)  # nothing listens here: connections are refused
PROMETHEUS = ("127.0.0.98", 28950)
DRIVER = ("127.0.0.1", 28960)  # chromedriver binds localhost only
CLIENT_IP = "127.0.0.99"
TIMEOUT = 5.0  # every client socket operation
SETTLE = 15.0  # how long a counter may take to show what the clients got

# Debian's prometheus package has both.
# Debian's prometheus package, unpacked into the tree by scripts/deps.sh (installed, it would run a
# system-wide Prometheus).
PROMETHEUS_BIN = str(REPO / "build/tools/prometheus/usr/bin/prometheus")
PROMTOOL_BIN = str(REPO / "build/tools/prometheus/usr/bin/promtool")

# docs/admin.md, "Metrics": every family and its type.
FAMILIES = {
    "portier_requests_total": "counter",
    "portier_request_duration_seconds": "histogram",
    "portier_upstream_response_seconds": "histogram",
    "portier_upstream_connect_errors_total": "counter",
    "portier_server_up": "gauge",
    "portier_retries_total": "counter",
    "portier_connections": "gauge",
    "portier_bytes_total": "counter",
    "portier_tls_handshakes_total": "counter",
    "portier_dns_resolutions_total": "counter",
    "portier_config_reloads_total": "counter",
    "portier_config_last_reload_success_timestamp_seconds": "gauge",
    "portier_build_info": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_start_time_seconds": "gauge",
}
# The families every portier has from the start, whatever its config (the others may wait for
# their first event: a code sent, a connect failed, a handshake, a lookup, a byte, a reload).
ALWAYS = [f for f in FAMILIES if f not in (
    "portier_requests_total",
    "portier_upstream_connect_errors_total",
    "portier_tls_handshakes_total",
    "portier_dns_resolutions_total",
    "portier_bytes_total",
    "portier_config_reloads_total",
)]
BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
           2.5, 5, 10, float("inf")]
HISTOGRAMS = ("portier_request_duration_seconds", "portier_upstream_response_seconds")

CONTENT_TYPES = {
    "/metrics": "text/plain; version=0.0.4; charset=utf-8",
    "/healthz": "text/plain; charset=utf-8",
    "/readyz": "text/plain; charset=utf-8",
    "/": "text/html; charset=utf-8",
    "/api/status": "application/json",
}

# urllib without proxies: requests to Prometheus and chromedriver must not go through one.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def hp(addr):
    return f"{addr[0]}:{addr[1]}"


def settle(get, want, what, timeout=SETTLE):
    """Polls get() until it returns want (or timeout seconds pass), then asserts it does; returns
    what it got. Counters are read by scraping, and a worker may count a request a moment after
    its client read the answer."""
    deadline = time.monotonic() + timeout
    while True:
        got = get()
        if got == want or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if isinstance(want, dict) and isinstance(got, dict):
        diff = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want), key=str)
                if got.get(k) != want.get(k)}
        assert got == want, f"{what} after {timeout}s: (got, want) differ at {diff}; got {got}"
    assert got == want, f"{what} after {timeout}s: got {got!r}, want {want!r}"
    return got


# =============================================================================================
# The text format (0.0.4), parsed strictly enough to catch what Prometheus would reject.

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?Inf|NaN")
TIMESTAMP = re.compile(r"-?\d+")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class FormatError(AssertionError):
    pass


class Metrics:
    """One scrape: types and helps by family, samples as (name, {label: value}, value)."""

    def __init__(self, text: str):
        self.text = text
        self.types: Dict[str, str] = {}
        self.helps: Dict[str, str] = {}
        self.samples = []
        parse_metrics(text, self)

    def select(self, name, **labels):
        """[(labels, value)] of the samples called name whose labels include labels."""
        return [(lb, v) for n, lb, v in self.samples
                if n == name and all(lb.get(k) == w for k, w in labels.items())]

    def get(self, name, **labels) -> Optional[float]:
        """The value of the one series called name with exactly these labels, or None."""
        for n, lb, v in self.samples:
            if n == name and lb == labels:
                return v
        return None

    def by(self, name, *keys, **labels) -> Dict[tuple, float]:
        """name's values summed by the values of keys (a 1-tuple key is unwrapped)."""
        out: Dict = {}
        for lb, v in self.select(name, **labels):
            k = tuple(lb.get(key) for key in keys)
            k = k[0] if len(k) == 1 else k
            out[k] = out.get(k, 0) + v
        return out


def _family(name, types):
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            return base
    return None


def _labels(line, i, n):
    """Parses {a="x",b="y"} starting after the "{" at i; returns (labels, index after "}")."""
    labels = {}
    while True:
        if line.startswith("}", i):
            return labels, i + 1
        m = LABEL_NAME.match(line, i)
        if not m:
            raise FormatError(f"line {n}: bad label name at column {i + 1}: {line!r}")
        key, i = m.group(), m.end()
        if not line.startswith('="', i):
            raise FormatError(f"line {n}: no =\" after label {key}: {line!r}")
        i += 2
        value = []
        while True:
            if i >= len(line):
                raise FormatError(f"line {n}: unterminated value of label {key}: {line!r}")
            c = line[i]
            if c == '"':
                i += 1
                break
            if c == "\\":
                esc = line[i + 1: i + 2]
                if esc not in ESCAPES:
                    raise FormatError(f"line {n}: bad escape \\{esc} in label {key}: {line!r}")
                value.append(ESCAPES[esc])
                i += 2
                continue
            value.append(c)
            i += 1
        if key in labels:
            raise FormatError(f"line {n}: label {key} twice: {line!r}")
        labels[key] = "".join(value)
        if line.startswith(",", i):
            i += 1
        elif not line.startswith("}", i):
            raise FormatError(f"line {n}: expected , or }} at column {i + 1}: {line!r}")


def _unescape_help(text, n):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            esc = text[i + 1: i + 2]
            if esc not in ("\\", "n"):
                raise FormatError(f"line {n}: bad escape \\{esc} in HELP: {text!r}")
            out.append("\n" if esc == "n" else "\\")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_metrics(text: str, out: Metrics) -> None:
    """Fills out from text, or raises FormatError naming the line."""
    if text and not text.endswith("\n"):
        raise FormatError("the exposition does not end with a newline")
    series = set()
    done = set()  # families whose group has ended
    current = None

    def enter(family, n, line):
        nonlocal current
        if family == current:
            return
        if family in done:
            raise FormatError(f"line {n}: {family} outside its family's group: {line!r}")
        if current is not None:
            done.add(current)
        current = family

    for n, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                continue  # any other comment
            kind, name, rest = parts[1], parts[2], parts[3] if len(parts) > 3 else ""
            if not METRIC_NAME.fullmatch(name):
                raise FormatError(f"line {n}: bad metric name in {line!r}")
            enter(name, n, line)
            if kind == "TYPE":
                if name in out.types:
                    raise FormatError(f"line {n}: a second TYPE for {name}")
                if rest not in TYPES:
                    raise FormatError(f"line {n}: unknown type in {line!r}")
                if any(_family(s, {name: rest}) == name for s, _, _ in out.samples):
                    raise FormatError(f"line {n}: TYPE for {name} after its samples")
                out.types[name] = rest
            else:
                if name in out.helps:
                    raise FormatError(f"line {n}: a second HELP for {name}")
                out.helps[name] = _unescape_help(rest, n)
            continue
        m = METRIC_NAME.match(line)
        if not m:
            raise FormatError(f"line {n}: not a sample: {line!r}")
        name, i = m.group(), m.end()
        labels = {}
        if line.startswith("{", i):
            labels, i = _labels(line, i + 1, n)
        if not line.startswith(" ", i):
            raise FormatError(f"line {n}: no space before the value: {line!r}")
        fields = line[i:].split()
        if not 1 <= len(fields) <= 2 or not VALUE.fullmatch(fields[0]) or (
                len(fields) == 2 and not TIMESTAMP.fullmatch(fields[1])):
            raise FormatError(f"line {n}: bad value or timestamp: {line!r}")
        family = _family(name, out.types)
        if family is None:
            raise FormatError(f"line {n}: sample {name} without a TYPE line before it")
        enter(family, n, line)
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise FormatError(f"line {n}: the series {name}{labels} twice")
        series.add(key)
        out.samples.append((name, labels, float(fields[0].replace("Inf", "inf"))))


def test_the_parser_reads_the_format_and_refuses_what_prometheus_would():
    """The parser itself: escapes, +Inf, histograms and timestamps read; duplicate series, a
    sample before its TYPE, split groups and bad escapes refused."""
    m = Metrics(
        '# HELP a_total A counter\\nwith two lines.\n# TYPE a_total counter\n'
        'a_total{s="x\\\\y\\"z\\n",code="200"} 3 1700000000000\na_total{s=""} 0\n'
        "# TYPE h histogram\n"
        'h_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.75\nh_count 2\n'
        "# TYPE g gauge\ng -1.5e3\n"
    )
    assert m.helps["a_total"] == "A counter\nwith two lines."
    assert m.get("a_total", s='x\\y"z\n', code="200") == 3
    assert m.get("a_total", s="") == 0
    assert m.by("h_bucket", "le") == {"0.5": 1, "+Inf": 2}
    assert m.get("g") == -1500 and m.types == {"a_total": "counter", "h": "histogram",
                                               "g": "gauge"}
    bad = [
        "# TYPE a gauge\na 1\na 2\n",
        "a 1\n# TYPE a gauge\n",
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n",
        '# TYPE a gauge\na{x="\\t"} 1\n',
        "# TYPE a gauge\na one\n",
        "# TYPE a gauge\na 1",
        "# HELP a bad \\t escape\n# TYPE a gauge\na 1\n",
        '# TYPE a gauge\na{x="1"}1\n',
    ]
    for text in bad:
        with pytest.raises(FormatError):
            Metrics(text)


# =============================================================================================
# Configs, processes


def servers(addrs):
    return "[" + ", ".join(f'"{hp(a)}"' for a in addrs) + "]"


TOPOLOGY_SERVICES = {
    "app1": {"servers": servers(APP1)},
    "app2": {"servers": servers(APP2)},
    "app3": {"servers": servers(APP3)},
}
TOPOLOGY_ROUTES = [("app1.com", "app1"), ("app2.com", "app2")]


def config(services=None, routes=None, default="app3", workers=2, tls=None, extra=""):
    """A portier config: HTTP on PUBLIC (and HTTPS on PUBLIC_TLS with tls=(cert, key)), admin on
    ADMIN, routes [(host, service)], services {name: {key: YAML value}} (the topology's by
    default), extra YAML lines appended."""
    services = TOPOLOGY_SERVICES if services is None else services
    routes = TOPOLOGY_ROUTES if routes is None else routes
    out = ["listen:", f'  - address: "{hp(PUBLIC)}"']
    if tls:
        out += [f'  - address: "{hp(PUBLIC_TLS)}"', "    tls: true"]
    out += [f'admin: "{hp(ADMIN)}"', f"workers: {workers}"]
    if tls:
        out += ["tls:", "  certificates:", f"    - cert: {tls[0]}", f"      key: {tls[1]}"]
    out.append("routes:")
    for host, service in routes:
        out += [f"  - host: {host}", f"    service: {service}"]
    if default:
        out.append(f"default_service: {default}")
    out.append("services:")
    for name, spec in services.items():
        out.append(f"  {name}:")
        out += [f"    {k}: {v}" for k, v in spec.items()]
    out += ["timeouts: { shutdown_grace: 10s }", "access_log: off"]
    return "\n".join(out) + "\n" + (extra + "\n" if extra else "")


def write_config(path, text):
    """Replaces the config atomically, so a reload never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def apps(start_app):
    """make run's five apps on this file's addresses, by POD_NAME (stopped by PID at teardown)."""
    return {pod: start_app(app, hp(addr), env={"POD_NAME": pod, "POD_IP": addr[0]})
            for app, pod, addr in APPS}


@pytest.fixture
def px(start_portier):
    """A factory: px(yaml_text) starts portier (start_portier) and waits until PUBLIC and the
    admin listener accept connections (a test with TLS waits for a handshake itself: a bare
    connection would count as a failed one)."""

    def _start(text):
        p = start_portier(text, addr=PUBLIC)
        deadline = time.monotonic() + 5.0
        wanted = [ADMIN]
        while not all(accepts(a) for a in wanted):
            assert_alive(p, "while starting")
            if time.monotonic() >= deadline:
                pytest.fail(f"portier listens on {hp(PUBLIC)}, yet not on {wanted} 5 s later; "
                            f"its stderr:\n{p.errors()}", pytrace=False)
            time.sleep(0.02)
        return p

    return _start


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for app1.com, app2.com and app3.com: (cert file, key file)."""
    d = tmp_path_factory.mktemp("admin-cert")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "server.key", "-out", "server.crt", "-subj", "/CN=app1.com",
         "-addext", "subjectAltName=DNS:app1.com,DNS:app2.com,DNS:app3.com", "-days", "2"],
        cwd=d, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=True,
    )
    return str(d / "server.crt"), str(d / "server.key")


def portier_version(portier_bin) -> str:
    """The version `portier -v` prints on its first line ("portier 0.1.0")."""
    out = subprocess.run([str(portier_bin), "-v"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return out.split("\n", 1)[0].split()[1]


def reloaded(p, count, timeout=5.0):
    wait_until(lambda: p.errors().count(" applied") >= count, timeout,
               f"reload #{count} logged as applied")


# =============================================================================================
# The admin client


def admin(target="/metrics", method="GET", headers=(), body=b""):
    """One request to the admin listener on a connection of its own."""
    if body:
        headers = [*headers, ("Content-Length", len(body))]
    with httpc.Conn(ADMIN, timeout=TIMEOUT, source=CLIENT_IP) as c:
        return c.request(method, target, host=hp(ADMIN), headers=headers, body=body)


def scrape() -> Metrics:
    r = admin("/metrics")
    assert r.status == 200, r
    assert r.header("Content-Type") == CONTENT_TYPES["/metrics"], r
    return Metrics(r.body.decode("utf-8"))


def status() -> dict:
    r = admin("/api/status")
    assert r.status == 200, r
    assert r.header("Content-Type") == CONTENT_TYPES["/api/status"], r
    return r.json()


def requests_by_code(m: Metrics) -> Dict[tuple, int]:
    """portier_requests_total as {(service, code): count}, without zeros."""
    return {k: int(v) for k, v in m.by("portier_requests_total", "service", "code").items() if v}


def check_families(m: Metrics, families):
    """Each of families has a TYPE as documented, a non-empty HELP and at least one sample; no
    other portier_ or process_ family exists; every family's samples have its labels."""
    for f in families:
        assert m.types.get(f) == FAMILIES[f], f"TYPE of {f}: {m.types.get(f)}, want {FAMILIES[f]}"
        assert m.helps.get(f, "").strip(), f"no HELP for {f}"
        names = [f + s for s in ("_bucket", "_sum", "_count")] if FAMILIES[f] == "histogram" \
            else [f]
        assert any(m.select(n) for n in names), f"no sample of {f}"
    unknown = [f for f in m.types if f.startswith(("portier_", "process_")) and f not in FAMILIES]
    assert not unknown, f"undocumented families: {unknown}"
    labels = {
        "portier_requests_total": {"service", "code"},
        "portier_request_duration_seconds_bucket": {"service", "le"},
        "portier_request_duration_seconds_sum": {"service"},
        "portier_request_duration_seconds_count": {"service"},
        "portier_upstream_response_seconds_bucket": {"service", "le"},
        "portier_upstream_response_seconds_sum": {"service"},
        "portier_upstream_response_seconds_count": {"service"},
        "portier_upstream_connect_errors_total": {"service", "server"},
        "portier_server_up": {"service", "server"},
        "portier_retries_total": {"service"},
        "portier_connections": {"state"},
        "portier_bytes_total": {"direction"},
        "portier_tls_handshakes_total": {"result"},
        "portier_dns_resolutions_total": {"service", "result"},
        "portier_config_reloads_total": {"result"},
        "portier_build_info": {"version"},
    }
    values = {"state": {"handshake", "active", "idle"}, "direction": {"in", "out"},
              "code": {str(c) for c in range(100, 600)}}
    for name, lb, v in m.samples:
        want = labels.get(name, set())
        assert set(lb) == want, f"{name}{lb}: labels {sorted(lb)}, want {sorted(want)}"
        for k in values.keys() & lb.keys():
            assert lb[k] in values[k], f"{name}{lb}: {k}={lb[k]!r}"
    for lb, _ in m.select("portier_tls_handshakes_total"):
        assert lb["result"] in ("full", "resumed", "failed"), lb
    for lb, _ in m.select("portier_dns_resolutions_total"):
        assert lb["result"] in ("success", "empty", "failure"), lb
    for lb, _ in m.select("portier_config_reloads_total"):
        assert lb["result"] in ("success", "failure"), lb


def check_histogram(m: Metrics, name: str, service: str) -> int:
    """service's histogram name: the documented buckets, cumulative, +Inf equal to _count, a sum
    that is 0 when the count is; returns the count."""
    rows = sorted((float(lb["le"].replace("Inf", "inf")), v)
                  for lb, v in m.select(name + "_bucket", service=service))
    assert [le for le, _ in rows] == BUCKETS, f"{name} {service}: buckets {[r[0] for r in rows]}"
    counts = [v for _, v in rows]
    assert counts == sorted(counts), f"{name} {service}: not cumulative: {rows}"
    count = m.get(name + "_count", service=service)
    total = m.get(name + "_sum", service=service)
    assert count is not None and total is not None, f"{name} {service}: no _count or _sum"
    assert counts[-1] == count, f"{name} {service}: +Inf bucket {counts[-1]}, _count {count}"
    assert total >= 0 and (count > 0 or total == 0), f"{name} {service}: sum {total}, n {count}"
    assert count == int(count)
    return int(count)


def check_process(m: Metrics, pid: int, started_wall: float):
    """The process_* metrics are about portier's own process, as /proc tells."""
    rss = m.get("process_resident_memory_bytes")
    vsz = m.get("process_virtual_memory_bytes")
    assert rss and rss > 0 and vsz and vsz >= rss, (rss, vsz)
    real = procs.rss(pid)
    assert real / 4 < rss < real * 4, f"process_resident_memory_bytes {rss}, /proc says {real}"
    fds = m.get("process_open_fds")
    max_fds = m.get("process_max_fds")
    real_fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert fds and 0 < fds <= max_fds, (fds, max_fds)
    assert abs(fds - real_fds) <= 16, f"process_open_fds {fds}, /proc/{pid}/fd has {real_fds}"
    assert m.get("process_cpu_seconds_total") >= 0
    start = m.get("process_start_time_seconds")
    assert start and abs(start - started_wall) < 30, (
        f"process_start_time_seconds {start}, portier started at {started_wall}")


def check_status_shape(st: dict, p, workers: int, version: str):
    """/api/status has every documented field, with the documented types."""
    for key in ("version", "now", "started", "workers", "config", "ready", "problems",
                "connections", "bytes", "reload", "window_s", "routes", "default_service",
                "services"):
        assert key in st, f"/api/status has no {key}: {st}"
    assert st["version"] == version, st["version"]
    assert st["workers"] == workers and st["config"] == str(p.config), st
    assert abs(st["now"] - time.time()) < 60, st["now"]
    assert st["started"] <= st["now"], st
    assert isinstance(st["ready"], bool), st
    assert isinstance(st["problems"], list) and st["ready"] == (not st["problems"]), st
    assert set(st["connections"]) == {"handshake", "active", "idle"}, st["connections"]
    assert set(st["bytes"]) == {"in", "out"}, st["bytes"]
    assert set(st["reload"]) >= {"last", "result", "success", "failure"}, st["reload"]
    assert st["reload"]["result"] in ("success", "failure"), st["reload"]
    assert 0 <= st["window_s"] <= 60, st["window_s"]
    for r in st["routes"]:
        assert set(r) >= {"host", "path", "service", "redirect_https"}, r
    for s in st["services"]:
        for key in ("name", "source", "dns", "resolution", "health_check", "servers", "requests",
                    "codes", "rps", "error_rate", "p50_ms", "p99_ms"):
            assert key in s, f"service {s.get('name')} has no {key}: {s}"
        assert s["source"] in ("static", "dns"), s
        if s["source"] == "static":
            assert s["dns"] is None and s["resolution"] is None, s
        for srv in s["servers"]:
            assert set(srv) >= {"address", "up", "connect_errors"}, srv
            assert isinstance(srv["up"], bool), srv
        assert s["requests"] == sum(s["codes"].values()), s
        for key in ("rps", "error_rate", "p50_ms", "p99_ms"):
            assert s[key] is None or isinstance(s[key], (int, float)), (key, s)


# =============================================================================================
# Clients through portier


@dataclass(frozen=True)
class Job:
    """One request through portier: to service (as portier should route it), with Host host,
    answered with status."""

    service: str
    host: str
    target: str = "/"
    status: int = 200
    tls: bool = False


class Tally:
    """What the clients got, shared by their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes: Counter = Counter()  # (service, "code") -> answers
        self.sent = 0  # bytes sent on plain-HTTP connections
        self.received = 0  # bytes received on them
        self.connections = 0
        self.tls_connections = 0
        self.done = 0
        self.problems: List[str] = []

    def expected(self) -> Dict[tuple, int]:
        with self.lock:
            return dict(self.codes)

    def by_service(self) -> Dict[str, int]:
        out: Counter = Counter()
        for (service, _), n in self.expected().items():
            out[service] += n
        return dict(out)


class TLSConn(httpc.Conn):
    """An HTTP client connection over TLS (not verifying: these tests are about counting)."""

    CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    CTX.check_hostname = False
    CTX.verify_mode = ssl.CERT_NONE

    def __init__(self, name, timeout=TIMEOUT):
        httpc._Reader.__init__(self)
        raw = socket.create_connection(PUBLIC_TLS, timeout=timeout,
                                       source_address=(CLIENT_IP, 0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.CTX.wrap_socket(raw, server_hostname=name)
        except BaseException:
            raw.close()
            raise


class Client:
    """Sends jobs through portier on keep-alive connections, a new one every per_conn requests
    (or when portier closes), and tallies what came back."""

    def __init__(self, tally: Tally, per_conn=10):
        self.tally = tally
        self.per_conn = per_conn
        self.conn = None
        self.tls = False
        self.used = 0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _open(self, job):
        self.close()
        self.conn = TLSConn(job.host) if job.tls else httpc.Conn(PUBLIC, TIMEOUT,
                                                                 source=CLIENT_IP)
        self.tls, self.used = job.tls, 0
        with self.tally.lock:
            self.tally.connections += 1
            self.tally.tls_connections += job.tls

    def request(self, job: Job):
        try:
            if self.conn is None or self.used >= self.per_conn or self.tls != job.tls:
                self._open(job)
            data = httpc.req("GET", job.target, host=job.host)
            self.conn.send(data)
            r = self.conn.read_final("GET")
            self.used += 1
        except (OSError, EOFError, AssertionError) as e:
            self.close()
            with self.tally.lock:
                self.tally.problems.append(f"{job}: {type(e).__name__}: {e}")
                self.tally.done += 1
            return None
        with self.tally.lock:
            self.tally.codes[(job.service, str(r.status))] += 1
            self.tally.done += 1
            if not job.tls:
                self.tally.sent += len(data)
                self.tally.received += len(r.head) + len(r.raw_body)
            if r.status != job.status:
                self.tally.problems.append(f"{job}: got {r.status} {r.body[:200]!r}")
        if "close" in (r.header("Connection") or "").lower():
            self.close()
        return r


class Load:
    """Threads, each sending its plan (a list of Jobs) through a Client of its own. pause=(i,
    event): each thread waits for event (at most PAUSE_MAX seconds) before its job #i."""

    PAUSE_MAX = 30.0
    JOIN_MAX = 90.0

    def __init__(self, plans, tally, per_conn=10, pause=None):
        self.tally = tally
        self.pause = pause
        self.threads = [threading.Thread(target=self._run, args=(plan, per_conn), daemon=True)
                        for plan in plans]
        self.total = sum(len(p) for p in plans)

    def _run(self, plan, per_conn):
        c = Client(self.tally, per_conn)
        try:
            for i, job in enumerate(plan):
                if self.pause is not None and i == self.pause[0]:
                    if not self.pause[1].wait(self.PAUSE_MAX):
                        with self.tally.lock:
                            self.tally.problems.append("the pause was never released")
                c.request(job)
        finally:
            c.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        deadline = time.monotonic() + self.JOIN_MAX
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive_threads = [t for t in self.threads if t.is_alive()]
        assert not alive_threads, f"{len(alive_threads)} client threads still ran after " \
                                  f"{self.JOIN_MAX}s"


def run_load(plans, per_conn=10) -> Tally:
    tally = Tally()
    Load(plans, tally, per_conn).start().join()
    return tally


class Background(BackgroundThreads):
    """Traffic until stopped (at most max_s seconds or max_requests requests): threads cycling
    through their jobs, each pausing gap seconds between requests."""

    def __init__(self, plans, gap=0.01, max_s=90.0, max_requests=50000):
        self.tally = Tally()
        self.gap, self.max_s, self.max_requests = gap, max_s, max_requests
        super().__init__([(self._run, (p,)) for p in plans], join_s=10.0)

    def _run(self, plan):
        c = Client(self.tally, per_conn=50)
        deadline = time.monotonic() + self.max_s
        i = 0
        try:
            while (not self.stop_event.is_set() and time.monotonic() < deadline
                   and self.tally.done < self.max_requests):
                c.request(plan[i % len(plan)])
                i += 1
                self.stop_event.wait(self.gap)
        finally:
            c.close()


def malformed(tally: Tally):
    """One request with differing Content-Lengths: portier answers 400 before routing it
    (service "") and closes."""
    data = b"GET / HTTP/1.1\r\nHost: app1.com\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    with httpc.Conn(PUBLIC, TIMEOUT, source=CLIENT_IP) as c:
        c.send(data)
        r = c.read_final()
    assert r.status == 400, r
    with tally.lock:
        tally.codes[("", "400")] += 1
        tally.connections += 1


def cpu_ticks(pid) -> Dict[int, int]:
    """utime + stime of each thread of pid, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


# =============================================================================================
# 1. The listener


def attribute_values(html, tags, attr):
    """The values of attr in the start tags whose name matches the regex tags."""
    out = []
    for tag in re.findall(rf"<(?:{tags})\b[^>]*>", html, re.I):
        m = re.search(rf"\s{attr}\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))", tag, re.I)
        if m:
            out.append(next(g for g in m.groups() if g is not None))
    return out


def test_each_path_answers_get_and_head_with_its_content_type_and_nothing_else(apps, px):
    """GET and HEAD on the five documented paths answer 200 with the documented content type
    (HEAD without a body); an unknown path is 404, other methods 405 with `Allow: GET, HEAD`;
    /healthz says ok, /readyz ready; the page needs no external asset; and the public listener
    does not serve the admin paths (/metrics there is the default app's own 404)."""
    px(config())
    head_problems = []
    for path, ctype in CONTENT_TYPES.items():
        r = admin(path)
        assert r.status == 200 and r.header("Content-Type") == ctype, (path, r)
        assert r.body, (path, r)
        # HEAD, then GET on the same connection: a body after the HEAD would spoil the GET.
        with httpc.Conn(ADMIN, TIMEOUT, source=CLIENT_IP) as c:
            h = c.request("HEAD", path, host=hp(ADMIN))
            assert h.status == 200 and h.header("Content-Type") == ctype, (path, h)
            if "close" in (h.header("Connection") or "").lower():
                continue
            c.send(httpc.req("GET", "/healthz", host=hp(ADMIN)))
            try:
                r = c.read_final()
                ok = r.status == 200 and r.body.strip() == b"ok"
            except (AssertionError, ValueError, EOFError):
                ok = False
            if not ok:
                head_problems.append(f"HEAD {path}: the next answer on the connection starts "
                                     f"{c.buf[:60]!r} (the body of the HEAD's answer?)")
    assert not head_problems, "\n".join(head_problems)
    assert admin("/healthz").body.strip() == b"ok"
    assert admin("/readyz").body.strip() == b"ready"
    json.loads(admin("/api/status").body)

    page = admin("/").text
    assert "<html" in page.lower(), page[:300]
    assets = [url for tag, attr in ((r"script|img|iframe|source|video|audio", "src"),
                                     (r"link", "href"))
              for url in attribute_values(page, tag, attr) if not url.startswith("data:")]
    assert not assets, f"the status page loads assets: {assets}"

    for path in ("/nope", "/metrics/", "/metricsx", "/api", "/api/status/x", "/readyz/"):
        r = admin(path)
        assert r.status == 404, (path, r)
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        for path in ("/metrics", "/", "/readyz"):
            r = admin(path, method=method, body=b"x=1" if method in ("POST", "PUT") else b"")
            assert r.status == 405, (method, path, r)
            allow = [m.strip() for m in (r.header("Allow") or "").split(",")]
            assert allow == ["GET", "HEAD"], (method, path, r)

    # Keep-alive: several admin requests on one connection.
    with httpc.Conn(ADMIN, TIMEOUT, source=CLIENT_IP) as c:
        for path in ("/healthz", "/metrics", "/readyz", "/healthz"):
            r = c.request("GET", path, host=hp(ADMIN))
            assert r.status == 200, (path, r)
            if "close" in (r.header("Connection") or "").lower():
                break

    r = httpc.Conn.get(PUBLIC, "/metrics", host="app2.com")
    assert r.status == 404 and b"portier_" not in r.body, r


# =============================================================================================
# 2. A fresh portier


def test_a_fresh_portier_has_every_series_from_the_start(apps, px, portier_bin):
    """Before any request: every family that does not wait for an event, typed and helped;
    each service's two histograms with the documented buckets at zero and its retries at 0; no
    portier_requests_total series; every server up; no connections; portier_build_info 1 with
    `portier -v`'s version; process_* about portier's own process; no failed reload and a last
    successful load at the start; and /api/status says the same, with the config's routes and
    services in order."""
    t0 = time.time()
    p = px(config(services={
        "app1": {"servers": servers(APP1)},
        "app2": {"servers": servers(APP2),
                 "health_check": "{ path: /healthz, interval: 1s, timeout: 500ms }"},
        "app3": {"servers": servers(APP3)},
    }, routes=[("app1.com", "app1"), ("app2.com", "app2"), ("www.app2.com", "app2")]))
    t1 = time.time()
    version = portier_version(portier_bin)
    m = scrape()

    check_families(m, ALWAYS)
    for service in ("app1", "app2", "app3"):
        for h in HISTOGRAMS:
            assert check_histogram(m, h, service) == 0, (h, service)
        assert m.get("portier_retries_total", service=service) == 0, service
    counts = m.by("portier_request_duration_seconds_count", "service")
    counts.pop("", None)  # the requests answered before routing, if any
    assert counts == {"app1": 0, "app2": 0, "app3": 0}, counts
    assert not m.select("portier_requests_total"), m.select("portier_requests_total")
    up = {(lb["service"], lb["server"]): v for lb, v in m.select("portier_server_up")}
    want_up = {("app1", hp(APP1[0])): 1, ("app3", hp(APP3[0])): 1}
    want_up.update({("app2", hp(a)): 1 for a in APP2})
    assert up == want_up
    assert m.by("portier_connections", "state") == {"handshake": 0, "active": 0, "idle": 0}
    assert m.select("portier_build_info") == [({"version": version}, 1)]
    assert m.get("portier_config_reloads_total", result="failure") in (0, None)
    last = m.get("portier_config_last_reload_success_timestamp_seconds")
    assert last is not None and t0 - 5 <= last <= t1 + 5, (t0, last, t1)
    check_process(m, p.proc.pid, t0)

    st = status()
    check_status_shape(st, p, workers=2, version=version)
    assert st["ready"] is True and st["problems"] == [], st
    assert st["connections"] == {"handshake": 0, "active": 0, "idle": 0}, st
    assert st["reload"]["result"] == "success" and st["reload"]["failure"] == 0, st["reload"]
    assert abs(st["started"] - m.get("process_start_time_seconds")) < 5, st["started"]
    assert [(r["host"], r["path"], r["service"], r["redirect_https"]) for r in st["routes"]] == [
        ("app1.com", "/", "app1", False), ("app2.com", "/", "app2", False),
        ("www.app2.com", "/", "app2", False)], st["routes"]
    assert st["default_service"] == "app3"
    assert [s["name"] for s in st["services"]] == ["app1", "app2", "app3"]
    for s, addrs in zip(st["services"], (APP1, APP2, APP3)):
        assert s["source"] == "static", s
        assert [(v["address"], v["up"], v["connect_errors"]) for v in s["servers"]] == [
            (hp(a), True, 0) for a in addrs], s
        assert s["requests"] == 0 and s["codes"] == {}, s
        assert s["p50_ms"] is None and s["p99_ms"] is None, s
    hc = st["services"][1]["health_check"]
    assert hc["path"] == "/healthz" and hc["interval_s"] == 1.0, hc
    assert st["services"][0]["health_check"] is None


# =============================================================================================
# 3. Mixed traffic, checked by hand and by promtool


MIXED_SERVICES = {
    "app1": {"servers": servers(APP1)},
    "app2": {"servers": servers(APP2)},
    "app3": {"servers": servers(APP3)},
    "dead": {"servers": servers([DEAD])},  # refused: 502
    "zero": {"dns": f'"zero.test:{APP_PORT}"'},  # NXDOMAIN: no servers, 503
}
MIXED_ROUTES = TOPOLOGY_ROUTES + [("dead.test", "dead"), ("zero.test", "zero")]


def test_metrics_after_mixed_traffic_are_exact_and_pass_promtool(apps, px, cert, tmp_path):
    """Several services answering 200, 404 (the app's), 502 (a refused server), 503 (a dns
    service without records) and 400 (a malformed request, service ""), over HTTP and HTTPS on
    several connections: portier_requests_total equals what the clients got, per service and
    code; the histograms count every request; connect errors, server_up, TLS handshakes (full
    and failed), DNS resolutions, bytes and the connections held idle agree; /readyz names the
    service without servers; /api/status says the same; and `promtool check metrics` finds
    nothing to say about the scrape."""
    if not os.access(PROMTOOL_BIN, os.X_OK):
        pytest.fail(f"{PROMTOOL_BIN} is missing (Debian's prometheus: scripts/deps.sh unpacks it)",
                    pytrace=False)
    t0 = time.time()
    with dnsmasq_at(DNS, "other.test", tmp_path):
        p = px(config(MIXED_SERVICES, MIXED_ROUTES, tls=cert,
                      extra=f'resolvers: ["{hp(DNS)}"]'))
        tally = Tally()

        def handshake():
            try:
                with TLSConn("app1.com"):
                    tally.tls_connections += 1
                    return True
            except ConnectionRefusedError:
                return False

        wait_until(handshake, 5.0, f"a TLS handshake with portier on {hp(PUBLIC_TLS)}")
        plans = [
            [Job("app1", "app1.com")] * 12 + [Job("app1", "app1.com", "/nope", 404)] * 4
            + [Job("dead", "dead.test", status=502)] * 3,
            [Job("app2", "app2.com", "/api/info")] * 15 + [Job("app3", "whatever.test")] * 6,
            [Job("app2", "app2.com", "/api/info", tls=True)] * 6
            + [Job("app1", "app1.com", tls=True)] * 2,  # two TLS connections: per_conn 4
            [Job("zero", "zero.test", status=503)] * 4 + [Job("app3", "app3.com", "/healthz")] * 4,
        ]
        Load(plans, tally, per_conn=4).start().join()
        malformed(tally)
        # dead's server is in cooldown after a refusal (5 s): a request just before each look.
        extra = Client(tally)

        def dead_down():
            extra.request(Job("dead", "dead.test", status=502))
            return scrape().get("portier_server_up", service="dead", server=hp(DEAD))

        try:
            wait_until(lambda: dead_down() == 0, 10.0, "portier_server_up of dead's server 0")
        finally:
            extra.close()
        # A port probe (connect, close, nothing sent) tried no handshake: not counted.
        socket.create_connection(PUBLIC_TLS, TIMEOUT, source_address=(CLIENT_IP, 0)).close()
        # One failed TLS handshake: a ClientHello that is not one.
        with socket.create_connection(PUBLIC_TLS, TIMEOUT, source_address=(CLIENT_IP, 0)) as s:
            s.sendall(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04junk")
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
        assert not tally.problems, tally.problems
        # Two connections held idle while portier is scraped.
        idle = [httpc.Conn(PUBLIC, TIMEOUT, source=CLIENT_IP) for _ in range(2)]
        try:
            for c in idle:
                r = c.request("GET", "/", host="app1.com")
                assert r.status == 200, r
                tally.codes[("app1", "200")] += 1
                tally.connections += 1
            want = tally.expected()
            assert want[("dead", "502")] >= 4 and want[("zero", "503")] == 4, want
            settle(lambda: requests_by_code(scrape()), want, "portier_requests_total")
            settle(lambda: scrape().by("portier_connections", "state"),
                   {"handshake": 0, "active": 0, "idle": 2}, "portier_connections")
            settle(lambda: scrape().by("portier_tls_handshakes_total", "result").get("failed"),
                   1, "failed TLS handshakes")
            wait_until(lambda: scrape().get("portier_dns_resolutions_total", service="zero",
                                            result="empty"), 10.0, "zero's empty answer counted")
            r = admin("/metrics")
            m = Metrics(r.body.decode())
            st = status()
            ready = admin("/readyz")
        finally:
            for c in idle:
                c.close()

    check_families(m, [f for f in FAMILIES if f != "portier_config_reloads_total"])
    assert requests_by_code(m) == want
    per_service = tally.by_service()
    for service in MIXED_SERVICES:
        n = check_histogram(m, "portier_request_duration_seconds", service)
        assert n == per_service.get(service, 0), (service, n, per_service)
        n = check_histogram(m, "portier_upstream_response_seconds", service)
        # Every request of the apps met a response from a server; dead's and zero's none.
        if service in ("dead", "zero"):
            assert n == 0, (service, n)
        else:
            assert n == per_service[service], (service, n, per_service)
        assert m.get("portier_retries_total", service=service) is not None, service
    # The malformed request, answered before routing, is service "".
    assert check_histogram(m, "portier_request_duration_seconds", "") == per_service[""] == 1
    assert m.get("portier_retries_total", service="app2") == 0
    assert m.get("portier_upstream_connect_errors_total", service="dead",
                 server=hp(DEAD)) >= want[("dead", "502")]
    for lb, v in m.select("portier_upstream_connect_errors_total"):
        assert lb["service"] == "dead" or v == 0, (lb, v)
    up = {(lb["service"], lb["server"]): v for lb, v in m.select("portier_server_up")}
    assert up[("dead", hp(DEAD))] == 0 and up[("app1", hp(APP1[0]))] == 1, up
    assert not [k for k in up if k[0] == "zero"], up  # no servers at all
    tls = m.by("portier_tls_handshakes_total", "result")
    assert tls.get("full") == tally.tls_connections == 3 and tls.get("failed") == 1, tls
    assert not tls.get("resumed"), tls
    assert m.get("portier_dns_resolutions_total", service="zero", result="success") in (0, None)
    nbytes = m.by("portier_bytes_total", "direction")
    assert nbytes["in"] >= tally.sent and nbytes["out"] >= tally.received, (nbytes, tally.sent,
                                                                          tally.received)
    check_process(m, p.proc.pid, t0)

    # /readyz names zero (routed, no servers); dead may be out of its cooldown by now.
    assert ready.status == 503, ready
    lines = ready.text.splitlines()
    assert lines[0] == "not ready" and "service zero: no servers" in lines, ready.text
    assert all(re.fullmatch(r"service (zero|dead): .+", x) for x in lines[1:]), ready.text

    assert st["ready"] is False and "service zero: no servers" in st["problems"], st
    services = {s["name"]: s for s in st["services"]}
    assert list(services) == list(MIXED_SERVICES), list(services)
    for service in MIXED_SERVICES:
        s = services[service]
        codes = {(service, c): n for c, n in s["codes"].items()}
        assert codes == {k: v for k, v in want.items() if k[0] == service}, (service, s)
    zero = services["zero"]
    assert zero["source"] == "dns" and zero["dns"] == f"zero.test:{APP_PORT}", zero
    assert zero["resolution"]["result"] == "empty" and zero["servers"] == [], zero
    dead = services["dead"]
    assert dead["servers"][0]["address"] == hp(DEAD), dead
    assert dead["servers"][0]["connect_errors"] >= want[("dead", "502")], dead
    assert st["connections"] == {"handshake": 0, "active": 0, "idle": 2}, st["connections"]
    check_status_shape(st, p, workers=2, version=m.select("portier_build_info")[0][0]["version"])

    (tmp_path / "metrics.txt").write_bytes(r.body)
    with open(tmp_path / "metrics.txt", "rb") as f:
        res = subprocess.run([PROMTOOL_BIN, "check", "metrics"], stdin=f, capture_output=True,
                             timeout=60)
    out = (res.stdout + res.stderr).decode(errors="replace")
    assert res.returncode == 0 and not out.strip(), (
        f"promtool check metrics exited {res.returncode}:\n{out}\n(the scrape is in "
        f"{tmp_path / 'metrics.txt'})")


# =============================================================================================
# 4. A real Prometheus


class Prometheus:
    def __init__(self, proc):
        self.proc = proc
        self.base = f"http://{hp(PROMETHEUS)}"

    def get(self, path, **params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with OPENER.open(url, timeout=10) as r:
            return json.load(r)

    def query(self, q, keys) -> Dict[tuple, float]:
        """An instant query's vector as {(the values of keys, "" when absent): value}, zeros
        left out."""
        res = self.get("/api/v1/query", query=q)
        assert res["status"] == "success", res
        return {tuple(row["metric"].get(k, "") for k in keys): float(row["value"][1])
                for row in res["data"]["result"] if float(row["value"][1]) != 0}

    def target(self):
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        return targets[0] if targets else {}


@contextmanager
def prometheus(tmp_path):
    """Debian's Prometheus on PROMETHEUS, scraping ADMIN every second, its data under tmp_path;
    stopped by PID on the way out (it must exit 0)."""
    if not os.access(PROMETHEUS_BIN, os.X_OK):
        pytest.fail(f"{PROMETHEUS_BIN} is missing (Debian's prometheus: scripts/deps.sh "
                    "unpacks it)", pytrace=False)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: portier\n    static_configs:\n"
        f'      - targets: ["{hp(ADMIN)}"]\n'
    )
    argv = [PROMETHEUS_BIN, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={hp(PROMETHEUS)}", "--log.level=warn",
            f"--web.console.templates={tmp_path}", f"--web.console.libraries={tmp_path}"]
    with stopping([]) as started:
        started.append(procs.start(argv, wait_for=PROMETHEUS, timeout=30, log_dir=str(tmp_path),
                                   name="prometheus"))
        prom = Prometheus(started[0])

        def ready():
            try:
                with OPENER.open(prom.base + "/-/ready", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(ready, 30.0, "Prometheus ready")
        yield prom


def test_prometheus_scrapes_exactly_what_the_clients_got(apps, px, tmp_path):
    """A real Prometheus scrapes portier (4 workers) every second. After 2400 requests from 12
    threads over 480 connections (200, 404 and 502 on four services; at least two workers did
    work, as their threads' CPU time shows), `sum by (service, code)
    (portier_requests_total)` and the duration histograms' counts answer exactly what the
    clients got, once Prometheus has scraped after the load."""
    p = px(config({**TOPOLOGY_SERVICES, "dead": {"servers": servers([DEAD])}},
                  TOPOLOGY_ROUTES + [("dead.test", "dead")], workers=4))
    with prometheus(tmp_path) as prom:
        wait_until(lambda: prom.target().get("health") == "up", 30.0,
                   "Prometheus scraping portier successfully")
        cycle = [Job("app1", "app1.com"), Job("app2", "app2.com", "/api/info"),
                 Job("app2", "app2.com"), Job("app3", "other.test"),
                 Job("app1", "app1.com", "/missing", 404), Job("dead", "dead.test", status=502),
                 Job("app2", "app2.com", "/healthz"), Job("app3", "app3.com", "/api/info")]
        plans = [[cycle[(t + i) % len(cycle)] for i in range(200)] for t in range(12)]
        before = cpu_ticks(p.proc.pid)
        tally = run_load(plans, per_conn=5)
        after = cpu_ticks(p.proc.pid)
        assert not tally.problems, tally.problems[:20]
        assert tally.done == 2400 and tally.connections >= 480, (tally.done, tally.connections)
        busy = [t for t in after if t != p.proc.pid and after[t] > before.get(t, 0)]
        assert len(busy) >= 2, f"only threads {busy} of portier worked during the load: " \
                               f"{before} -> {after}"

        want = {k: float(v) for k, v in tally.expected().items()}
        q = "sum by (service, code) (portier_requests_total)"
        settle(lambda: prom.query(q, ("service", "code")), want, f"Prometheus' answer to {q}",
               timeout=30)
        per_service = {(k,): float(v) for k, v in tally.by_service().items()}
        q = "sum by (service) (portier_request_duration_seconds_count)"
        settle(lambda: prom.query(q, ("service",)), per_service, f"Prometheus' answer to {q}",
               timeout=30)
        q = 'sum by (service) (portier_request_duration_seconds_bucket{le="+Inf"})'
        assert prom.query(q, ("service",)) == per_service, q
        target = prom.target()
        assert target["health"] == "up" and not target.get("lastError"), target
        assert prom.query('up{job="portier"}', ("instance",)) == {(hp(ADMIN),): 1.0}


# =============================================================================================
# 5. Reloads


def test_counters_stay_exact_under_load_across_reloads(apps, backends, px):
    """8 threads send 1600 requests over 160 connections through 2 workers while two SIGHUPs
    change the config compatibly (app2's servers reordered, a route and a service added, then
    app2's order back). The first reload lands while a request is surely in flight (its origin
    holds it until the reload applied) and most likely others; the second half of every
    thread's requests starts only after it (part of them to the new route and service), and the
    second reload is sent while they run. Afterwards portier_requests_total, the duration and
    upstream histograms' counts and /api/status equal what the clients got, per service and
    code; portier_bytes_total equals the bytes sent and received; two more successful reloads
    are counted, no failure."""
    applied = threading.Event()

    def hold(req, conn):
        applied.wait(20)
        return backend.response(200, b"held")

    origin = backends(ORIGIN, hold)
    base = {**TOPOLOGY_SERVICES, "hold": {"servers": servers([ORIGIN])}}
    routes = TOPOLOGY_ROUTES + [("hold.test", "hold")]
    p = px(config(base, routes))
    m0 = scrape()
    success0 = m0.get("portier_config_reloads_total", result="success") or 0
    last0 = m0.get("portier_config_last_reload_success_timestamp_seconds")
    added = {"extra": {"servers": servers(APP1)}}
    more_routes = routes + [("www.app2.com", "app2"), ("extra.test", "extra")]
    changed = config({**base, "app2": {"servers": servers(APP2[::-1])}, **added}, more_routes)
    changed_back = config({**base, **added}, more_routes)
    first = [Job("app1", "app1.com"), Job("app2", "app2.com", "/api/info"),
             Job("app3", "other.test"), Job("app1", "app1.com", "/nope", 404)]
    second = first + [Job("app2", "www.app2.com", "/api/info"), Job("extra", "extra.test"),
                      Job("extra", "extra.test", "/nope", 404), Job("app2", "www.app2.com")]
    half = 100
    plans = [[first[(t + i) % len(first)] for i in range(half)]
             + [second[(t + i) % len(second)] for i in range(half)] for t in range(8)]
    plans.append([Job("hold", "hold.test")])  # held by its origin until the reload applied
    tally = Tally()
    load = Load(plans, tally, per_conn=10, pause=(half, applied)).start()
    try:
        wait_until(lambda: len(origin.requests) == 1 and tally.done >= 100, 30.0,
                   "the held request at its origin and 100 answers")
        write_config(p.config, changed)
        at_first = tally.done
        os.kill(p.proc.pid, signal.SIGHUP)
        reloaded(p, 1)
        applied.set()
        wait_until(lambda: tally.done >= 1000, 30.0, "1000 answers")
        write_config(p.config, changed_back)
        at_second = tally.done
        os.kill(p.proc.pid, signal.SIGHUP)
        reloaded(p, 2)
    finally:
        applied.set()
        load.join()
    assert not tally.problems, tally.problems[:20]
    assert tally.done == 1601, tally.done
    assert_alive(p, "after the load")

    want = tally.expected()
    assert want[("hold", "200")] == 1, want
    when = f"(the reloads were sent after {at_first} and {at_second} of 1601 answers)"
    settle(lambda: requests_by_code(scrape()), want, f"portier_requests_total {when}")
    settle(lambda: scrape().by("portier_bytes_total", "direction"),
           {"in": tally.sent, "out": tally.received}, f"portier_bytes_total {when}")
    m = scrape()
    per_service = tally.by_service()
    assert set(per_service) == {"app1", "app2", "app3", "extra", "hold"}, per_service
    for service, n in per_service.items():
        for h in HISTOGRAMS:
            assert check_histogram(m, h, service) == n, (h, service, n, when)
        assert m.get("portier_retries_total", service=service) == 0, service
    assert m.get("portier_config_reloads_total", result="success") == success0 + 2
    assert m.get("portier_config_reloads_total", result="failure") in (0, None)
    assert m.get("portier_config_last_reload_success_timestamp_seconds") >= last0
    services = {s["name"]: s for s in status()["services"]}
    assert list(services) == ["app1", "app2", "app3", "hold", "extra"], list(services)
    assert [v["address"] for v in services["app2"]["servers"]] == [hp(a) for a in APP2]
    for service, s in services.items():
        assert s["requests"] == per_service[service], (service, s)
        assert {(service, c): n for c, n in s["codes"].items()} == {
            k: v for k, v in want.items() if k[0] == service}, (service, s)


def test_reloads_are_counted_by_result(apps, px):
    """A good SIGHUP adds 1 to portier_config_reloads_total{result="success"} and moves the last
    successful reload's timestamp; a bad config (an unknown key) adds 1 to {result="failure"}
    and leaves the timestamp; a service the reload adds has its zero series at once; and
    /api/status's reload says each outcome."""
    p = px(config())
    m = scrape()
    s0 = m.get("portier_config_reloads_total", result="success") or 0
    f0 = m.get("portier_config_reloads_total", result="failure") or 0
    last0 = m.get("portier_config_last_reload_success_timestamp_seconds")
    st0 = status()["reload"]
    time.sleep(1.1)  # so that the next timestamp differs in whole seconds, too

    write_config(p.config, config({**TOPOLOGY_SERVICES, "more": {"servers": servers(APP3)}},
                                  TOPOLOGY_ROUTES + [("more.test", "more")]))
    os.kill(p.proc.pid, signal.SIGHUP)
    reloaded(p, 1)
    wait_until(lambda: scrape().get("portier_config_reloads_total", result="success") == s0 + 1,
               5.0, "the successful reload counted")
    m = scrape()
    assert (m.get("portier_config_reloads_total", result="failure") or 0) == f0
    last1 = m.get("portier_config_last_reload_success_timestamp_seconds")
    assert last1 > last0, (last0, last1)
    for h in HISTOGRAMS:
        assert check_histogram(m, h, "more") == 0
    assert m.get("portier_retries_total", service="more") == 0
    st1 = status()["reload"]
    assert st1["result"] == "success" and st1["success"] == st0["success"] + 1, (st0, st1)
    assert st1["failure"] == st0["failure"] and st1["last"] > st0["last"], (st0, st1)

    write_config(p.config, config() + "bogus_key: 1\n")
    os.kill(p.proc.pid, signal.SIGHUP)
    wait_until(lambda: "has errors" in p.errors(), 5.0, "the bad reload logged")
    wait_until(lambda: scrape().get("portier_config_reloads_total", result="failure") == f0 + 1,
               5.0, "the failed reload counted")
    m = scrape()
    assert m.get("portier_config_reloads_total", result="success") == s0 + 1
    assert m.get("portier_config_last_reload_success_timestamp_seconds") == last1
    assert m.get("portier_retries_total", service="more") == 0  # the old config still serves
    check_families(m, ["portier_config_reloads_total"])
    st2 = status()["reload"]
    assert st2["result"] == "failure" and st2["failure"] == st0["failure"] + 1, (st0, st2)
    assert st2["success"] == st1["success"] and st2["last"] >= st1["last"], (st1, st2)
    assert httpc.Conn.get(PUBLIC, "/healthz", host="more.test").status == 200


# =============================================================================================
# 6. /readyz


def test_readyz_follows_the_servers_of_a_service(start_app, px):
    """With an active health check on app2 (every 200 ms), /readyz is 200 while a server of each
    routed service is up; once all three app2 servers are stopped it is 503, "not ready" then
    "service app2: no server up (3 servers)", and portier_server_up and /api/status say they
    are down; when one comes back, 200 and `ready` again, that one up and the others down."""
    procs_by_addr = {addr: start_app(app, hp(addr), env={"POD_NAME": pod})
                     for app, pod, addr in APPS}
    px(config(services={
        "app1": {"servers": servers(APP1)},
        "app2": {"servers": servers(APP2),
                 "health_check": "{ path: /healthz, interval: 200ms, timeout: 100ms }"},
        "app3": {"servers": servers(APP3)},
    }))

    def ready():
        r = admin("/readyz")
        return r.status, r.text.splitlines()

    settle(ready, (200, ["ready"]), "/readyz at the start", timeout=10)
    for a in APP2:
        procs.stop(procs_by_addr[a])
    settle(ready, (503, ["not ready", "service app2: no server up (3 servers)"]),
           "/readyz with app2's servers stopped")
    h = admin("/readyz", method="HEAD")
    assert h.status == 503 and h.body == b"", h
    assert admin("/healthz").status == 200
    m = scrape()
    assert {lb["server"]: v for lb, v in m.select("portier_server_up", service="app2")} == {
        hp(a): 0 for a in APP2}
    assert m.get("portier_server_up", service="app1", server=hp(APP1[0])) == 1
    st = status()
    assert st["ready"] is False and st["problems"] == ["service app2: no server up (3 servers)"]
    assert [v["up"] for v in st["services"][1]["servers"]] == [False] * 3, st["services"][1]
    r = httpc.Conn.get(PUBLIC, "/", host="app2.com")
    assert r.status == 502, r  # every server tried

    back = APP2[1]
    start_app("app2", hp(back), env={"POD_NAME": "app2-1-again"})
    settle(ready, (200, ["ready"]), "/readyz with one app2 server back")
    m = scrape()
    assert {lb["server"]: v for lb, v in m.select("portier_server_up", service="app2")} == {
        hp(a): (1 if a == back else 0) for a in APP2}
    st = status()
    assert st["ready"] is True and st["problems"] == [], st
    assert [v["up"] for v in st["services"][1]["servers"]] == [a == back for a in APP2]
    r = httpc.Conn.get(PUBLIC, "/api/info", host="app2.com")
    assert r.status == 200 and r.json()["pod"] == "app2-1-again", r


def test_sigterm_closes_the_admin_listener_with_the_public_ones(backends, px):
    """While a request is in flight, SIGTERM closes the admin listener together with the public
    one (a draining portier answers nothing there, so a probe sees it gone); the request still
    finishes, and portier exits 0. Before, the slow request shows as one active connection."""
    release = threading.Event()

    def slow(req, conn):
        release.wait(20)
        return backend.response(200, b"slow done")

    backends(ORIGIN, slow)
    p = px(config({"slow": {"servers": servers([ORIGIN])}}, [("slow.test", "slow")],
                  default=None))
    assert admin("/readyz").status == 200
    c = httpc.Conn(PUBLIC, 30.0, source=CLIENT_IP)
    try:
        c.send(httpc.req("GET", "/", host="slow.test"))
        settle(lambda: scrape().by("portier_connections", "state"),
               {"handshake": 0, "active": 1, "idle": 0}, "the slow request active")
        os.kill(p.proc.pid, signal.SIGTERM)
        wait_until(lambda: not accepts(ADMIN) and not accepts(PUBLIC), 10.0,
                   "the admin and public listeners closed after SIGTERM")
        assert p.proc.running(), "portier exited with a request in flight"
        release.set()
        r = c.read_final()
        assert r.status == 200 and r.body == b"slow done", r
    finally:
        release.set()
        c.close()
    res = procs.wait(p.proc, timeout=15)
    assert res.returncode == 0, res.stderr


# =============================================================================================
# 7. The status page in a browser

# As test_browser.py, but every name resolves to nothing and the admin address is used as such
# (host-resolver rules apply to IP literals too, hence the EXCLUDE).
CHROMIUM_ARGS = CHROMIUM_BASE_ARGS + [
    "--hide-scrollbars",
    "--window-size=1280,900",
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {ADMIN[0]}",
]
WINDOW = (1280, 900)  # the screenshot's size

# What the page shows, by its DOM hooks (docs: data-state, data-updates, data-service,
# data-server, data-up, data-field), and what it fetched.
READ_STATUS_PAGE = """
const field = el => el.textContent.trim();
const out = {state: document.body.dataset.state, updates: document.body.dataset.updates,
             fields: {}, services: {}, order: [],
             resources: performance.getEntriesByType("resource").map(e => e.name)};
for (const f of document.querySelectorAll("[data-field]"))
    if (!f.closest("[data-service]") && !(f.dataset.field in out.fields))
        out.fields[f.dataset.field] = field(f);
for (const card of document.querySelectorAll("[data-service]")) {
    const s = {fields: {}, servers: {}, order: []};
    for (const f of card.querySelectorAll("[data-field]"))
        if (!f.closest("[data-server]") && !(f.dataset.field in s.fields))
            s.fields[f.dataset.field] = field(f);
    for (const v of card.querySelectorAll("[data-server]")) {
        const up = v.dataset.up !== undefined ? v.dataset.up
                 : (v.querySelector("[data-up]") || {dataset: {}}).dataset.up;
        s.servers[v.dataset.server] = up === undefined ? null : up;
        s.order.push(v.dataset.server);
    }
    out.services[card.dataset.service] = s;
    out.order.push(card.dataset.service);
}
return out;
"""


def number(text: Optional[str]) -> Optional[float]:
    """The number a page shows ("1,234", "52.3 req/s", "1.2k", "0.3%", "3.2 ms"); None for a
    placeholder without digits ("-", "n/a")."""
    if text is None:
        return None
    t = re.sub(r"[,\u00a0\u202f_' ]", "", text)
    m = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", t)
    if not m:
        return None
    v = float(m.group())
    suffix = t[m.end(): m.end() + 1]
    return v * {"k": 1e3, "K": 1e3, "M": 1e6}.get(suffix, 1)


@pytest.fixture
def chromium(tmp_path):
    """test_browser.py's Chromium session, with chromedriver on DRIVER and CHROMIUM_ARGS."""
    with chromium_session(tmp_path, DRIVER, CHROMIUM_ARGS) as wd:
        yield wd


def size_window(wd, width, height):
    """Makes the page's viewport width x height (the window adds its own frame)."""
    wd.call("POST", "/window/rect", {"width": width, "height": height})
    inner = wd.call("POST", "/execute/sync", {"script": "return [innerWidth, innerHeight]",
                                              "args": []})
    wd.call("POST", "/window/rect", {"width": 2 * width - inner[0],
                                     "height": 2 * height - inner[1]})


def png_size(png: bytes):
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:16]
    return struct.unpack(">II", png[16:24])


def test_status_page_shows_live_state_in_a_browser(apps, px, chromium, build_dir):
    """make run's topology (app1, app2 x3 with a health check, app3) with traffic flowing: in
    headless Chromium the status page renders (data-state ok, data-updates growing), fetching
    nothing but from the admin listener; it shows every service with its numbers and every
    server up, the connection, readiness and reload fields; a service's requests grow between
    two reads and its rate shows; a screenshot is saved for the README; then a stopped app2
    server shows data-up="false" while the others stay "true"."""
    p = px(config(services={
        "app1": {"servers": servers(APP1)},
        "app2": {"servers": servers(APP2),
                 "health_check": "{ path: /healthz, interval: 500ms, timeout: 250ms }"},
        "app3": {"servers": servers(APP3)},
    }))
    url = f"http://{hp(ADMIN)}/"
    plans = [
        [Job("app1", "app1.com"), Job("app1", "app1.com", "/api/info")],
        [Job("app2", "app2.com"), Job("app2", "app2.com", "/api/info")] * 4
        + [Job("app2", "app2.com", "/favicon.ico", 404)],
        [Job("app3", "app3.com"), Job("app3", "www.example.test", "/api/info")],
        [Job("app2", "app2.com", "/api/info")],
    ]
    with Background(plans, gap=0.01, max_s=90.0) as load:
        size_window(chromium, *WINDOW)
        chromium.call("POST", "/url", {"url": url})

        def page():
            return chromium.call("POST", "/execute/sync",
                                 {"script": READ_STATUS_PAGE, "args": []})

        def rendered():
            s = page()
            return s if s["state"] == "ok" and int(s["updates"] or 0) >= 1 else None

        wait_until(rendered, 15.0, "the status page rendered (data-state ok, data-updates >= 1)")
        first = page()
        assert first["order"] == ["app1", "app2", "app3"], first
        for name, addrs in (("app1", APP1), ("app2", APP2), ("app3", APP3)):
            s = first["services"][name]
            assert s["order"] == [hp(a) for a in addrs], (name, s)
            assert s["servers"] == {hp(a): "true" for a in addrs}, (name, s)
            for f in ("requests", "rps", "error_rate", "p50", "p99"):
                assert f in s["fields"], (name, f, s)
        for f in ("connections-handshake", "connections-active", "connections-idle", "ready",
                  "reload"):
            assert f in first["fields"], (f, first["fields"])
        for f in ("connections-handshake", "connections-active", "connections-idle"):
            assert number(first["fields"][f]) is not None, (f, first["fields"])
        r1 = number(first["services"]["app2"]["fields"]["requests"])
        assert r1 is not None, first["services"]["app2"]

        def moved():
            s = page()
            r2 = number(s["services"]["app2"]["fields"]["requests"])
            return s if r2 is not None and r2 > r1 and int(s["updates"]) > int(first["updates"]) \
                else None

        wait_until(moved, 15.0, f"app2's requests on the page growing past {r1}")

        def rates_show():
            s = page()
            return all((number(s["services"][n]["fields"]["rps"]) or 0) > 0
                       and number(s["services"][n]["fields"]["p50"]) is not None
                       for n in ("app1", "app2", "app3"))

        wait_until(rates_show, 30.0, "every service's rps above 0 and a p50 on the page")
        # A few more renders, so that the screenshot's rate charts have some history.
        n = int(page()["updates"])
        wait_until(lambda: int(page()["updates"]) >= n + 3, 30.0, "three more renders")
        shot = base64.b64decode(chromium.call("GET", "/screenshot"))
        artifacts = build_dir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "status-page.png").write_bytes(shot)
        assert png_size(shot) == WINDOW, png_size(shot)
        seen = page()
        own = [u for u in seen["resources"] if not u.startswith(url)]
        assert not own, f"the status page fetched from elsewhere than {url}: {own}"
        assert (number(seen["fields"]["connections-active"]) or 0) + \
            (number(seen["fields"]["connections-idle"]) or 0) >= 1, seen["fields"]

        stopped = APP2[2]
        procs.stop(apps["app2-2"])

        def shows_down():
            s = page()
            return s["services"]["app2"]["servers"] == {
                hp(a): ("false" if a == stopped else "true") for a in APP2}

        wait_until(shows_down, 20.0, f"{hp(stopped)} shown down (data-up false), the rest up")
        assert {v["address"]: v["up"] for v in status()["services"][1]["servers"]} == {
            hp(a): a != stopped for a in APP2}
        assert page()["state"] == "ok"
    assert not load.tally.problems, load.tally.problems[:20]
    assert_alive(p, "after the browser test")
