"""Black-box regression tests for issue 10, "portier's connection layer, robust by construction".

One section per item of the issue; each test's docstring says what broke. DESIGN.md ("The shape of
a connection", "Configuration", "What portier promises on the wire") is the contract:

  1. pipelining is a loop, not a chain: 100,000 pipelined requests cost no stack
  2. every wait has a timer: a request body that stalls meets `client_body`
  3. a client that stops reading is cut after `client_idle`, and blamed, not the server
  4. half-close: a client's FIN after its requests still gets every answer
  5. Upgrade: bytes sent right behind the upgrade request reach the server
  6. broken responses: 502 while nothing went out, never a padded or silently cut body
  7. safe retries: an idempotent request whose server said nothing goes to the next server
  8. active health checks, once per process
  9. interim responses are bounded
 10. Forwarded from an untrusted peer is dropped
 11. request trailers cannot smuggle framing or forwarding fields
 13. every error path, followed by pipelined requests, under ASan too
 (12, `portier -t`, lives in test_portier_cli.py.) Plus the new `-d` flag.

Addresses (no other test file uses them): portier on PX (127.0.0.70:28700); fake origins on
127.0.0.71-74:28701-28704, and on 127.0.0.71-72:28730 behind DNS (backend.py, or RawOrigin below
when a test must act before a request is complete or push more than backend.py should keep in
memory); the apps on 127.0.0.71-74:28720; nothing listens on DEAD (127.0.0.76:28706); BLACKHOLE
(127.0.0.77:28707) drops SYNs; dnsmasq on 127.0.0.78:28708 (nobody on :28709). Clients connect from
CLIENT_IP (127.0.0.79), so that error-log lines naming the client can be told apart. Nothing leaves
loopback. Every process is stopped by PID at teardown (conftest.stopping), every thread is joined,
every socket operation and every test is bounded in time.
"""

import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from typing import List, Optional

import pytest

import backend as fake
import httpc
import procs
from conftest import Portier, assert_alive, blackhole_at, dnsmasq_at, stopping, wait_until

PX = ("127.0.0.70", 28700)
O1 = ("127.0.0.71", 28701)
O2 = ("127.0.0.72", 28702)
O3 = ("127.0.0.73", 28703)
O4 = ("127.0.0.74", 28704)
DEAD = ("127.0.0.76", 28706)  # nothing listens here: connections are refused
BLACKHOLE = ("127.0.0.77", 28707)  # a listener whose backlog is full: SYNs are dropped
DNS = ("127.0.0.78", 28708)
NO_DNS = "127.0.0.78:28709"  # a resolver nobody runs: a dns: service there stays empty (503)
CLIENT_IP = "127.0.0.79"
APP_PORT = 28720
TIMEOUT = 5.0  # every client socket operation, unless told
MIB = 1 << 20

ASAN = os.environ.get("PORTIER_BUILD", "").rstrip("/").endswith("/asan")


def hp(addr):
    return f"{addr[0]}:{addr[1]}"


# ---------------------------------------------------------------------------------------------
# Configs and portier


def config(services, routes=(), default=None, workers=2, timeouts="", extra="", listen=PX):
    """A portier config on listen.

    services: {name: spec}; spec is a list of addresses, "dns:NAME:PORT", or (list or dns, health)
    where health is the inside of the health_check mapping. routes: [(host, service)]. timeouts:
    extra entries of the timeouts mapping ("client_body: 1s"); extra: YAML lines appended.
    """
    out = ["listen:", f'  - address: "{hp(listen)}"', f"workers: {workers}"]
    if routes:
        out.append("routes:")
        for host, service in routes:
            out += [f'  - host: "{host}"', f"    service: {service}"]
    if default:
        out.append(f"default_service: {default}")
    out.append("services:")
    for name, spec in services.items():
        health = None
        if isinstance(spec, tuple):
            spec, health = spec
        out.append(f"  {name}:")
        if isinstance(spec, str):
            out.append(f'    dns: "{spec[4:]}"')
        else:
            out.append("    servers: [" + ", ".join(f'"{hp(s)}"' for s in spec) + "]")
        if health:
            out.append(f"    health_check: {{ {health} }}")
    t = "shutdown_grace: 1s" + (", " + timeouts if timeouts else "")
    out.append(f"timeouts: {{ {t} }}")
    if extra:
        out.append(extra)
    return "\n".join(out) + "\n"


@pytest.fixture
def start_px(portier_bin, tmp_path):
    """start_px(yaml_text, args=()) starts `portier [args] -c FILE` and waits until PX accepts;
    conftest's start_portier, plus command-line flags (-d). Stopped by PID at teardown, where it
    must exit 0 without a sanitizer report."""
    started: List[procs.Proc] = []

    def _start(yaml_text, args=(), addr=PX):
        cfg = tmp_path / f"portier-{len(started)}.yaml"
        cfg.write_text(yaml_text)
        p = procs.start(
            [str(portier_bin), *args, "-c", str(cfg)],
            env={},
            wait_for=addr,
            log_dir=str(tmp_path),
            name="portier",
        )
        started.append(p)
        return Portier(proc=p, config=cfg, addr=addr)

    with stopping(started):
        yield _start


def access_json(p, rid, timeout=3.0):
    """The JSON access-log line of the request with id rid (access_log_format: json)."""
    found = []

    def have():
        found[:] = [
            json.loads(line) for line in p.log().splitlines() if f'"request_id":"{rid}"' in line
        ]
        return bool(found)

    wait_until(have, timeout, f"an access-log line with request_id {rid}")
    assert len(found) == 1, found
    return found[0]


def error_lines(p, *needles):
    """portier's error-log lines (stderr) containing every needle (case-insensitive)."""
    return [
        line for line in p.errors().splitlines() if all(n.lower() in line.lower() for n in needles)
    ]


# ---------------------------------------------------------------------------------------------
# Clients


class Client(httpc.Conn):
    """A connection to PX from CLIENT_IP (httpc.Conn), to Host x.test unless told."""

    host = "x.test"

    def __init__(self, addr=PX, timeout=TIMEOUT):
        super().__init__(addr, timeout, source=CLIENT_IP)


def req(method="GET", target="/", host=Client.host, **kw):
    return httpc.req(method, target, host, **kw)


