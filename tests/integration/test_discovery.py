"""DNS discovery against a real DNS server on loopback: dnsmasq serving app2.test from a hosts file
it re-reads on SIGHUP, as a headless Service's records change when pods come and go.

Every test runs a bounded load through portier while the records change and asserts that no
request fails: scaling 3 -> 5 -> 2, the DNS server going away, and a rolling replacement of every
replica (start the new pod, update the records, SIGTERM the old one).
"""

import http.client
import json
import re
import socket
import struct
import threading
import time

import pytest

import procs
from conftest import dnsmasq_at, wait_until

DNS = ("127.0.0.53", 28453)
APP_PORT = 28480
PORTIER = ("127.0.0.1", 28481)
NAME = "app2.test"
# Records change by SIGHUP; with TTL 1 s portier looks again within about a second.
FOLLOW_S = 4.0

CONFIG = f"""
listen:
  - address: "{PORTIER[0]}:{PORTIER[1]}"
workers: 2
routes:
  - host: app2.com
    service: app2
services:
  app2:
    dns: "{NAME}:{APP_PORT}"
resolvers: ["{DNS[0]}:{DNS[1]}"]
access_log: off
"""


@pytest.fixture
def dnsmasq(tmp_path):
    with dnsmasq_at(DNS, NAME, tmp_path) as d:
        yield d


class Load:
    """Requests through portier, one keep-alive connection, until stopped; records what answered."""

    def __init__(self):
        self.seen = []  # (monotonic time, pod)
        self.failures = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = http.client.HTTPConnection(*PORTIER, timeout=5)
        deadline = time.monotonic() + 60  # a hard bound, whatever the test does
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", "/api/info", headers={"Host": "app2.com"})
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    self.failures.append(f"{r.status}: {body[:200]!r}")
                else:
                    self.seen.append((time.monotonic(), json.loads(body)["pod"]))
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(*PORTIER, timeout=5)
            time.sleep(0.005)
        conn.close()

    def pods_since(self, t):
        return {pod for when, pod in self.seen if when >= t}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


