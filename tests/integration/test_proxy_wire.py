"""Black-box tests of what portier promises on the wire (DESIGN.md, "What portier promises on the
wire" and "Configuration"): routing, proxying, the headers the backend sees, refusals, backend
failures and the access log.

portier runs as a real process on loopback. Tests that only need the apps use the `portier` fixture
(LOCAL_CONFIG in front of the shared topology on 127.0.0.1:28081); tests that need an origin with
behaviour the apps lack start a fake one from backend.py on 127.0.0.31-39:28100-28109 and a portier
of their own on 127.0.0.1:28181. Every socket has a timeout; every process and thread is stopped at
teardown, also when a test fails.
"""

import json
import re
import socket
import time

import pytest

import backend as fake
import httpc
from conftest import PORTIER_ADDR
from httpc import TIMEOUT

PX = ("127.0.0.1", 28181)  # the portier of a test's own config
B1 = ("127.0.0.31", 28100)
B2 = ("127.0.0.32", 28101)
B3 = ("127.0.0.33", 28102)
DEAD = ("127.0.0.34", 28103)  # nobody listens there: connections are refused
NO_DNS = "127.0.0.35:28199"  # a resolver nobody runs, so a dns: service never leaves loopback

HEX32 = re.compile(r"[0-9a-f]{32}")


def hp(addr):
    return f"{addr[0]}:{addr[1]}"


# ---------------------------------------------------------------------------------------------
# The client (httpc), to Host b.test unless told.


class Conn(httpc.Conn):
    host = "b.test"


get = Conn.get


def req(method="GET", target="/", host=Conn.host, **kw):
    """The bytes of one request (httpc.req)."""
    return httpc.req(method, target, host, **kw)


def chunk_body(*pieces):
    return fake.chunked(*pieces)


# ---------------------------------------------------------------------------------------------
# Configs and fixtures.


def config(
    services,
    routes=(),
    default="b",
    timeouts="",
    limits="",
    extra="",
    listen=PX,
):
    """A portier config on listen. services: {name: [addr, ...] or "dns:..."};
    routes: [(host, path or None, service)]."""
    out = [f'listen:\n  - address: "{hp(listen)}"', "workers: 2"]
    if routes:
        out.append("routes:")
        for host, path, svc in routes:
            out.append(f'  - host: "{host}"')
            if path is not None:
                out.append(f'    path: "{path}"')
            out.append(f"    service: {svc}")
    if default:
        out.append(f"default_service: {default}")
    out.append("services:")
    for name, servers in services.items():
        out.append(f"  {name}:")
        if isinstance(servers, str):
            out.append(f'    dns: "{servers[4:]}"')
        else:
            out.append("    servers: [" + ", ".join(f'"{hp(s)}"' for s in servers) + "]")
    t = "shutdown_grace: 1s" + (", " + timeouts if timeouts else "")
    out.append(f"timeouts: {{ {t} }}")
    if limits:
        out.append(f"limits: {{ {limits} }}")
    out.append(extra)
    return "\n".join(out) + "\n"


class Wire:
    """A fake origin on B1 and a portier on PX sending every host to it."""

    def __init__(self, b, p):
        self.b = b
        self.p = p
        self.addr = p.addr

    def set(self, handler):
        self.b.handler = handler


@pytest.fixture
def wire_factory(backends, start_portier):
    def _make(handler=None, **cfg):
        b = backends(B1, handler)
        p = start_portier(config({"b": [B1]}, **cfg), PX)
        return Wire(b, p)

    return _make


@pytest.fixture
def wire(wire_factory):
    return wire_factory()