def read_all_responses(c, method="GET", limit=100):
    """Final responses until the server closes; returns them (the close ends the list)."""
    got = []
    for _ in range(limit):
        try:
            got.append(c.read_final(method))
        except (httpc.Closed, ConnectionResetError):
            assert c.buf == b"", f"half a response before the close: {c.buf[:300]!r}"
            return got
    raise AssertionError(f"more than {limit} responses")


CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)


class PipelineResult:
    def __init__(self):
        self.statuses: List[int] = []
        self.values: list = []  # body_fn(status, body) per response, when given
        self.eof = False  # the server closed before every response came
        self.read_error: Optional[str] = None
        self.write_error: Optional[str] = None
        self.elapsed = 0.0

    def summary(self):
        return (
            f"{len(self.statuses)} responses {dict(Counter(self.statuses))}, eof={self.eof}, "
            f"read error={self.read_error}, write error={self.write_error}, "
            f"{self.elapsed:.1f}s"
        )


def pipeline(addr, batches, expect, body_fn=None, timeout=120.0):
    """Writes each bytes of batches on one connection from a thread while another reads and
    parses responses (framed by Content-Length: portier's pages and the apps' all carry it)
    until expect of them came, the server closed, or timeout seconds passed."""
    res = PipelineResult()
    sock = socket.create_connection(addr, timeout=30.0, source_address=(CLIENT_IP, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def writer():
        try:
            for b in batches:
                sock.sendall(b)
        except OSError as e:
            res.write_error = repr(e)

    def reader():
        buf = bytearray()
        pos = 0
        while len(res.statuses) < expect:
            try:
                data = sock.recv(MIB)
            except OSError as e:
                res.read_error = repr(e)
                return
            if not data:
                res.eof = True
                return
            buf += data
            while len(res.statuses) < expect:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                head = bytes(buf[pos : end + 2])
                status = int(head[9:12])
                m = CONTENT_LENGTH.search(head)
                if m is None:
                    res.read_error = f"a response without Content-Length: {head[:300]!r}"
                    return
                n = int(m.group(1))
                if len(buf) < end + 4 + n:
                    break
                res.statuses.append(status)
                if body_fn is not None:
                    res.values.append(body_fn(status, bytes(buf[end + 4 : end + 4 + n])))
                pos = end + 4 + n
            if pos > MIB:
                del buf[:pos]
                pos = 0

    t0 = time.monotonic()
    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    threads[1].join(timeout)
    res.elapsed = time.monotonic() - t0
    if threads[1].is_alive():
        res.read_error = res.read_error or f"still reading after {timeout}s"
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
    for t in threads:
        t.join(10)
    return res


# ---------------------------------------------------------------------------------------------
# RawOrigin: a fake origin that acts on a connection's bytes as they come (backend.py only hands
# its handlers whole requests) and pushes big bodies without keeping them.


class _Stop(Exception):
    pass


class RawConn:
    POLL = 0.05

    def __init__(self, origin, sock, cid):
        self.origin = origin
        self.sock = sock
        self.id = cid
        self.buf = b""
        self.received = 0
        self.opened_at = time.monotonic()
        self.ended_at: Optional[float] = None  # when the proxy ended it (EOF, reset, failed send)
        self.target = None
        sock.settimeout(self.POLL)

    def _ended(self):
        if self.ended_at is None:
            self.ended_at = time.monotonic()

    def recv(self, timeout):
        """Some bytes, or b"" once the proxy ended the connection."""
        deadline = time.monotonic() + timeout
        while True:
            if self.origin.stopping.is_set():
                raise _Stop()
            if time.monotonic() >= deadline:
                raise socket.timeout("RawConn.recv")
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self._ended()
                return b""
            self.received += len(data)
            return data

    def read_head(self, timeout=10.0):
        """The next request head (through its blank line), or None if the proxy ended first."""
        while b"\r\n\r\n" not in self.buf:
            data = self.recv(timeout)
            if not data:
                return None
            self.buf += data
        i = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:i], self.buf[i:]
        self.target = head.split(b" ", 2)[1].decode("latin-1")
        return head

    def sink(self, timeout=60.0):
        """Reads (and drops) everything until the proxy ends the connection."""
        deadline = time.monotonic() + timeout
        while self.recv(max(0.0, deadline - time.monotonic())):
            pass

    def push(self, data):
        """Sends data; False (and ended_at set) if the proxy ended the connection first."""
        view = memoryview(data)
        while view:
            if self.origin.stopping.is_set():
                raise _Stop()
            try:
                n = self.sock.send(view)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                self._ended()
                return False
            view = view[n:]
        return True


class RawOrigin(fake.ThreadedOrigin):
    """Accepts on addr and runs handler(conn) for each connection in a thread of its own. conns
    lists every RawConn in accept order; stop() ends and joins everything, and fails on a
    handler's exception."""

    def __init__(self, addr, handler):
        self.handler = handler
        super().__init__(addr)

    def adopt(self, sock, index):
        return RawConn(self, sock, index)

    def serve(self, conn):
        try:
            self.handler(conn)
        except _Stop:
            pass

    def describe(self, conn, exc):
        return f"conn {conn.id}: {type(exc).__name__}: {exc}"

    def stop(self):
        super().stop()
        assert not self.errors, "origin handler errors:\n" + "\n".join(self.errors)


def named(name):
    """A backend.py handler answering 200 "NAME TARGET" with an X-Origin header, to tell origins
    apart (HEAD responses too)."""

    def h(r, conn):
        body = f"{name} {r.target}".encode()
        if r.method == "HEAD":
            return fake.response(200, b"", [("X-Origin", name), ("Content-Length", len(body))])
        return fake.response(200, body, [("X-Origin", name)])

    return h


@pytest.fixture
def blackhole():
    """A listener on BLACKHOLE whose backlog is full: a connect there hangs until its timeout."""
    with blackhole_at(BLACKHOLE) as addr:
        yield addr


# =============================================================================================
# 1. No recursion: pipelined requests are a loop, not a chain.
#
# A slow first answer lets the pipelined requests pile up in portier's input buffer; then each
# refusal (404, 503) used to start the next request from inside the previous one's completion,
# one stack frame chain per request, until the worker's stack overflowed (SIGSEGV).

PIPELINED = 100_000
BATCH = 1000
ONE_404 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # no default_service: an unknown host is 404


def slow_handler(r, conn):
    conn.wait_stop(0.5)
    return fake.response(200, b"slow")


def assert_in_order(res, expect):
    """res.statuses == expect, summarised (the lists are 100,001 long)."""
    got = res.statuses
    if got == expect:
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(got, expect)) if a != b), min(len(got), len(expect))
    )
    pytest.fail(
        f"wanted {len(expect)} responses {dict(Counter(expect))}; got {res.summary()}; first "
        f"difference at #{first}: {got[first:first + 3]} for {expect[first:first + 3]}",
        pytrace=False,
    )