def wait_for_pods(load, since, expected, timeout=FOLLOW_S):
    """Waits until the requests after `since` came from exactly `expected` pods (recent ones)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = load.pods_since(max(since, time.monotonic() - 0.5))
        if recent == expected:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"pods answering: {sorted(load.pods_since(time.monotonic() - 0.5))}, "
        f"expected {sorted(expected)}"
    )


def pod_ip(i):
    return f"127.0.0.{30 + i}"


def start_pods(start_app, ids):
    return {
        i: start_app("app2", f"{pod_ip(i)}:{APP_PORT}", env={"POD_NAME": f"pod-{i}"}) for i in ids
    }


def test_scale_up_and_down_without_a_failed_request(dnsmasq, start_app, start_portier):
    start_pods(start_app, range(1, 6))
    dnsmasq.set([pod_ip(i) for i in (1, 2, 3)])
    start_portier(CONFIG, addr=PORTIER)
    with Load() as load:
        wait_for_pods(load, 0, {"pod-1", "pod-2", "pod-3"})
        t = time.monotonic()
        dnsmasq.set([pod_ip(i) for i in (1, 2, 3, 4, 5)])
        wait_for_pods(load, t, {f"pod-{i}" for i in range(1, 6)})
        t = time.monotonic()
        dnsmasq.set([pod_ip(i) for i in (4, 5)])
        wait_for_pods(load, t, {"pod-4", "pod-5"})
    assert load.failures == []


def test_dns_server_gone_keeps_the_last_servers(dnsmasq, start_app, start_portier):
    start_pods(start_app, (1, 2))
    dnsmasq.set([pod_ip(1), pod_ip(2)])
    p = start_portier(CONFIG, addr=PORTIER)
    with Load() as load:
        wait_for_pods(load, 0, {"pod-1", "pod-2"})
        procs.stop(dnsmasq.proc)
        t = time.monotonic()
        time.sleep(FOLLOW_S)
        assert load.pods_since(t) == {"pod-1", "pod-2"}
        # evdns gives up after 2 attempts of 2 s: then the failure is logged, once.
        p.proc.wait_for_output("cannot resolve app2.test; keeping its last servers", timeout=8)
        time.sleep(2.5)
        assert load.pods_since(t) == {"pod-1", "pod-2"}
    assert load.failures == []
    assert p.errors().count("cannot resolve app2.test") == 1


def test_scaled_to_zero_is_503_and_back(dnsmasq, start_app, start_portier):
    start_pods(start_app, (1,))
    dnsmasq.set([])
    start_portier(CONFIG, addr=PORTIER)
    conn = http.client.HTTPConnection(*PORTIER, timeout=5)
    conn.request("GET", "/api/info", headers={"Host": "app2.com"})
    r = conn.getresponse()
    assert r.status == 503, r.read()
    r.read()
    dnsmasq.set([pod_ip(1)])
    deadline = time.monotonic() + FOLLOW_S
    while True:
        conn.request("GET", "/api/info", headers={"Host": "app2.com"})
        r = conn.getresponse()
        body = r.read()
        if r.status == 200:
            assert json.loads(body)["pod"] == "pod-1"
            break
        assert time.monotonic() < deadline, f"still {r.status} after the record came back"
        time.sleep(0.2)
    conn.close()


def test_rolling_replacement_costs_no_request(dnsmasq, start_app, start_portier):
    """Each of three replicas replaced in turn: the new pod starts, the records change, the old
    pod gets SIGTERM at once (no preStop pause here, the harder case). Refused connections go
    to the next server and a pooled connection that died unused is retried, so nothing fails."""
    live = start_pods(start_app, (1, 2, 3))
    dnsmasq.set([pod_ip(i) for i in live])
    start_portier(CONFIG, addr=PORTIER)
    with Load() as load:
        wait_for_pods(load, 0, {"pod-1", "pod-2", "pod-3"})
        for old, new in ((1, 4), (2, 5), (3, 6)):
            live.update(start_pods(start_app, (new,)))
            ips = [pod_ip(i) for i in live if i != old]
            dnsmasq.set(ips)
            result = procs.stop(live.pop(old))
            assert result.returncode == 0, result.stderr
            time.sleep(0.5)
        t = time.monotonic()
        wait_for_pods(load, t, {"pod-4", "pod-5", "pod-6"})
    assert load.failures == []
    assert len(load.seen) > 100


# --- names are absolute: a pod's search list never comes first --------------------------------
#
# In a pod (dnsPolicy ClusterFirstWithHostNet) resolv.conf has a search list and ndots:5, so a
# name with fewer than five dots would be tried under each search domain before as written. Each
# case below puts a bad search domain in the list: one whose DNS server is gone, one that fails,
# one with a wildcard record that would answer for any name. portier reads the pod-style file
# (PORTIER_RESOLV_CONF), its nameserver is dnsmasq, which logs every query it gets.

POD_NAME_DNS = "app2.apps.test"  # three dots, fewer than ndots
BAD_DOMAINS = {
    # Forwarded to an address where nothing answers: every query there times out.
    "dead": ["--server=/dead.example/127.0.0.59#28459"],
    # Forwarded to a port that refuses: dnsmasq answers the client with a failure.
    "servfail": ["--server=/servfail.example/127.0.0.1#28458"],
    # Any name in the domain resolves, to an address with no pod on it.
    "wild": ["--address=/wild.example/127.0.0.99"],
}


PROBE_IP = "127.0.0.54"


def answers_a(addr, name):
    """Whether the DNS server at addr answers an A query for name with at least one record."""
    q = struct.pack(">HHHHHH", 0x5054, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((PROBE_IP, 0))  # apart from portier's queries in dnsmasq's log
        s.settimeout(0.5)
        try:
            s.sendto(q, addr)
            r = s.recv(512)
        except OSError:
            return False
    return len(r) >= 12 and struct.unpack(">H", r[6:8])[0] > 0


@pytest.mark.parametrize("trailing_dot", [False, True], ids=["as-written", "trailing-dot"])
@pytest.mark.parametrize("bad", sorted(BAD_DOMAINS))
def test_dns_names_are_looked_up_as_written_never_through_the_search_list(
        tmp_path, start_app, start_portier, bad, trailing_dot):
    log = tmp_path / "queries.log"
    extra = ["--log-queries", f"--log-facility={log}", *BAD_DOMAINS[bad]]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"search portier.svc.test svc.test {bad}.example\n"
                      f"nameserver {DNS[0]}:{DNS[1]}\noptions ndots:5\n")
    name = POD_NAME_DNS + ("." if trailing_dot else "")
    config = CONFIG.replace(f'dns: "{NAME}:{APP_PORT}"', f'dns: "{name}:{APP_PORT}"').replace(
        f'resolvers: ["{DNS[0]}:{DNS[1]}"]\n', "")
    with dnsmasq_at(DNS, POD_NAME_DNS, tmp_path, extra) as d:
        start_pods(start_app, (1, 2))
        d.set([pod_ip(1), pod_ip(2)])
        # dnsmasq re-reads its hosts file on SIGHUP a moment later: portier's first round must
        # find the records, or the service starts empty (503) until the next round.
        wait_until(lambda: answers_a(DNS, POD_NAME_DNS), 5.0, "dnsmasq answering the name")
        start_portier(config, addr=PORTIER, env={"PORTIER_RESOLV_CONF": str(resolv)})
        with Load() as load:
            wait_for_pods(load, 0, {"pod-1", "pod-2"})
            time.sleep(2.5)  # a few more rounds (TTL 1 s)
        assert load.failures == []
    queries = [(t, n) for t, n, src in re.findall(r"query\[(A|AAAA)\] (\S+) from (\S+)",
                                                log.read_text()) if src != PROBE_IP]
    asked = {q[1].lower() for q in queries}  # evdns randomizes the case (DNS 0x20)
    assert asked == {POD_NAME_DNS}, f"names asked: {sorted(asked)}"
    a, aaaa = (sum(1 for t, _ in queries if t == k) for k in ("A", "AAAA"))
    # One A and one AAAA query per round, nothing else: rounds of about a second for 3 s or more.
    assert a == aaaa and 2 <= a <= 15, f"{a} A and {aaaa} AAAA queries"