def wait_log_lines(p, n, timeout=3.0):
    """The first n lines of portier's access log, waiting for them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in p.log().splitlines() if line]
        if len(lines) >= n:
            return lines
        if time.monotonic() >= deadline:
            raise AssertionError(f"{len(lines)} access log lines, wanted {n}: {lines!r}")
        time.sleep(0.02)


def named(name):
    """A handler answering 200 with its name and the target, to tell backends apart."""

    def h(r, conn):
        return fake.response(200, f"{name} {r.target}".encode())

    return h


# ---------------------------------------------------------------------------------------------
# Routing.


def test_host_app1_goes_to_app1(portier):
    r = get(portier.addr, "/api/info", host="app1.com")
    assert r.status == 200, r
    assert r.json()["app"] == "app1"
    assert r.json()["host"] == "app1.com"


def test_app2_round_robin_gives_each_replica_exactly_a_third(portier, app2_pods):
    counts = {}
    with Conn(portier.addr) as c:
        for _ in range(300):
            r = c.request("GET", "/api/info", host="app2.com")
            assert r.status == 200, r
            info = r.json()
            assert info["app"] == "app2"
            counts[info["pod"]] = counts.get(info["pod"], 0) + 1
    assert counts == {a.pod: 100 for a in app2_pods}


@pytest.mark.parametrize("host", ["app3.com", "unknown.example", "localhost", "127.0.0.1"])
def test_any_other_host_goes_to_the_default_service(portier, host):
    r = get(portier.addr, "/api/info", host=host)
    assert r.status == 200, r
    assert r.json()["app"] == "app3"


@pytest.mark.parametrize(
    "host", ["APP1.COM", "App1.Com", "app1.com:28081", "app1.com.", "APP1.com.:28081"]
)
def test_host_is_normalised_for_routing(portier, host):
    r = get(portier.addr, "/api/info", host=host)
    assert r.status == 200, r
    assert r.json()["app"] == "app1"


def test_absolute_form_is_routed_by_the_uri_host(portier):
    r = get(portier.addr, "http://app1.com/api/info", host="other.example")
    assert r.status == 200, r
    assert r.json()["app"] == "app1"


def test_http11_without_host_is_400(portier, app3):
    with Conn(portier.addr) as c:
        r = c.request("GET", "/api/info", host=None)
        assert r.status == 400, r
        c.assert_closed()


def test_http10_without_host_goes_to_the_default_service(portier):
    with Conn(portier.addr) as c:
        r = c.request("GET", "/api/info", host=None, version="HTTP/1.0")
        assert r.status == 200, r
        assert r.json()["app"] == "app3"


def test_exact_host_wins_over_wildcard(backends, start_portier):
    backends(B1, named("exact"))
    backends(B2, named("wild"))
    backends(B3, named("default"))
    # The wildcard comes first: the order in the file must not matter.
    routes = [("*.example.test", None, "wild"), ("exact.example.test", None, "exact")]
    p = start_portier(
        config({"exact": [B1], "wild": [B2], "dflt": [B3]}, routes, default="dflt"), PX
    )
    expect = {
        "exact.example.test": "exact",
        "EXACT.example.test.": "exact",
        "other.example.test": "wild",
        "a.b.example.test": "wild",
        "example.test": "default",  # *.example.test is below example.test, not itself
        "xexample.test": "default",
    }
    got = {h: get(p.addr, "/", host=h).text.split()[0] for h in expect}
    assert got == expect


LONGEST_PREFIX = {
    "/": "root",
    "/index.html": "root",
    "/api": "api",
    "/api/": "api",
    "/api/users": "api",
    "/api/v2": "v2",
    "/api/v2/": "v2",
    "/api/v2/users?x=1": "v2",
    "/api/v3": "api",
    "/api/v2x": "api",
}


def prefix_portier(backends, start_portier):
    backends(B1, named("root"))
    backends(B2, named("api"))
    backends(B3, named("v2"))
    # Shortest first: the longest prefix must win regardless of the order in the file.
    routes = [("p.test", "/", "root"), ("p.test", "/api", "api"), ("p.test", "/api/v2", "v2")]
    cfg = config({"root": [B1], "api": [B2], "v2": [B3]}, routes, default=None)
    return start_portier(cfg, PX)


def test_longest_path_prefix_wins(backends, start_portier):
    p = prefix_portier(backends, start_portier)
    got = {}
    with Conn(p.addr) as c:
        for target in LONGEST_PREFIX:
            r = c.request("GET", target, host="p.test")
            assert r.status == 200, (target, r)
            got[target] = r.text.split()[0]
    assert got == LONGEST_PREFIX


def test_path_prefix_matches_on_segment_boundaries(backends, start_portier):
    p = prefix_portier(backends, start_portier)
    got = {}
    for target in ["/api", "/api/x", "/apiary", "/api-docs", "/api.json", "/api?q=1"]:
        r = get(p.addr, target, host="p.test")
        assert r.status == 200, (target, r)
        got[target] = r.text.split()[0]
    assert got == {
        "/api": "api",
        "/api/x": "api",
        "/apiary": "root",
        "/api-docs": "root",
        "/api.json": "root",
        "/api?q=1": "api",
    }


def test_unknown_host_without_default_service_is_404(backends, start_portier):
    b = backends(B1, named("known"))
    p = start_portier(config({"known": [B1]}, [("known.test", None, "known")], default=None), PX)
    assert get(p.addr, "/", host="known.test").status == 200
    before = len(b.received)
    r = get(p.addr, "/", host="unknown.test")
    assert r.status == 404, r
    time.sleep(0.1)
    assert len(b.received) == before


# ---------------------------------------------------------------------------------------------
# Proxying.


def test_keep_alive_serves_many_requests_on_one_connection(wire):
    with Conn(wire.addr) as c:
        for i in range(50):
            r = c.request("GET", f"/n/{i}")
            assert r.status == 200, r
            assert r.text == f"ok GET /n/{i}\n"
            assert (r.header("Connection") or "").lower() != "close"
    # portier reuses its connection to the backend too.
    assert wire.b.connections < 50


def test_pipelined_requests_are_answered_in_order(wire):
    def h(r, conn):
        if r.target == "/slow":
            time.sleep(0.3)
        return fake.response(200, r.target.encode())

    wire.set(h)
    targets = ["/slow", "/a", "/b", "/slow", "/post", "/c"]
    with Conn(wire.addr) as c:
        c.send(
            b"".join(
                req("POST", t, headers=[("Content-Length", "4")], body=b"data")
                if t == "/post"
                else req("GET", t)
                for t in targets
            )
        )
        got = [c.read_final().text for _ in targets]
    assert got == targets
    reqs = wire.b.wait_requests(len(targets))
    assert [r.target for r in reqs] == targets
    assert reqs[4].body == b"data"


def test_chunked_request_body_is_forwarded_as_valid_chunks(wire):
    body = chunk_body(b"hello ", b"chunked " * 100, b"world") 
    with Conn(wire.addr) as c:
        c.send(
            req("POST", "/upload", headers=[("Transfer-Encoding", "chunked")])
            + b"6;ext=1\r\nhello \r\n"
            + body[len(b"6\r\nhello \r\n") :]
        )
        r = c.read_final()
        assert r.status == 200, r
    (got,) = wire.b.wait_requests(1)
    assert got.body == b"hello " + b"chunked " * 100 + b"world"
    te = got.header("Transfer-Encoding")
    if te is not None:
        assert te.lower() == "chunked" and got.chunked
        assert not got.has_header("Content-Length"), got
    else:
        assert got.header("Content-Length") == str(len(got.body)), got
    assert wire.b.errors == []


def test_chunked_response_is_passed_through(wire):
    pieces = [b"first ", b"x" * 5000, b" last"]

    def h(r, conn):
        if r.target != "/stream":
            return fake.ok_handler(r, conn)
        conn.send(fake.response(200, b"", [("Transfer-Encoding", "chunked")], length=False))
        for p in pieces:
            conn.send(f"{len(p):x}\r\n".encode() + p + b"\r\n")
            time.sleep(0.05)
        conn.send(b"0\r\n\r\n")

    wire.set(h)
    with Conn(wire.addr) as c:
        r = c.request("GET", "/stream")
        assert r.status == 200
        assert r.framing == "chunked", r
        assert r.body == b"".join(pieces)
        # the connection is still in sync
        assert c.request("GET", "/after").text == "ok GET /after\n"


def test_expect_100_continue(wire):
    body = b"x" * 1000
    with Conn(wire.addr) as c:
        c.send(
            req(
                "POST",
                "/upload",
                headers=[("Content-Length", str(len(body))), ("Expect", "100-continue")],
            )
        )
        interim = c.read_response()  # without the body having been sent
        assert (interim.version, interim.status) == ("HTTP/1.1", 100), interim
        assert interim.head.startswith(b"HTTP/1.1 100 Continue\r\n"), interim.head
        c.send(body)
        r = c.read_final()
        assert r.status == 200, r
        assert r.interim == [], "a second 100 Continue"
    (got,) = wire.b.wait_requests(1)
    assert got.body == body


def test_head_response_has_no_body_and_the_connection_goes_on(wire):
    # Regression: an empty response body never ended the exchange, so the next request on the
    # connection hung (HEAD, 204, 304 and Content-Length: 0 alike).
    def h(r, conn):
        if r.method == "HEAD":
            return fake.response(200, b"", [("Content-Length", "100"), ("X-Head", "yes")])
        return fake.response(200, b"after")

    wire.set(h)
    with Conn(wire.addr, timeout=1.0) as c:
        r = c.request("HEAD", "/thing")
        assert r.status == 200
        assert r.header("Content-Length") == "100"
        assert r.header("X-Head") == "yes"
        # no body bytes follow: the next response on the connection parses from its first byte
        r2 = c.request("GET", "/next")
        assert r2.body == b"after"


def test_1xx_interim_responses_are_relayed(wire):
    def h(r, conn):
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        time.sleep(0.05)
        conn.send(b"HTTP/1.1 102 Processing\r\n\r\n")
        time.sleep(0.05)
        return fake.response(200, b"final")

    wire.set(h)
    with Conn(wire.addr) as c:
        r = c.request("GET", "/")
        assert [(i.status, i.header("Link")) for i in r.interim] in (
            [(103, "</style.css>; rel=preload"), (102, None)],
            [(103, "</style.css>; rel=preload")],  # 102 is deprecated; relaying it is optional
        ), r.interim
        assert (r.status, r.body) == (200, b"final")
        assert c.request("GET", "/again").status == 200


@pytest.mark.parametrize(
    "status,extra",
    [
        pytest.param(204, [], id="204"),
        pytest.param(304, [], id="304"),
        # the length of the representation, not of a body
        pytest.param(304, [("ETag", '"v1"'), ("Content-Length", "1234")], id="304-with-length"),
        pytest.param(200, [("Content-Length", "0")], id="200-length-0"),
    ],
)
def test_204_304_and_empty_responses_have_no_body_and_the_connection_goes_on(wire, status, extra):
    def h(r, conn):
        if r.target == "/empty":
            return fake.response(status, b"", extra, length=False)
        return fake.response(200, b"next")

    wire.set(h)
    with Conn(wire.addr, timeout=1.0) as c:
        r = c.request("GET", "/empty")
        assert r.status == status
        assert r.body == b""
        assert not r.has("Transfer-Encoding"), r
        if status == 204:
            assert not r.has("Content-Length"), r
        r2 = c.request("GET", "/next")  # in sync: nothing was sent after the 204/304 head
        assert (r2.status, r2.body) == (200, b"next")


def test_response_without_length_is_delivered_whole_then_closed(wire):
    body = b"until close " * 2000

    def h(r, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        conn.drip(body, interval=0.01, step=4096)
        conn.close()

    wire.set(h)
    with Conn(wire.addr) as c:
        c.send(req("GET", "/eof"))
        r = c.read_final()
        assert r.status == 200
        assert r.body == body
        if r.framing != "close":
            c.assert_closed()


def test_http10_client_gets_a_chunked_response_decoded_then_close(wire):
    def h(r, conn):
        return fake.response(
            200, fake.chunked(b"one ", b"two ", b"three"), [("Transfer-Encoding", "chunked")]
        )

    wire.set(h)
    with Conn(wire.addr) as c:
        c.send(req("GET", "/", version="HTTP/1.0"))
        r = c.read_final()
        assert r.status == 200
        assert not r.has("Transfer-Encoding"), r
        assert r.body == b"one two three"
        if r.framing != "close":
            c.assert_closed()


def test_websocket_upgrade_becomes_a_tunnel(wire):
    def h(r, conn):
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        conn.send(b"\x81\x05hello")  # the server speaks first
        conn.echo()

    wire.set(h)
    with Conn(wire.addr) as c:
        c.send(
            req(
                "GET",
                "/ws",
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ],
            )
        )
        r = c.read_head()
        assert r.status == 101, r
        assert (r.header("Upgrade") or "").lower() == "websocket"
        assert "upgrade" in (r.header("Connection") or "").lower()
        got = c.buf
        while len(got) < 7:
            got += c.sock.recv(100)
        assert got == b"\x81\x05hello"
        for payload in [b"\x00\x01binary\xff", b"GET / HTTP/1.1\r\n\r\n", b"z" * 100000]:
            c.send(payload)
            echoed = b""
            while len(echoed) < len(payload):
                data = c.sock.recv(65536)
                assert data, "tunnel closed"
                echoed += data
            assert echoed == payload
    (got,) = wire.b.wait_requests(1)
    assert (got.header("Upgrade") or "").lower() == "websocket"
    assert "upgrade" in (got.header("Connection") or "").lower()


def test_h2c_upgrade_is_never_forwarded(wire):
    with Conn(wire.addr) as c:
        r = c.request(
            "GET",
            "/",
            headers=[
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", "h2c"),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
        )
        assert r.status == 200, r
        assert r.body == b"ok GET /\n"
        assert c.request("GET", "/next").status == 200  # still HTTP/1.1
    got = wire.b.wait_requests(2)[0]
    assert not got.has_header("Upgrade"), got
    assert not got.has_header("HTTP2-Settings"), got
    assert "upgrade" not in (got.header("Connection") or "").lower(), got


# ---------------------------------------------------------------------------------------------
# Headers to the backend.


def one_request(addr, b, **kw):
    r = get(addr, kw.pop("target", "/"), **kw)
    assert r.status == 200, r
    return b.wait_requests(1)[-1]


def test_host_is_kept(wire):
    got = one_request(wire.addr, wire.b, host="kept.example:28181")
    assert got.header_all("Host") == ["kept.example:28181"]


def test_x_forwarded_for_is_set_to_the_client_ip(wire):
    got = one_request(wire.addr, wire.b)
    assert got.header_all("X-Forwarded-For") == ["127.0.0.1"]


def test_forwarding_headers_from_an_untrusted_client_are_replaced(wire):
    got = one_request(
        wire.addr,
        wire.b,
        host="fwd.example",
        headers=[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Port", "443"),
            ("X-Real-IP", "6.6.6.6"),
            ("x-forwarded-for", "5.6.7.8"),
        ],
    )
    assert got.header_all("X-Forwarded-For") == ["127.0.0.1"], got
    assert got.header_all("X-Forwarded-Proto") == ["http"], got
    assert got.header_all("X-Forwarded-Host") == ["fwd.example"], got
    assert got.header_all("X-Forwarded-Port") == [str(PX[1])], got
    assert got.header_all("X-Real-IP") == ["127.0.0.1"], got


def test_x_forwarded_for_is_appended_for_a_trusted_proxy(wire_factory):
    w = wire_factory(extra='trusted_proxies: ["127.0.0.0/8"]')
    got = one_request(w.addr, w.b, headers=[("X-Forwarded-For", "1.2.3.4, 10.0.0.1")])
    assert got.header_all("X-Forwarded-For") == ["1.2.3.4, 10.0.0.1, 127.0.0.1"], got
    got = one_request(w.addr, w.b)
    assert got.header_all("X-Forwarded-For") == ["127.0.0.1"], got


def test_x_forwarded_proto_host_port_and_real_ip(wire):
    got = one_request(wire.addr, wire.b, host="fwd.example")
    assert got.header_all("X-Forwarded-Proto") == ["http"]
    assert got.header_all("X-Forwarded-Host") == ["fwd.example"]
    assert got.header_all("X-Forwarded-Port") == [str(PX[1])]
    assert got.header_all("X-Real-IP") == ["127.0.0.1"]


def test_x_forwarded_port_is_the_listener_port(backends, start_portier):
    b = backends(B1)
    p = start_portier(config({"b": [B1]}, listen=PORTIER_ADDR), PORTIER_ADDR)
    got = one_request(p.addr, b)
    assert got.header_all("X-Forwarded-Port") == ["28081"]


VALID_IDS = [
    pytest.param("a", id="one-char"),
    pytest.param("abc-123_X.y", id="all-classes"),
    pytest.param("0123456789abcdef0123456789abcdef", id="32-hex"),
    pytest.param("..--__", id="punctuation-only"),
    # regression: the log cut a kept id to its first 32 characters
    pytest.param("Z" * 33, id="33-chars"),
    pytest.param("Z" * 128, id="128-chars"),
]


@pytest.mark.parametrize("rid", VALID_IDS)
def test_valid_x_request_id_is_kept_and_logged(wire, rid):
    got = one_request(wire.addr, wire.b, target="/rid", headers=[("X-Request-Id", rid)])
    assert got.header_all("X-Request-Id") == [rid]
    (line,) = wait_log_lines(wire.p, 1)
    assert line.endswith(f" request_id={rid}"), line


INVALID_IDS = ["", "Z" * 129, "abc def", "a/b", "a+b", "a:b", "caf\xe9", "a,b", '"quoted"']


@pytest.mark.parametrize("rid", INVALID_IDS, ids=lambda s: repr(s[:12]))
def test_invalid_x_request_id_is_replaced_and_logged(wire, rid):
    got = one_request(wire.addr, wire.b, target="/rid", headers=[("X-Request-Id", rid)])
    ids = got.header_all("X-Request-Id")
    assert len(ids) == 1 and HEX32.fullmatch(ids[0]), got
    (line,) = wait_log_lines(wire.p, 1)
    assert line.endswith(f" request_id={ids[0]}"), line


def test_missing_x_request_id_is_generated_unique(wire):
    with Conn(wire.addr) as c:
        for _ in range(5):
            assert c.request("GET", "/").status == 200
    ids = [r.header("X-Request-Id") for r in wire.b.wait_requests(5)]
    assert all(HEX32.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 5


def test_hop_by_hop_request_headers_are_removed(wire):
    got = one_request(
        wire.addr,
        wire.b,
        headers=[
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("X-Custom-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Trail"),
            ("Upgrade", "foo/1"),  # not listed in Connection: ignored, and not forwarded
            ("X-End-To-End", "kept"),
        ],
    )
    hop = ("X-Custom-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade")
    assert [n for n in hop if got.has_header(n)] == [], got
    assert "x-custom-hop" not in (got.header("Connection") or "").lower(), got
    assert got.header("X-End-To-End") == "kept"


def test_hop_by_hop_response_headers_are_removed(wire):
    def h(r, conn):
        return fake.response(
            200,
            b"body",
            [
                ("Connection", "X-Secret-Hop"),
                ("X-Secret-Hop", "internal"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Trailer", "X-Trail"),
                ("Upgrade", "foo/1"),
                ("X-End-To-End", "kept"),
            ],
        )

    wire.set(h)
    with Conn(wire.addr) as c:
        r = c.request("GET", "/")
        assert (r.status, r.body) == (200, b"body")
        hop = ("X-Secret-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade")
        assert [n for n in hop if r.has(n)] == [], r
        assert "x-secret-hop" not in (r.header("Connection") or "").lower(), r
        assert r.header("X-End-To-End") == "kept"


def test_connection_header_cannot_strip_what_portier_adds(wire):
    listed = "close, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host, " \
        "X-Forwarded-Port, X-Request-Id, Host"
    got = one_request(wire.addr, wire.b, host="keep.example", headers=[("Connection", listed)])
    assert got.header_all("Host") == ["keep.example"], got
    assert got.header_all("X-Forwarded-For") == ["127.0.0.1"], got
    assert got.header_all("X-Real-IP") == ["127.0.0.1"], got
    assert got.header_all("X-Forwarded-Proto") == ["http"], got
    assert got.header_all("X-Forwarded-Host") == ["keep.example"], got
    assert got.header_all("X-Forwarded-Port") == [str(PX[1])], got
    assert len(got.header_all("X-Request-Id")) == 1, got


# ---------------------------------------------------------------------------------------------
# Refusals: answered with the status, the connection closed, nothing forwarded.

H = b"Host: b.test\r\n"
TE = b"Transfer-Encoding: chunked"
CHUNKED_5 = b"5\r\nhello\r\n0\r\n\r\n"
LIMITS_1K = "max_header_bytes: 1k, max_body_bytes: 1k"


def post(*headers, body=b""):
    """A POST to / with Host and these header lines (bytes, without CRLF), then body."""
    return b"POST / HTTP/1.1\r\n" + H + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def get_line(line, *headers):
    """A GET with this request line (bytes, without CRLF), Host and these header lines."""
    return line + b"\r\n" + H + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def chunked_post(body):
    return post(TE, body=body)


def ctl(*headers):
    return post(*headers, b"Content-Length: 0")


# (id, exact bytes, expected status (or statuses), limits of the config)
REFUSALS = [
    # framing: Content-Length and Transfer-Encoding
    ("cl-and-te", post(b"Content-Length: 5", TE, body=CHUNKED_5), 400, ""),
    ("te-and-cl", post(TE, b"Content-Length: 5", body=CHUNKED_5), 400, ""),
    ("two-cl-differing", post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), 400, ""),
    ("two-cl-same", post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"), 400, ""),
    ("cl-empty", post(b"Content-Length: ", body=b"hello"), 400, ""),
    ("cl-plus", post(b"Content-Length: +5", body=b"hello"), 400, ""),
    ("cl-minus", post(b"Content-Length: -5", body=b"hello"), 400, ""),
    ("cl-hex", post(b"Content-Length: 0x5", body=b"hello"), 400, ""),
    ("cl-list", post(b"Content-Length: 5, 5", body=b"hello"), 400, ""),
    ("cl-space-inside", post(b"Content-Length: 5 5", body=b"hello"), 400, ""),
    ("cl-overflow", post(b"Content-Length: 99999999999999999999999", body=b"hello"), 400, ""),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked", body=CHUNKED_5), 400, ""),
    ("te-vtab-chunked", post(b"Transfer-Encoding: \x0bchunked", body=CHUNKED_5), 400, ""),
    ("te-chun-ked", post(b"Transfer-Encoding: chun ked", body=CHUNKED_5), 400, ""),
    ("te-chunked-identity", post(b"Transfer-Encoding: chunked, identity", body=CHUNKED_5), 400, ""),
    ("te-identity", post(b"Transfer-Encoding: identity", body=b"hello"), 400, ""),
    # chunked applied twice: malformed (400) or a coding portier does not implement (501)
    ("te-chunked-twice", post(b"Transfer-Encoding: chunked, chunked", body=CHUNKED_5), (400, 501),
     ""),
    ("te-two-headers", post(TE, TE, body=CHUNKED_5), 400, ""),
    ("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked", body=CHUNKED_5), 501, ""),
    ("te-http10", b"POST / HTTP/1.0\r\n" + H + TE + b"\r\n\r\n" + CHUNKED_5, 400, ""),
    # chunks
    ("chunk-size-zz", chunked_post(b"zz\r\nhello\r\n0\r\n\r\n"), 400, ""),
    ("chunk-size-empty", chunked_post(b"\r\nhello\r\n0\r\n\r\n"), 400, ""),
    ("chunk-size-overflow", chunked_post(b"1" + b"0" * 20 + b"\r\nhello\r\n0\r\n\r\n"), 400, ""),
    ("chunk-lf-only", chunked_post(b"5\nhello\n0\n\n"), 400, ""),
    ("chunk-data-no-crlf", chunked_post(b"5\r\nhelloXX0\r\n\r\n"), 400, ""),
    ("chunk-ext-too-long", chunked_post(b"5;" + b"a" * 1100 + b"\r\nhello\r\n0\r\n\r\n"), 400, ""),
    # the head
    ("obs-fold", ctl(b"X-A: 1", b"  folded"), 400, ""),
    ("obs-fold-tab", ctl(b"X-A: 1", b"\tfolded"), 400, ""),
    ("ws-first-header-line", get_line(b"GET / HTTP/1.1\r\n " + TE), 400, ""),
    ("bare-cr-in-value", ctl(b"X-A: a\rb"), 400, ""),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r" + H + b"\r\n", 400, ""),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: b.test\nX-A: 1\r\n\r\n", 400, ""),
    ("bare-lf-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400, ""),
    ("nul-in-value", ctl(b"X-A: a\x00b"), 400, ""),
    ("nul-in-name", ctl(b"X-\x00A: 1"), 400, ""),
    ("ctl-01-in-value", ctl(b"X-A: a\x01b"), 400, ""),
    ("del-in-value", ctl(b"X-A: a\x7fb"), 400, ""),
    ("space-before-colon", ctl(b"X-A : 1"), 400, ""),
    ("space-before-colon-te", post(b"Transfer-Encoding : chunked", b"Content-Length: 5",
                                   body=CHUNKED_5), 400, ""),
    ("tab-before-colon", ctl(b"X-A\t: 1"), 400, ""),
    ("empty-header-name", ctl(b": value"), 400, ""),
    ("no-colon", ctl(b"X-A 1"), 400, ""),
    ("no-host-http11", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, ""),
    ("two-hosts", get_line(b"GET / HTTP/1.1", b"Host: other.test"), 400, ""),
    ("host-empty-http11", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, ""),
    ("host-bad-chars", b"GET / HTTP/1.1\r\nHost: b test\r\n\r\n", 400, ""),
    # the request line
    ("hash-in-target", get_line(b"GET /a#frag HTTP/1.1"), 400, ""),
    ("invalid-method-char", get_line(b"G@T / HTTP/1.1"), 400, ""),
    ("unknown-method", get_line(b"BREW / HTTP/1.1"), 501, ""),
    ("target-not-origin-form", get_line(b"GET foo HTTP/1.1"), 400, ""),
    ("target-space", get_line(b"GET /a b HTTP/1.1"), 400, ""),
    ("target-ctl", get_line(b"GET /a\x01b HTTP/1.1"), 400, ""),
    ("target-asterisk-get", get_line(b"GET * HTTP/1.1"), 400, ""),
    ("two-spaces", get_line(b"GET  / HTTP/1.1"), 400, ""),
    ("http09", b"GET /\r\n\r\n", 400, ""),
    ("version-lowercase", get_line(b"GET / http/1.1"), 400, ""),
    ("http20", get_line(b"GET / HTTP/2.0"), 505, ""),
    ("http12", get_line(b"GET / HTTP/1.2"), 505, ""),
    ("http30", get_line(b"GET / HTTP/3.0"), 505, ""),
    # limits
    ("request-line-too-long", get_line(b"GET /" + b"a" * 20000 + b" HTTP/1.1"), 414, ""),
    ("request-line-too-long-1k", get_line(b"GET /" + b"a" * 2000 + b" HTTP/1.1"), 414, LIMITS_1K),
    ("head-too-large-1k", get_line(b"GET / HTTP/1.1", b"X-Big: " + b"a" * 1100), 431, LIMITS_1K),
    ("head-too-large-many-1k", get_line(b"GET / HTTP/1.1", *[b"X-A: 1234567890"] * 80), 431,
     LIMITS_1K),
    ("head-too-large-default", get_line(b"GET / HTTP/1.1", b"X-Big: " + b"a" * 17000), 431, ""),
    ("body-too-large-cl", post(b"Content-Length: 2000", body=b"a" * 2000), 413, LIMITS_1K),
    ("body-too-large-chunk", chunked_post(chunk_body(b"a" * 2000)), 413, LIMITS_1K),
]


@pytest.mark.parametrize(
    "data,status,limits", [pytest.param(d, s, lim, id=i) for i, d, s, lim in REFUSALS]
)
def test_refused_and_never_forwarded(wire_factory, data, status, limits):
    w = wire_factory(limits=limits)
    with Conn(w.addr) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it all went out; the answer is still readable
        r = c.read_final()
        assert r.status in (status if isinstance(status, tuple) else (status,)), r
        c.assert_closed()
    assert (r.header("Connection") or "").lower() == "close", r
    time.sleep(0.05)
    assert w.b.received == b"", w.b.received[:500]


def test_chunked_body_above_the_limit_in_small_chunks_is_413(wire_factory):
    w = wire_factory(limits="max_body_bytes: 1k")
    with Conn(w.addr) as c:
        c.send(post(b"Transfer-Encoding: chunked", body=chunk_body(*[b"a" * 100] * 20)))
        r = c.read_final()
        assert r.status == 413, r
        c.assert_closed()
    # the head may have gone out before the body was counted, but never the whole body
    assert b"0\r\n\r\n" not in w.b.received, w.b.received[-200:]


def test_body_at_the_limit_is_forwarded(wire_factory):
    w = wire_factory(limits="max_body_bytes: 1k")
    with Conn(w.addr) as c:
        c.send(post(b"Content-Length: 1024", body=b"a" * 1024))
        assert c.read_final().status == 200
        c.send(post(b"Transfer-Encoding: chunked", body=chunk_body(b"a" * 1000, b"b" * 24)))
        assert c.read_final().status == 200
    reqs = w.b.wait_requests(2)
    assert [len(r.body) for r in reqs] == [1024, 1024]


def test_slowloris_gets_408_after_client_header_timeout(wire_factory):
    w = wire_factory(timeouts="client_header: 1s")
    head = b"GET / HTTP/1.1\r\nHost: b.test\r\n" + b"X-Slow: " + b"a" * 100
    with Conn(w.addr) as c:
        start = time.monotonic()
        got = b""
        for byte in head:
            try:
                c.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            # read what portier may have answered meanwhile
            c.sock.settimeout(0.2)
            try:
                data = c.sock.recv(65536)
            except socket.timeout:
                data = None
            except ConnectionResetError:
                data = b""
            c.sock.settimeout(TIMEOUT)
            if data is not None:
                got += data
                break
            if time.monotonic() - start > 5:
                break
        c.buf = got
        r = c.read_final()
        elapsed = time.monotonic() - start
        assert r.status == 408, r
        c.assert_closed()
    assert 0.8 <= elapsed <= 2.0, elapsed
    assert w.b.received == b""


# ---------------------------------------------------------------------------------------------
# Backend failures.


def test_refused_server_is_skipped_for_the_next(backends, start_portier):
    b = backends(B1)
    p = start_portier(config({"b": [DEAD, B1]}), PX)
    with Conn(p.addr) as c:
        for i in range(10):
            r = c.request("GET", f"/{i}")
            assert r.status == 200, (i, r)
    for i in range(10):  # and on fresh client connections
        assert get(p.addr, f"/fresh/{i}").status == 200
    assert len(b.wait_requests(20)) == 20


def assert_small_error_page(r, status, rid, *secrets):
    assert r.status == status, r
    assert len(r.body) <= 1024, r
    assert str(status) in r.text, r
    assert rid in r.text, r
    for s in secrets:
        assert s not in r.text, (s, r)


INTERNALS = ("127.0.0.3", "2810", "refused", "errno", "timed out", ".c:", "portier/", "libevent")


def test_all_servers_refusing_is_502(start_portier):
    p = start_portier(config({"b": [DEAD, ("127.0.0.36", 28104)]}), PX)
    rid = "rid-502-test"
    with Conn(p.addr) as c:
        r = c.request("GET", "/", headers=[("X-Request-Id", rid)])
        assert_small_error_page(r, 502, rid, *INTERNALS)
    # without an id of the client's, the page names the one portier made, as the log does
    r = get(p.addr, "/")
    lines = wait_log_lines(p, 2)  # in either order: each worker writes its own lines
    (line,) = [line for line in lines if not line.endswith(f" request_id={rid}")]
    m = COMBINED.fullmatch(line)
    assert m and m["status"] == "502" and HEX32.fullmatch(m["rid"]), line
    assert_small_error_page(r, 502, m["rid"], *INTERNALS)


def test_dns_service_without_servers_is_503(start_portier):
    p = start_portier(
        config({"b": "dns:app.portier-test.invalid:28100"}, extra=f'resolvers: ["{NO_DNS}"]'), PX
    )
    rid = "rid-503-test"
    r = get(p.addr, "/", headers=[("X-Request-Id", rid)])
    assert_small_error_page(r, 503, rid, *INTERNALS)


def test_backend_never_answering_is_504_after_upstream_response(wire_factory):
    w = wire_factory(timeouts="upstream_response: 1s")
    w.set(lambda r, conn: conn.wait_stop())
    rid = "rid-504-test"
    start = time.monotonic()
    r = get(w.addr, "/", headers=[("X-Request-Id", rid)])
    elapsed = time.monotonic() - start
    assert_small_error_page(r, 504, rid, *INTERNALS)
    assert 0.8 <= elapsed <= 2.5, elapsed
    assert len(w.b.requests) == 1  # sent once, not retried


def test_backend_reset_before_answering_is_502(wire):
    wire.set(lambda r, conn: conn.reset())
    r = get(wire.addr, "/", headers=[("X-Request-Id", "rid-reset")])
    assert_small_error_page(r, 502, "rid-reset", *INTERNALS)


def test_backend_bad_response_is_502(wire):
    wire.set(lambda r, conn: b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
    r = get(wire.addr, "/", headers=[("X-Request-Id", "rid-bad")])
    assert_small_error_page(r, 502, "rid-bad", *INTERNALS)


def test_backend_closing_mid_body_closes_the_client_connection(wire):
    def h(r, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        time.sleep(0.1)
        conn.close()

    wire.set(h)
    with Conn(wire.addr) as c:
        c.send(req("GET", "/"))
        r = c.read_head()
        assert r.status == 200 and r.header("Content-Length") == "100"
        rest = c.read_to_eof()  # the client sees the short body, then the close: never a hang
        assert rest == b"x" * 10


def test_refusal_error_page_is_small_and_names_status_and_request_id(wire):
    # The head is refused whole, so the id is portier's (the client's may be what is malformed);
    # the page and the log line name the same one.
    with Conn(wire.addr) as c:
        c.send(post(b"X-Request-Id: rid-400-test", b"Content-Length: 1", b"Content-Length: 2"))
        r = c.read_final()
    (line,) = wait_log_lines(wire.p, 1)
    rid = line.rsplit(" request_id=", 1)[-1]
    assert HEX32.fullmatch(rid), line
    assert_small_error_page(r, 400, rid, *INTERNALS, "Content-Length")


# ---------------------------------------------------------------------------------------------
# The access log.

COMBINED = re.compile(
    r'(?P<client>127\.0\.0\.1) - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<proto>HTTP/1\.[01])" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) "
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)" upstream=(?P<upstream>\S+) '
    r"upstream_status=(?P<ustatus>\d{3}|-) duration_ms=(?P<ms>\d+\.\d{3}) request_id=(?P<rid>\S+)"
)


def test_access_log_has_one_combined_line_per_request(wire):
    with Conn(wire.addr) as c:
        for i in range(3):
            r = c.request(
                "GET",
                f"/log/{i}?q=1",
                headers=[("Referer", "http://ref.example/"), ("User-Agent", "wire-test/1.0"),
                         ("X-Request-Id", f"log-{i}")],
            )
            assert r.status == 200
    lines = wait_log_lines(wire.p, 3)
    time.sleep(0.1)
    lines = [line for line in wire.p.log().splitlines() if line]
    assert len(lines) == 3, lines
    for i, line in enumerate(lines):
        m = COMBINED.fullmatch(line)
        assert m, line
        assert m["method"] == "GET" and m["target"] == f"/log/{i}?q=1" and m["proto"] == "HTTP/1.1"
        assert m["status"] == "200" and m["bytes"] == str(len(f"ok GET /log/{i}?q=1\n"))
        assert m["referer"] == "http://ref.example/" and m["ua"] == "wire-test/1.0"
        assert m["upstream"] == hp(B1) and m["ustatus"] == "200"
        assert m["rid"] == f"log-{i}"


def test_access_log_json_is_one_object_per_line(wire_factory):
    w = wire_factory(extra="access_log_format: json")
    with Conn(w.addr) as c:
        for i in range(3):
            r = c.request("GET", f"/j/{i}", headers=[("User-Agent", 'quote" back\\slash')])
            assert r.status == 200
    lines = wait_log_lines(w.p, 3)
    time.sleep(0.1)
    lines = [line for line in w.p.log().splitlines() if line]
    assert len(lines) == 3, lines
    rids = [r.header("X-Request-Id") for r in w.b.wait_requests(3)]
    for i, line in enumerate(lines):
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        assert obj["method"] == "GET" and obj["target"] == f"/j/{i}", obj
        assert obj["status"] == 200 and obj["upstream_status"] == 200, obj
        assert obj["client"] == "127.0.0.1" and obj["upstream"] == hp(B1), obj
        assert obj["user_agent"] == 'quote" back\\slash', obj
        assert obj["request_id"] == rids[i], obj
        assert isinstance(obj["duration_ms"], (int, float)), obj


def test_access_log_durations_follow_the_clock_request_by_request(wire_factory):
    """portier reads the clock once per turn of its loop, not per request: a reading kept past
    its turn would make a slow answer look instant, or a fast one as slow as the one before it."""

    def pace(r, conn):
        if r.target.startswith("/slow"):
            time.sleep(0.25)
        return fake.response(200, b"paced")

    w = wire_factory(pace, extra="access_log_format: json")
    with Conn(w.addr) as c:
        for target in ("/slow/1", "/fast/1", "/slow/2", "/fast/2"):
            assert c.request("GET", target).status == 200
    lines = wait_log_lines(w.p, 4)
    ms = {json.loads(line)["target"]: json.loads(line)["duration_ms"] for line in lines}
    assert 250 <= ms["/slow/1"] < 2000 and 250 <= ms["/slow/2"] < 2000, ms
    assert ms["/fast/1"] < 200 and ms["/fast/2"] < 200, ms


def test_access_log_keeps_the_line_of_a_request_with_a_long_target(wire):
    # Regression: a target longer than the line buffer (4 KiB) lost its whole line.
    target = "/long?" + "a" * 6000
    with Conn(wire.addr) as c:
        r = c.request("GET", target, headers=[("X-Request-Id", "long-target")])
        assert r.status == 200
    (line,) = wait_log_lines(wire.p, 1)
    m = COMBINED.fullmatch(line)
    assert m, line
    assert m["status"] == "200" and m["rid"] == "long-target", line
    assert m["target"].startswith("/long?aaaa") and len(m["target"]) < 4096, line


def test_access_log_line_of_a_refused_request_names_method_bytes_and_id(wire):
    # Regression: the line had method "-", 0 bytes and no request id.
    with Conn(wire.addr) as c:
        c.send(post(b"Content-Length: 1", b"Content-Length: 2"))
        r = c.read_final()
        assert r.status == 400
    (line,) = wait_log_lines(wire.p, 1)
    m = COMBINED.fullmatch(line)
    assert m, line
    assert m["status"] == "400" and m["upstream"] == "-" and m["ustatus"] == "-", line
    assert m["method"] == "POST" and m["target"] == "/", line
    assert m["bytes"] == str(len(r.body)), line
    assert HEX32.fullmatch(m["rid"]), line
    assert m["rid"] in r.text, r