def test_100000_pipelined_404s_behind_a_slow_answer_do_not_overflow_the_stack(
    backends, start_px
):
    """Regression: portier died of SIGSEGV (stack overflow: respond_error -> conn_next_request
    -> conn_read_head -> exchange_start -> respond_error ...). Every answer must come, in order."""
    backends(O1, slow_handler)
    p = start_px(config({"slow": [O1]}, routes=[("slow.test", "slow")], extra="access_log: off"))
    batches = itertools.chain(
        [req("GET", "/slow", host="slow.test")],
        (ONE_404 * BATCH for _ in range(PIPELINED // BATCH)),
    )
    res = pipeline(p.addr, batches, PIPELINED + 1)
    assert_alive(p, f"after {res.summary()}")
    assert_in_order(res, [200] + [404] * PIPELINED)


def test_100000_pipelined_503s_behind_a_slow_answer_do_not_overflow_the_stack(backends, start_px):
    """The same chain through the 503 path (a service with no servers): a dns: service whose
    resolver never answers is empty (a static list may not be: DESIGN.md), and reached the crash."""
    backends(O1, slow_handler)
    spec = "dns:empty.portier-test.invalid:28701"
    extra = f'access_log: off\nresolvers: ["{NO_DNS}"]'
    p = start_px(
        config(
            {"slow": [O1], "empty": spec},
            routes=[("slow.test", "slow"), ("empty.test", "empty")],
            extra=extra,
        )
    )
    one = req("GET", "/", host="empty.test")
    batches = itertools.chain(
        [req("GET", "/slow", host="slow.test")], (one * BATCH for _ in range(PIPELINED // BATCH))
    )
    res = pipeline(p.addr, batches, PIPELINED + 1)
    assert_alive(p, f"after {res.summary()}")
    assert_in_order(res, [200] + [503] * PIPELINED)


REQUESTS_FIELD = re.compile(rb'"requests":(\d+)')


def test_100000_pipelined_gets_to_an_app_are_all_answered_in_order(start_app, start_px):
    """The good path: 100,000 pipelined GETs on one connection, each answered by app1 in order
    (its request counter goes up by one per response)."""
    start_app("app1", f"{O4[0]}:{APP_PORT}")
    p = start_px(config({"app1": [(O4[0], APP_PORT)]}, default="app1", extra="access_log: off"))
    one = req("GET", "/api/info", host="app1.com")

    def counter(status, body):
        m = REQUESTS_FIELD.search(body)
        return int(m.group(1)) if m else None

    res = pipeline(p.addr, (one * BATCH for _ in range(PIPELINED // BATCH)), PIPELINED, counter)
    assert_alive(p, f"after {res.summary()}")
    assert_in_order(res, [200] * PIPELINED)
    first = res.values[0]
    assert res.values == list(range(first, first + PIPELINED)), "answers out of order"


# =============================================================================================
# 2. A request body can stall forever -> timeouts.client_body.
#
# Nothing was armed while portier waited for body bytes: a client that sent a head and part of a
# body held a client connection and a server connection open forever.


def sink(conn):
    """An origin that reads whatever comes and never answers."""
    conn.sink()


STALL_CONFIG = dict(timeouts="client_body: 1s, upstream_response: 30s, client_idle: 30s")


def assert_origin_conns_closed(o, since, within):
    """Every connection the origin accepted is ended by portier within `within` s of since."""
    wait_until(
        lambda: all(c.ended_at is not None for c in o.conns),
        within + 2.0,
        f"portier closing all its server connections ({sum(c.ended_at is None for c in o.conns)}"
        f" of {len(o.conns)} still open)",
    )
    late = [round(c.ended_at - since, 2) for c in o.conns if c.ended_at - since > within]
    assert not late, f"server connections closed {late}s after the client went silent"


def test_a_stalled_request_body_gets_408_after_client_body(raw_origins, start_px):
    """20 clients send a head with Content-Length: 1000 and 2 body bytes, then nothing: each gets
    408 about client_body (1 s) later and is closed; no server connection is held open."""
    o = raw_origins(O1, sink)
    p = start_px(config({"s": [O1]}, default="s", **STALL_CONFIG))
    clients = [Client() for _ in range(20)]
    try:
        for c in clients:
            c.send(req("POST", "/stall", headers=[("Content-Length", "1000")]) + b"ab")
        t0 = time.monotonic()
        for i, c in enumerate(clients):
            try:
                r = c.read_final("POST")
            except (httpc.Closed, ConnectionResetError, socket.timeout) as e:
                r = e
            assert not isinstance(r, Exception), f"client {i}: no 408 within {TIMEOUT}s: {r!r}"
            elapsed = time.monotonic() - t0
            assert r.status == 408, (i, r)
            assert 0.7 <= elapsed <= 3.5, f"client {i}: 408 after {elapsed:.2f}s, client_body 1s"
            c.assert_closed()
    finally:
        for c in clients:
            c.close()
    assert_origin_conns_closed(o, t0, 3.5)
    assert p.proc.running()


def test_expect_100_continue_without_the_body_gets_408_after_client_body(raw_origins, start_px):
    """A client sends `Expect: 100-continue`, gets 100 Continue, and never sends the body: 408
    after client_body, and the server connection (if one was opened) is closed."""
    o = raw_origins(O1, sink)
    start_px(config({"s": [O1]}, default="s", **STALL_CONFIG))
    with Client() as c:
        c.send(
            req("POST", "/upload", headers=[("Content-Length", "1000"), ("Expect", "100-continue")])
        )
        interim = c.read_response("POST")
        assert interim.status == 100, interim
        t0 = time.monotonic()
        r = c.read_final("POST")
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert 0.7 <= elapsed <= 3.5, f"408 {elapsed:.2f}s after 100 Continue, client_body 1s"
        c.assert_closed()
    assert_origin_conns_closed(o, t0, 3.5)


def test_a_trickling_body_is_not_cut_by_client_body(backends, start_px):
    """client_body is the longest silence between reads, not a total: one byte every 0.5 s for
    4 s (client_body 1 s) arrives whole."""
    b = backends(O1)
    start_px(config({"s": [O1]}, default="s", **STALL_CONFIG))
    body = b"trickle!"
    with Client() as c:
        c.send(req("POST", "/trickle", headers=[("Content-Length", str(len(body)))]))
        for byte in body:
            time.sleep(0.5)
            c.send(bytes([byte]))
        r = c.read_final("POST")
        assert r.status == 200 and r.body == b"ok POST /trickle\n", r
    assert b.wait_requests(1)[0].body == body


# =============================================================================================
# 3. A client that stops reading a response is cut after client_idle.
#
# Back-pressure paused the server connection, whose response timer then fired: the client was cut
# only after upstream_response, the server was blamed ("response timeout").

BIG = 64 * MIB


def big_or_named(name):
    block = bytes(range(256)) * 4096  # 1 MiB

    def handler(conn):
        while True:
            head = conn.read_head(timeout=30.0)
            if head is None:
                return
            if conn.target == "/big":
                if not conn.push(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG):
                    return
                for _ in range(BIG // MIB):
                    if not conn.push(block):
                        return
            else:
                body = f"{name} {conn.target}".encode()
                if not conn.push(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body)):
                    return

    return handler


def test_a_client_that_stops_reading_is_cut_after_client_idle_and_blamed(raw_origins, start_px):
    """The client asks for 64 MiB and reads nothing: about client_idle (1 s) later portier ends
    the exchange (the origin sees its connection end), the client gets EOF short of the body, the
    log blames the client's stall, and the origin is not marked failed."""
    origins = {n: raw_origins(a, big_or_named(n)) for n, a in (("a", O1), ("b", O2))}
    p = start_px(
        config(
            {"s": [O1, O2]},
            default="s",
            timeouts="client_idle: 1s, upstream_response: 5s",
        )
    )
    with Client(timeout=10.0) as c:
        c.send(req("GET", "/big"))
        t0 = time.monotonic()
        wait_until(lambda: any(o.conns and o.conns[0].target == "/big" for o in origins.values()),
                   3.0, "an origin got /big")
        (served,) = [n for n, o in origins.items() if o.conns and o.conns[0].target == "/big"]
        big = origins[served].conns[0]
        deadline = t0 + 8.0
        while big.ended_at is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert big.ended_at is not None, "portier still held the exchange 8 s into the stall"
        cut = big.ended_at - t0
        assert 0.7 <= cut <= 3.0, (
            f"cut {cut:.2f}s into the stall; client_idle is 1s (the old code cut it at "
            f"upstream_response, 5s, and blamed the server)"
        )
        got = 0
        c.sock.settimeout(5.0)
        try:
            while True:
                data = c.sock.recv(MIB)
                if not data:
                    break
                got += len(data)
        except ConnectionResetError:
            pass
        assert got < BIG, f"the client got all {got} bytes: the connection was not cut"
    lines = [
        line for line in error_lines(p, CLIENT_IP)
        if "stall" in line.lower() or "stopped reading" in line.lower()
    ]
    assert lines, f"no error-log line blames client {CLIENT_IP}'s stall:\n{p.errors()}"
    for bad in ("response timeout", "upstream timeout", "server timeout"):
        assert not error_lines(p, bad), f"the server was blamed:\n{p.errors()}"
    # Not marked failed: both origins keep getting requests.
    answered = Counter()
    for i in range(6):
        with Client() as c2:
            r = c2.request("GET", f"/after/{i}")
        assert r.status == 200, r
        answered[r.text.split()[0]] += 1
    assert answered[served] >= 2, f"after the stall, the origin that served it got {answered}"


# =============================================================================================
# 4. Half-close: a client that sends its requests then shutdown(SHUT_WR) gets every answer.
#
# portier took the FIN for "the client gave up": on a fresh server connection it answered 0 of 1;
# with a pooled one it answered the first and dropped the rest.


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-server-conn", "pooled-server-conn"])
def test_requests_then_half_close_get_every_answer(backends, start_px, n, pooled):
    backends(O1)
    start_px(config({"s": [O1]}, default="s", workers=1))
    if pooled:
        with Client() as c:
            r = c.request("GET", "/warm-up")
            assert r.status == 200, r
    targets = [f"/hc/{i}" for i in range(n)]
    with Client() as c:
        c.send(b"".join(req("GET", t) for t in targets))
        c.sock.shutdown(socket.SHUT_WR)
        got = read_all_responses(c)
    assert [(r.status, r.text) for r in got] == [(200, f"ok GET {t}\n") for t in targets], (
        f"{len(got)} of {n} answered before the close"
    )


def test_a_request_piped_into_netcat_gets_the_app_page(start_app, start_px):
    """`printf 'GET / HTTP/1.1\\r\\nHost: app1.com\\r\\n\\r\\n' | nc -N HOST PORT` (nc sends a
    FIN at the end of its input) prints app1's page. Without netcat-openbsd, the same with a
    socket."""
    start_app("app1", f"{O4[0]}:{APP_PORT}")
    start_px(config({"app1": [(O4[0], APP_PORT)]}, routes=[("app1.com", "app1")]))
    data = b"GET / HTTP/1.1\r\nHost: app1.com\r\n\r\n"
    nc = shutil.which("nc")
    if nc and "-N" in subprocess.run([nc, "-h"], capture_output=True, text=True).stderr:
        out = subprocess.run(
            [nc, "-N", "-s", CLIENT_IP, PX[0], str(PX[1])], input=data, capture_output=True,
            timeout=10,
        ).stdout
    else:
        with Client() as c:
            c.send(data)
            c.sock.shutdown(socket.SHUT_WR)
            out = c.read_to_eof()
    r, rest = httpc.parse_response(out) or (None, out)
    assert r is not None, f"no whole response before the close: {out[:300]!r}"
    assert r.status == 200 and b"app1" in r.body, r
    assert rest == b"", rest[:200]


# =============================================================================================
# 5. Upgrade with early data.
#
# Bytes that came in the same read as the upgrade request stayed in portier's input buffer after
# the 101: the tunnel stalled until the client happened to send more.

WS_HEADERS = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


def test_bytes_right_behind_an_upgrade_request_reach_the_server(backends, start_px):
    seen = {}

    def h(r, conn):
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        try:
            seen["early"] = conn.recv_exactly(5, timeout=2.0)
        except socket.timeout:
            seen["early"] = None
            conn.close()
            return None
        conn.send(b"echo:" + seen["early"])
        conn.echo(timeout=5.0)
        return None

    backends(O1, h)
    start_px(config({"s": [O1]}, default="s"))
    with Client() as c:
        c.send(req("GET", "/ws", headers=WS_HEADERS) + b"hello")  # one send
        r = c.read_head()
        assert r.status == 101, r
        got = c.buf
        c.sock.settimeout(3.0)
        try:
            while len(got) < len(b"echo:hello"):
                data = c.sock.recv(100)
                if not data:
                    break
                got += data
        except socket.timeout:
            pass
    assert seen.get("early") == b"hello", (
        f"the server never got the bytes sent behind the upgrade request: {seen.get('early')!r}"
    )
    assert got == b"echo:hello", got


# =============================================================================================
# 6. Broken responses.
#
# A bad chunk in the first read of a response: the head was already queued for the client and
# then the connection was dropped, so the client got nothing (and the log said 200). A response
# cut after its head: the client must see the truncation (no made-up end), and the log must say so.

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"zz\r\n", id="bad-chunk-size"),
        pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="chunk-data-without-crlf"),
    ],
)
def test_a_bad_chunk_in_the_first_read_of_a_response_is_502(backends, start_px, bad):
    """Head and a broken chunk in one write: nothing has reached the client yet, so it gets a
    502 (it got zero bytes and EOF), and the access log says 502 (it said 200)."""
    backends(O1, lambda r, conn: CHUNKED_HEAD + bad)  # one write
    p = start_px(config({"s": [O1]}, default="s", extra="access_log_format: json"))
    rid = "bad-chunk-" + str(len(bad))
    with Client() as c:
        c.send(req("GET", "/", headers=[("X-Request-Id", rid)]))
        try:
            r = c.read_final()
        except (httpc.Closed, ConnectionResetError):
            r = None
    assert r is not None, "no response at all: the connection was closed without a byte"
    assert r.status == 502, r
    assert access_json(p, rid)["status"] == 502


def test_a_response_broken_after_its_head_is_truncated_not_padded(backends, start_px):
    """Head and one good chunk reach the client; then garbage: the client gets exactly those
    bytes, no invented last chunk, then EOF; the error log says the response was truncated."""

    def h(r, conn):
        conn.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
        conn.wait_stop(0.3)
        conn.send(b"zz\r\n")

    backends(O1, h)
    p = start_px(config({"s": [O1]}, default="s"))
    rid = "truncated-response"
    with Client() as c:
        c.send(req("GET", "/", headers=[("X-Request-Id", rid)]))
        r = c.read_head()
        assert r.status == 200 and (r.header("Transfer-Encoding") or "").lower() == "chunked", r
        rest = c.read_to_eof()
    assert rest == b"5\r\nhello\r\n", f"after the head: {rest!r}"
    wait_until(lambda: any(rid in line or CLIENT_IP in line
                           for line in error_lines(p, "truncated")),
               2.0, f"an error-log line saying the response was truncated:\n{p.errors()}")


# =============================================================================================
# 7. Safe retries.
#
# An idempotent request whose server closed or reset the connection without a byte of answer was
# retried only on a pooled connection and only without a body; on a fresh connection it was 502.
# Under load, killing a replica cost a few requests (about 7 in 214,000).

RETRY_METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST"]
PUT_BODY = b"put-body-0123456789"


class Flaky:
    """A backend.py handler: answers like named(name) while mode is "ok"; otherwise reads the
    request and closes ("close") or resets ("reset") without a byte of answer."""

    def __init__(self, name, mode="ok"):
        self.name = name
        self.mode = mode
        self.ok = named(name)

    def __call__(self, r, conn):
        if self.mode == "ok":
            return self.ok(r, conn)
        if self.mode == "reset":
            conn.reset()
        else:
            conn.close()
        return None


def method_request(method, target):
    if method == "PUT":
        return req(method, target, headers=[("Content-Length", str(len(PUT_BODY)))],
                   body=PUT_BODY)
    return req(method, target)


def of(b, method=None):
    return [r for r in b.requests if method is None or r.method == method]


@pytest.mark.parametrize("method", RETRY_METHODS)
@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-server-conn", "pooled-server-conn"])
def test_an_idempotent_request_the_server_dropped_is_retried_on_the_next(
    backends, start_px, method, how, pooled
):
    """BAD reads the request and closes (or resets) without answering; GOOD is healthy. GET,
    HEAD, OPTIONS, PUT (with its body whole) and DELETE are answered by GOOD; POST is not retried:
    502. Round-robin sends one of the first two requests to BAD, which is all a test needs."""
    bad = Flaky("bad")
    b_bad = backends(O1, bad)
    b_good = backends(O2, named("good"))
    start_px(config({"s": [O1, O2]}, default="s", workers=1))
    if pooled:  # a pooled connection to BAD exists, then BAD drops the next request on it
        for _ in range(3):
            with Client() as c:
                assert c.request("GET", "/warm-up").status == 200
            if of(b_bad):
                break
        assert of(b_bad), "no warm-up request reached BAD"
    bad.mode = how
    for attempt in range(3):
        n_bad, n_good = len(of(b_bad, method)), len(of(b_good, method))
        with Client() as c:
            c.send(method_request(method, f"/{method.lower()}/{attempt}"))
            try:
                r = c.read_final(method)
            except (httpc.Closed, ConnectionResetError) as e:
                r = e
            assert not isinstance(r, Exception), f"{method}: no response: {r!r}"
        if len(of(b_bad, method)) > n_bad:
            break
        assert r.status == 200 and r.header("X-Origin") == "good", r  # round-robin chose GOOD
    else:
        pytest.fail(f"no {method} reached BAD in 3 requests")
    dropped = of(b_bad, method)[-1]
    if pooled:
        assert dropped.index > 0, "BAD got the request on a fresh connection, not the pooled one"
    new_at_good = of(b_good, method)[n_good:]
    if method == "POST":
        assert r.status == 502, f"a POST was answered {r.status} after its server dropped it"
        assert new_at_good == [], "a POST was retried"
        return
    assert r.status == 200 and r.header("X-Origin") == "good", (
        f"{method} the server dropped ({how}, "
        f"{'pooled' if pooled else 'fresh'} connection) was answered {r.status}, not retried"
    )
    assert len(new_at_good) == 1, new_at_good
    if method == "PUT":
        assert new_at_good[0].body == PUT_BODY, new_at_good[0]


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-server-conn", "pooled-server-conn"])
def test_a_request_is_retried_once_only(backends, start_px, pooled):
    """Both servers drop requests: a GET is tried at most twice, then 502."""
    flaky = [Flaky("bad1"), Flaky("bad2")]
    bs = [backends(O1, flaky[0]), backends(O2, flaky[1])]
    start_px(config({"s": [O1, O2]}, default="s", workers=1))
    if pooled:
        for i in range(4):
            with Client() as c:
                assert c.request("GET", f"/warm-up/{i}").status == 200
        assert all(of(b) for b in bs), "the warm-up did not reach both servers"
    for f in flaky:
        f.mode = "close"
    before = sum(len(of(b, "GET")) for b in bs)
    with Client() as c:
        r = c.request("GET", "/twice")
    assert r.status == 502, r
    tries = sum(len(of(b, "GET")) for b in bs) - before
    assert 1 <= tries <= 2, f"the GET was sent {tries} times"


REPLICAS = [("lr-a", "127.0.0.71"), ("lr-b", "127.0.0.72"), ("lr-c", "127.0.0.73")]
# Enough that the old code failed in 7 runs of 8 (128 connections keep many pooled connections to
# the victim in flight at the kill); correct code passes every time.
LOAD_REQUESTS = 30_000
LOAD_CONNS = 128


def test_killing_a_replica_under_load_fails_no_get(build_dir, start_px, tmp_path):
    """Three app2 replicas, 30,000 keep-alive GETs over 128 connections, one replica SIGKILLed
    about a third of the way: every GET is answered 200 (the old code lost a few to 502)."""
    started = []
    with stopping(started):
        for pod, ip in REPLICAS:
            started.append(procs.start(
                [str(build_dir / "app2")],
                env={"LISTEN": f"{ip}:{APP_PORT}", "POD_NAME": pod, "POD_IP": None},
                wait_for=(ip, APP_PORT), log_dir=str(tmp_path), name=pod,
            ))
        start_px(config({"app2": [(ip, APP_PORT) for _, ip in REPLICAS]}, default="app2",
                        extra="access_log: off"))
        done = Counter()
        pods = Counter()
        failures: List[str] = []
        lock = threading.Lock()
        killed = threading.Event()
        stop_at = time.monotonic() + 60
        one = req("GET", "/api/info", host="app2.com")
        pod_field = re.compile(rb'"pod":"([^"]*)"')

        def client():
            c = None
            while time.monotonic() < stop_at:
                with lock:
                    if done["sent"] >= LOAD_REQUESTS:
                        break
                    done["sent"] += 1
                try:
                    if c is None:
                        c = Client(timeout=10.0)
                    c.send(one)
                    r = c.read_final()
                except (OSError, httpc.Closed) as e:
                    with lock:
                        failures.append(f"{'after' if killed.is_set() else 'before'} the kill: "
                                        f"{e!r}")
                    if c is not None:
                        c.close()
                    c = None
                    continue
                m = pod_field.search(r.body)
                with lock:
                    done[r.status] += 1
                    if r.status != 200:
                        failures.append(f"{'after' if killed.is_set() else 'before'} the kill: "
                                        f"{r.status} {r.body[:100]!r}")
                    elif m:
                        pods[m.group(1).decode()] += 1
                if r.header("Connection") == "close":
                    c.close()
                    c = None
            if c is not None:
                c.close()

        threads = [threading.Thread(target=client) for _ in range(LOAD_CONNS)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: done[200] + len(failures) >= LOAD_REQUESTS // 3, 30.0,
                       "a third of the load")
            victim = started.pop(1)  # lr-b; out of the list stopping() checks for exit 0
            killed.set()
            procs.stop(victim, sig=signal.SIGKILL, check=False)
        finally:
            for t in threads:
                t.join(90)
        assert not failures, f"{len(failures)} of {LOAD_REQUESTS} GETs failed, e.g. {failures[:5]}"
        assert done[200] == LOAD_REQUESTS, done
        assert set(pods) == {pod for pod, _ in REPLICAS}, pods


# =============================================================================================
# 8. Active health checks: services.<s>.health_check {path, interval, timeout}.
#
# The key was parsed and ignored: no server was ever probed.

INTERVAL = 0.2
HEALTH = "path: /healthz, interval: 200ms"


class Health:
    """A backend.py handler: /healthz is 200 while healthy, else 500 (or, hang, no answer for a
    second); any other path 200 naming the origin. probes counts /healthz requests."""

    def __init__(self, name):
        self.name = name
        self.healthy = True
        self.hang = False
        self.probes = 0
        self.ok = named(name)

    def __call__(self, r, conn):
        if r.target != "/healthz":
            return self.ok(r, conn)
        self.probes += 1
        if self.hang:
            conn.wait_stop(1.0)
            conn.close()
            return None
        if self.healthy:
            return fake.response(200, b"ok")
        return fake.response(500, b"sick")


def who_answers(n=30):
    got = Counter()
    with Client() as c:
        for i in range(n):
            r = c.request("GET", f"/who/{i}")
            assert r.status == 200, r
            got[r.header("X-Origin")] += 1
    return got


def health_origins(backends, names=("a", "b", "c"), addrs=(O1, O2, O3)):
    hs = [Health(n) for n in names]
    for h, a in zip(hs, addrs):
        backends(a, h)
    return hs


def test_a_server_failing_its_health_check_is_skipped_then_taken_back(backends, start_px):
    a, b, c = health_origins(backends)
    p = start_px(config({"s": ([O1, O2, O3], HEALTH)}, default="s"))
    time.sleep(3 * INTERVAL)
    assert b.probes > 0, "no health probe reached the origin"
    b.healthy = False
    time.sleep(3 * INTERVAL + 0.6)  # 3 failures, and slack
    got = who_answers()
    assert got["b"] == 0 and got["a"] + got["c"] == 30, f"b fails /healthz, yet: {got}"
    b.healthy = True
    time.sleep(2 * INTERVAL + 0.6)  # 2 successes, and slack
    got = who_answers()
    assert got["b"] >= 5, f"b passes /healthz again, yet: {got}"
    time.sleep(2 * INTERVAL)

    def down(addr):
        return [line for line in error_lines(p, hp(addr)) if re.search(r"\bdown\b", line, re.I)]

    up = [line for line in error_lines(p, hp(O2))
          if re.search(r"\bup\b", line, re.I) and not re.search(r"\bdown\b", line, re.I)]
    assert len(down(O2)) == 1, f"wanted one 'down' line for {hp(O2)}:\n{p.errors()}"
    assert len(up) == 1, f"wanted one 'up' line for {hp(O2)}:\n{p.errors()}"
    assert not down(O1) and not down(O3), p.errors()


def test_when_every_server_fails_its_health_check_all_are_tried_anyway(backends, start_px):
    hs = health_origins(backends)
    start_px(config({"s": ([O1, O2, O3], HEALTH)}, default="s"))
    time.sleep(3 * INTERVAL)
    assert all(h.probes > 0 for h in hs), "no health probe reached the origins"
    for h in hs:
        h.healthy = False
    time.sleep(3 * INTERVAL + 0.6)
    got = who_answers()
    assert set(got) == {"a", "b", "c"}, got


def test_a_health_check_that_times_out_counts_as_failed(backends, start_px):
    """health_check.timeout: a /healthz that never answers fails after timeout (100 ms)."""
    a, b, c = health_origins(backends)
    start_px(config({"s": ([O1, O2, O3], HEALTH + ", timeout: 100ms")}, default="s"))
    b.hang = True
    time.sleep(3 * (INTERVAL + 0.1) + 0.6)
    got = who_answers()
    assert got["b"] == 0, f"b's /healthz never answers, yet: {got}"


def test_health_probes_are_per_process_not_per_worker(backends, start_px):
    """workers: 4 yet one probe per server per interval, not four."""
    hs = health_origins(backends)
    hs[1].healthy = False  # probed on, down or not
    start_px(config({"s": ([O1, O2, O3], HEALTH)}, default="s", workers=4))
    time.sleep(1.0)
    before = [h.probes for h in hs]
    time.sleep(2.0)
    counts = [h.probes - b for h, b in zip(hs, before)]
    expect = 2.0 / INTERVAL  # 10
    assert all(0.4 * expect <= n <= 1.6 * expect for n in counts), (
        f"probes per origin in 2 s at interval 200ms: {counts} (one prober: ~{expect:.0f}; one "
        f"per worker: ~{4 * expect:.0f})"
    )


HC_NAME = "hc.test"
HC_PORT = 28730


@pytest.fixture
def dnsmasq(tmp_path):
    """dnsmasq answering HC_NAME (conftest.dnsmasq_at) on this module's address; calling it with
    a list of addresses sets the records."""
    with dnsmasq_at(DNS, HC_NAME, tmp_path) as d:
        yield d.set


def test_a_dns_discovered_server_is_probed_as_it_appears(dnsmasq, backends, start_px):
    first, second = Health("first"), Health("second")
    backends((O1[0], HC_PORT), first)
    backends((O2[0], HC_PORT), second)
    dnsmasq([O1[0]])
    start_px(config({"s": (f"dns:{HC_NAME}:{HC_PORT}", HEALTH)}, default="s",
                    extra=f'resolvers: ["{hp(DNS)}"]'))
    wait_until(lambda: first.probes > 0, 3.0, "a health probe of the first server")
    dnsmasq([O1[0], O2[0]])
    wait_until(lambda: second.probes > 0, 4.0, "a health probe of the server that appeared")


# =============================================================================================
# 9. Interim responses are bounded.
#
# portier relayed any number of 1xx responses.


@pytest.mark.parametrize("code", [100, 103])
def test_more_than_8_interim_responses_are_502(backends, start_px, code):
    """Every interim response counts, relayed or not (an implementation may drop a 100 Continue
    the client never asked for)."""
    line = b"HTTP/1.1 %d %s\r\n\r\n" % (code, fake.REASONS[code].encode())
    backends(O1, lambda r, conn: line * 9 + fake.response(200, b"final"))
    p = start_px(config({"s": [O1]}, default="s", extra="access_log_format: json"))
    rid = f"interim-{code}"
    with Client() as c:
        r = c.request("GET", "/", headers=[("X-Request-Id", rid)])
    assert len(r.interim) <= 8, f"{len(r.interim)} interim responses relayed"
    assert r.status == 502, r
    assert access_json(p, rid)["status"] == 502


def test_three_interim_responses_then_200_are_relayed(backends, start_px):
    line = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    backends(O1, lambda r, conn: line * 3 + fake.response(200, b"final"))
    start_px(config({"s": [O1]}, default="s"))
    with Client() as c:
        r = c.request("GET", "/")
        assert [i.status for i in r.interim] == [103, 103, 103], r.interim
        assert (r.status, r.body) == (200, b"final"), r
        assert c.request("GET", "/again").status == 200


# =============================================================================================
# 10. Forwarded (RFC 7239) from an untrusted peer is dropped, like X-Forwarded-*.
#
# It went to the server as the client wrote it.


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_forwarded_is_dropped_unless_the_peer_is_trusted(backends, start_px, trusted):
    b = backends(O1)
    extra = 'trusted_proxies: ["127.0.0.0/8"]' if trusted else ""
    start_px(config({"s": [O1]}, default="s", extra=extra))
    with Client() as c:
        assert c.request("GET", "/", headers=[("Forwarded", "for=1.2.3.4")]).status == 200
    got = b.wait_requests(1)[0]
    assert got.header_all("Forwarded") == (["for=1.2.3.4"] if trusted else []), got


# =============================================================================================
# 11. Request trailers cannot carry framing, routing or forwarding fields.
#
# The trailer section went to the server byte for byte.


def test_request_trailers_keep_only_harmless_fields(backends, start_px):
    b = backends(O1)
    start_px(config({"s": [O1]}, default="s"))
    trailers = (
        b"Host: evil\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nX-Ok: 1\r\n"
    )
    with Client() as c:
        r = c.request(
            "POST", "/t", headers=[("Transfer-Encoding", "chunked")],
            body=fake.chunked(b"hello", trailers=trailers),
        )
        assert r.status == 200, r
    got = b.wait_requests(1)[0]
    assert got.body == b"hello", got
    assert got.trailers == [("X-Ok", "1")], got.trailers


# =============================================================================================
# 13. Every error path, followed by pipelined requests on the same connection.
#
# conn_read_head returned 1 after respond_error may have freed the connection; pipelined requests
# behind an error walked the same chain. Under the ASan build (PORTIER_BUILD=.../build/asan) the
# fixtures fail on any sanitizer report at teardown.

ERRORS = {
    # kind: (request bytes, status, whether keep-alive must go on after it; None: either way)
    "400-refused-head": (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400, False),
    "404": (req("GET", "/", host="unknown.test"), 404, True),
    "404-with-body": (
        req("POST", "/", host="unknown.test", headers=[("Content-Length", "5")], body=b"hello"),
        404, None,
    ),
    "503": (req("GET", "/", host="empty.test"), 503, True),
    "502-all-refused": (req("GET", "/", host="dead.test"), 502, None),
    "504-connect-timeout": (req("GET", "/", host="hole.test"), 504, None),
}


@pytest.mark.parametrize("kind", list(ERRORS))
def test_an_error_then_pipelined_requests(backends, start_px, request, kind):
    """[error, error, good, error, good] in one send: an error answered from the head loop, from
    the previous error's completion and from a proxied response's completion. Where the error
    closes the connection (Connection: close), nothing follows it; elsewhere every request is
    answered in order."""
    data, status, keep = ERRORS[kind]
    if kind.startswith("504"):
        request.getfixturevalue("blackhole")
    backends(O1)
    services = {"ok": [O1], "dead": [DEAD], "hole": [BLACKHOLE]}
    routes = [("ok.test", "ok"), ("dead.test", "dead"), ("hole.test", "hole")]
    extra = ""
    if kind == "503":  # an empty dns: service (servers: [] is refused by today's loader)
        services["empty"] = "dns:empty.portier-test.invalid:28701"
        routes.append(("empty.test", "empty"))
        extra = f'resolvers: ["{NO_DNS}"]'
    p = start_px(config(services, routes, timeouts="upstream_connect: 300ms", extra=extra))
    good = req("GET", "/good", host="ok.test")
    sequence = [data, data, good, data, good]
    expect = [status, status, 200, status, 200]
    method = data.split(b" ", 1)[0].decode()
    with Client(timeout=10.0) as c:
        c.send(b"".join(sequence))  # one send: every request waits in portier's buffer
        got = []
        for i, e in enumerate(expect):
            try:
                r = c.read_final(method if e != 200 else "GET")
            except (httpc.Closed, ConnectionResetError):
                r = None
            if r is None:
                assert c.buf == b"", f"half a response: {c.buf[:300]!r}"
                pytest.fail(f"closed after {got} without Connection: close", pytrace=False)
            got.append(r.status)
            assert r.status == e, (i, got, r)
            if (r.header("Connection") or "").lower() == "close":
                assert keep is not True, f"{kind}: the connection was closed; keep-alive applies"
                c.assert_closed()
                break
        else:
            assert keep is not False, f"{kind}: the connection went on after {status}"
    assert_alive(p, f"after {kind}")
    with Client() as c:  # and portier still serves
        assert c.request("GET", "/", host="ok.test").status == 200


# =============================================================================================
# The -d flag: debug-level lines, where every connection close logs its reason.


def test_dash_d_logs_why_each_connection_closed(backends, start_px):
    backends(O1)
    p = start_px(config({"s": [O1]}, default="s"), args=["-d"])
    with Client() as c:
        assert c.request("GET", "/").status == 200
    wait_until(lambda: any(re.search(rf"portier debug: .*{re.escape(CLIENT_IP)}", line)
                           for line in p.errors().splitlines()),
               2.0, f"a debug line about client {CLIENT_IP}'s close:\n{p.errors()}")
    # A server connection says why it closed too: the pooled one, at shutdown.
    procs.stop(p.proc)
    server = f"{O1[0]}:{O1[1]}"
    assert re.search(rf"portier debug: server {re.escape(server)}: connection closed.*: \S",
                     p.errors()), p.errors()


def test_without_dash_d_there_are_no_debug_lines(backends, start_px):
    backends(O1)
    p = start_px(config({"s": [O1]}, default="s"))
    with Client() as c:
        assert c.request("GET", "/").status == 200
    time.sleep(0.2)
    assert " debug: " not in p.errors(), p.errors()


# ---------------------------------------------------------------------------------------------
# An ACK went out on its own where a segment with data followed at once: the request's, just
# before the response (new client connections start in quick-ACK mode), and the handshake's last
# one, just before the request on a new server connection. Each was a segment more through the
# kernel's network stack per new connection; HAProxy saves both by default.


def control_segments_in(sock):
    """How many segments without data sock has received (the SYN-ACK or the SYN, pure ACKs,
    the FIN): TCP_INFO's tcpi_segs_in (offset 140) less tcpi_data_segs_in (152), Linux 4.6+."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    (segs_in,) = struct.unpack_from("I", info, 140)
    (data_segs_in,) = struct.unpack_from("I", info, 152)
    return segs_in - data_segs_in


def test_acks_ride_on_the_response_and_on_the_request_upstream(backends, start_px):
    """A new connection with one request: the client receives the SYN-ACK, the response and the
    FIN, and no ACK of its request on its own; the server's new connection gets the SYN, then the
    handshake's last ACK with the request. A delayed ACK that times out (40 ms without the reply)
    does go alone, so of five tries the best counts."""
    server_side = []

    def handler(req, conn):
        server_side.append(control_segments_in(conn.sock))
        # Connection: close, so that every request needs a new server connection.
        return fake.response(200, b"ok", [("Connection", "close")])

    backends(O1, handler)
    start_px(config({"s": [O1]}, default="s"))
    client_side = []
    for _ in range(5):
        with socket.create_connection(PX, timeout=TIMEOUT, source_address=(CLIENT_IP, 0)) as s:
            s.sendall(req(headers=[("Connection", "close")]))
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"ok"), got
            client_side.append(control_segments_in(s))
    assert len(server_side) == 5, server_side
    # The client: SYN-ACK and FIN (3 with the ACK alone); the server: the SYN (2 with the ACK).
    assert min(client_side) == 2, f"segments without data the clients received: {client_side}"
    assert min(server_side) == 1, f"segments without data the server received: {server_side}"
