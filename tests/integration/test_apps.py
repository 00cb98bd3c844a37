"""Black-box tests of app1, app2 and app3: real processes on loopback, raw sockets with exact bytes.

One test per behaviour of the apps' contract (DESIGN.md, "The apps"). The shared topology serves
the tests that only talk to the apps; tests that signal or misconfigure an app start their own on
127.0.0.26-29.
"""

import datetime
import re
import signal
import socket
import time
from html.parser import HTMLParser

import pytest

import httpc
import procs
from conftest import PORT
from httpc import TIMEOUT, req

# ---------------------------------------------------------------------------------------------
# The client (httpc), to Host test.example unless told.


class Conn(httpc.Conn):
    """A connection to an app, whose every response with a body carries Content-Length."""

    length_required = True


get = Conn.get


def info(addr, **kw):
    r = get(addr, "/api/info", **kw)
    assert r.status == 200, r
    return r.json()


class PageParser(HTMLParser):
    """Collects what the tests look at in a page: the document's structure and its table."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.doctype = None
        self.html_attrs = None
        self.metas = []
        self.texts = {"title": "", "h1": "", "style": ""}
        self.rows = {}
        self._in = []
        self._th = self._td = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.html_attrs = attrs
        elif tag == "meta":
            self.metas.append(attrs)
        elif tag == "th":
            self._th = ""
        elif tag == "td":
            self._td = ""
        if tag not in ("meta",):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if tag == "td" and self._th is not None:
            self.rows[self._th] = self._td
            self._th = self._td = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        top = self._in[-1] if self._in else None
        if top in self.texts:
            self.texts[top] += data
        elif top == "th":
            self._th += data
        elif top == "td":
            self._td += data


def parse_page(body):
    p = PageParser()
    p.feed(body.decode("utf-8"))
    p.close()
    return p


def assert_recent(iso):
    """iso is "YYYY-MM-DDTHH:MM:SSZ" and within a few seconds of now."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", iso), iso
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )
    assert abs(t.timestamp() - time.time()) < 5, iso


POD_PARAMS = pytest.mark.parametrize(
    "pod", ["app1-pod", "app2-pod-a", "app2-pod-b", "app2-pod-c", "app3-pod"]
)


# ---------------------------------------------------------------------------------------------
# The pages.


@POD_PARAMS
def test_page_is_html5_showing_app_pod_ip_counter_host_time(topology, pod):
    a = topology[pod]
    r = get(a.addr, "/", host="page.example")
    assert r.status == 200
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert int(r.header("Content-Length")) == len(r.body)
    assert r.body.startswith(b"<!DOCTYPE html>")
    p = parse_page(r.body)
    assert p.doctype.lower() == "doctype html"
    assert p.html_attrs is not None and p.html_attrs.get("lang")
    assert {"charset": "utf-8"} in p.metas
    viewport = [m for m in p.metas if m.get("name") == "viewport"]
    assert viewport and "width=device-width" in viewport[0].get("content", "")
    assert a.app in p.texts["title"]
    assert a.app in p.texts["h1"]
    assert p.rows["App"] == a.app
    assert p.rows["Pod"] == a.pod
    assert p.rows["Pod IP"] == a.ip
    assert int(p.rows["Requests served"]) >= 1
    assert p.rows["Host"] == "page.example"
    assert_recent(p.rows["Time"])


def test_each_app_has_its_own_title_and_colour(app1, app2_pods, app3):
    looks = {}
    for a in (app1, app2_pods[0], app3):
        p = parse_page(get(a.addr, "/").body)
        accent = re.search(r"--accent:([^;}]+)", p.texts["style"])
        assert accent, p.texts["style"]
        looks[a.app] = (p.texts["title"], p.texts["h1"], accent.group(1))
    titles = {t for t, _, _ in looks.values()}
    headlines = {h for _, h, _ in looks.values()}
    colours = {c for _, _, c in looks.values()}
    assert len(titles) == len(headlines) == len(colours) == 3, looks


def test_replicas_of_one_app_share_the_look_but_name_their_pod(app2_pods):
    pages = [parse_page(get(a.addr, "/").body) for a in app2_pods]
    assert len({p.texts["h1"] for p in pages}) == 1
    assert [p.rows["Pod"] for p in pages] == [a.pod for a in app2_pods]


@POD_PARAMS
def test_api_info_is_json_with_every_field(topology, pod):
    a = topology[pod]
    r = get(a.addr, "/api/info", host="json.example")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert int(r.header("Content-Length")) == len(r.body)
    doc = r.json()
    assert set(doc) == {"app", "pod", "ip", "requests", "host", "time"}
    assert doc["app"] == a.app
    assert doc["pod"] == a.pod
    assert doc["ip"] == a.ip
    assert isinstance(doc["requests"], int) and doc["requests"] >= 1
    assert doc["host"] == "json.example"
    assert_recent(doc["time"])


def test_healthz_says_ok(app1):
    r = get(app1.addr, "/healthz")
    assert r.status == 200
    assert r.body == b"ok\n"
    assert r.header("Content-Type").startswith("text/plain")


@pytest.mark.parametrize(
    "target",
    ["/nope", "/index.html", "/api", "/api/", "/api/info/", "/api/infox", "/healthz/",
     "/healthzz", "//", "/API/INFO", "/" + "a" * 3000],
)
def test_other_paths_are_404(app1, target):
    r = get(app1.addr, target)
    assert r.status == 404, r
    assert int(r.header("Content-Length")) == len(r.body)


@pytest.mark.parametrize("target", ["/", "/api/info", "/healthz"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow(app1, method, target):
    r = get(app1.addr, target, method=method)
    assert r.status == 405, r
    assert r.header("Allow") == "GET, HEAD"


def test_405_consumes_the_request_body_and_keeps_the_connection(app1):
    with Conn(app1.addr) as c:
        c.send(req("POST", "/api/info", headers=[("Content-Length", "11")], body=b"GET /nope\r\n"))
        c.send(req("POST", "/", headers=[("Transfer-Encoding", "chunked")],
                   body=b"5\r\nhello\r\n0\r\n\r\n"))
        c.send(req("GET", "/healthz"))
        assert c.read_response().status == 405
        assert c.read_response().status == 405
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok\n")


# ---------------------------------------------------------------------------------------------
# HEAD.


@pytest.mark.parametrize("target,status", [("/healthz", 200), ("/nope", 404)])
def test_head_has_the_get_status_and_length_and_no_body(app1, target, status):
    g = get(app1.addr, target)
    with Conn(app1.addr) as c:
        c.send(req("HEAD", target, headers=[("Connection", "close")]))
        h = c.read_response("HEAD")
        assert c.read_to_eof() == b"", "bytes after the head of a HEAD response"
    assert h.status == g.status == status
    assert h.header("Content-Length") == g.header("Content-Length") == str(len(g.body))
    assert h.header("Content-Type") == g.header("Content-Type")


@pytest.mark.parametrize("target", ["/", "/api/info"])
def test_head_of_a_page_then_pipelined_get_answers_correctly(app3, target):
    # HEAD and GET in one send: if the HEAD answer carried a body, the GET's would be misread.
    with Conn(app3.addr) as c:
        c.send(req("HEAD", target) + req("GET", target) + req("GET", "/api/info"))
        h = c.read_response("HEAD")
        g = c.read_response()
        after = c.read_response().json()
    assert h.status == g.status == 200
    assert h.header("Content-Type") == g.header("Content-Type")
    # The page shows the counter, which the GET raised by one: the length may grow by a digit.
    n_get = after["requests"] - 1
    grew = len(str(n_get)) - len(str(n_get - 1))
    assert int(h.header("Content-Length")) == len(g.body) - grew


# ---------------------------------------------------------------------------------------------
# Routing details.


@pytest.mark.parametrize(
    "target,status,kind",
    [("/api/info?x=1", 200, "json"), ("/?a=b&c=<d>", 200, "html"), ("/healthz?probe=1", 200, "ok"),
     ("/api/info?", 200, "json"), ("/nope?x=/api/info", 404, None)],
)
def test_query_string_is_ignored_for_routing(app1, target, status, kind):
    r = get(app1.addr, target)
    assert r.status == status
    if kind == "json":
        assert r.json()["app"] == "app1"
    elif kind == "html":
        assert r.header("Content-Type") == "text/html; charset=utf-8"
    elif kind == "ok":
        assert r.body == b"ok\n"


def test_long_query_string_is_ignored_for_routing(app1):
    r = get(app1.addr, "/api/info?q=" + "x" * 3000)
    assert r.status == 200, r
    assert r.json()["app"] == "app1"


@pytest.mark.parametrize(
    "target,status,kind",
    [("http://app1.com/api/info", 200, "json"), ("http://app1.com/api/info?x=1", 200, "json"),
     ("http://app1.com:8080/healthz", 200, "ok"), ("http://app1.com/", 200, "html"),
     ("http://app1.com", 200, "html"), ("http://app1.com/nope", 404, None)],
)
def test_absolute_form_target(app1, target, status, kind):
    r = get(app1.addr, target, host="app1.com")
    assert r.status == status, r
    if kind == "json":
        assert r.json()["host"] == "app1.com"
    elif kind == "html":
        assert parse_page(r.body).rows["App"] == "app1"
    elif kind == "ok":
        assert r.body == b"ok\n"


# ---------------------------------------------------------------------------------------------
# The counter.


def test_counter_rises_by_one_per_page_and_not_for_healthz(app1):
    before = info(app1.addr)["requests"]
    assert get(app1.addr, "/").status == 200
    for _ in range(3):
        assert get(app1.addr, "/healthz").status == 200
    assert info(app1.addr)["requests"] == before + 2
    page = parse_page(get(app1.addr, "/").body)
    assert int(page.rows["Requests served"]) == before + 3


def test_counter_rises_by_one_per_request_on_one_keepalive_connection(app3):
    with Conn(app3.addr) as c:
        seen = [c.request("GET", "/api/info").json()["requests"] for _ in range(50)]
    assert seen == list(range(seen[0], seen[0] + 50))


def test_each_app2_replica_has_its_own_pod_name_and_counter(app2_pods):
    before = {a.pod: info(a.addr) for a in app2_pods}
    for k, a in enumerate(app2_pods, start=1):
        for _ in range(k):
            assert get(a.addr, "/").status == 200
    for k, a in enumerate(app2_pods, start=1):
        doc = info(a.addr)
        assert doc["pod"] == a.pod and doc["ip"] == a.ip and doc["app"] == "app2"
        assert doc["requests"] == before[a.pod]["requests"] + k + 1, a.pod


# ---------------------------------------------------------------------------------------------
# The Host header, escaped.

HOSTS = [
    pytest.param(b'quo"te"s', id="quotes"),
    pytest.param(b"back\\slash\\", id="backslashes"),
    pytest.param(b"<script>alert('x')</script>", id="script"),
    pytest.param(b"caf\xe9.\xff\x80\xa0.example", id="bytes>=0x80"),
    pytest.param(b'"\\<&>\xc3\xa9\'', id="mixed"),
    pytest.param(b"x" * 200 + b"\xe9" * 120, id="long"),
]


@pytest.mark.parametrize("host", HOSTS)
def test_json_parses_whatever_the_host(app1, host):
    r = get(app1.addr, "/api/info", host=host)
    assert r.status == 200
    sent = host.decode("latin-1")
    got = r.json()["host"]
    if len(host) <= 256:
        assert got == sent
    else:  # the apps keep the first 256 bytes
        assert len(got) >= 200 and sent.startswith(got)


@pytest.mark.parametrize("host", HOSTS)
def test_html_escapes_the_host(app1, host):
    r = get(app1.addr, "/", host=host)
    assert r.status == 200
    body = r.body.decode("utf-8")  # valid UTF-8 whatever bytes the Host held
    assert "<script>" not in body
    sent = host.decode("latin-1")
    got = parse_page(r.body).rows["Host"]
    if len(host) <= 256:
        assert got == sent
    else:
        assert len(got) >= 200 and sent.startswith(got)
    if b"<script>" in host:
        assert "&lt;script&gt;" in body


def test_no_host_header_shows_an_empty_host(app1):
    assert info(app1.addr, host=None, version="HTTP/1.0")["host"] == ""


def test_head_larger_than_the_read_buffer(app1):
    # 10 KB of headers before the Host header: the server's input buffer holds 8 KB.
    r = get(app1.addr, "/api/info", host=None,
            headers=[("Cookie", "c=" + "x" * 10000), ("Host", "after.cookie")])
    assert r.status == 200
    assert r.json()["host"] == "after.cookie"


def test_request_split_into_single_bytes(app1):
    with Conn(app1.addr) as c:
        for b in req("GET", "/api/info", host="split.example"):
            c.send(bytes([b]))
            time.sleep(0.002)
        r = c.read_response()
    assert r.status == 200 and r.json()["host"] == "split.example"


# ---------------------------------------------------------------------------------------------
# Connections: keep-alive, close, pipelining, errors.


def test_http11_keeps_the_connection_open(app2_pods):
    with Conn(app2_pods[0].addr) as c:
        for i in range(30):
            r = c.request("GET", ["/", "/api/info", "/healthz"][i % 3])
            assert r.status == 200
            assert r.header("Connection") is None, r


def test_http10_closes_by_default(app1):
    with Conn(app1.addr) as c:
        c.send(req("GET", "/api/info", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200 and r.json()["app"] == "app1"
        assert (r.header("Connection") or "").lower() != "keep-alive"
        assert c.read_to_eof() == b""


def test_http10_keep_alive_keeps_the_connection_open(app1):
    with Conn(app1.addr) as c:
        for _ in range(3):
            r = c.request("GET", "/healthz", version="HTTP/1.0",
                          headers=[("Connection", "keep-alive")])
            assert r.status == 200
            assert r.header("Connection").lower() == "keep-alive"
        r = c.request("GET", "/healthz", version="HTTP/1.0")
        assert r.status == 200
        assert c.read_to_eof() == b""


def test_connection_close_is_answered_and_honoured(app1):
    with Conn(app1.addr) as c:
        # The request pipelined behind the one that asked to close must get no answer.
        c.send(req("GET", "/api/info", headers=[("Connection", "close")]) + req("GET", "/healthz"))
        r = c.read_response()
        assert r.status == 200 and r.json()["app"] == "app1"
        assert r.header("Connection").lower() == "close"
        assert c.read_to_eof() == b""


def test_pipelined_requests_are_answered_in_order(app3):
    with Conn(app3.addr) as c:
        c.send(req("GET", "/healthz") + req("GET", "/api/info") + req("GET", "/nope")
               + req("HEAD", "/") + req("GET", "/") + req("POST", "/healthz")
               + req("GET", "/api/info", host="last.example"))
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response("HEAD")
        r5 = c.read_response()
        r6 = c.read_response()
        r7 = c.read_response()
    assert (r1.status, r1.body) == (200, b"ok\n")
    assert r2.status == 200 and r2.json()["host"] == "test.example"
    assert r3.status == 404
    assert r4.status == 200 and r4.header("Content-Type").startswith("text/html")
    assert r5.status == 200 and parse_page(r5.body).rows["App"] == "app3"
    assert r6.status == 405
    assert r7.json()["host"] == "last.example"
    assert r7.json()["requests"] == r2.json()["requests"] + 3


def test_many_pipelined_requests_beyond_the_buffers(app3):
    # About 10 KB of requests and 150 KB of answers: more than the server's buffers hold at once.
    targets = ["/healthz", "/api/info", "/", "/nope"] * 60
    with Conn(app3.addr) as c:
        c.send(b"".join(req("GET", t, host="pipe.example") for t in targets))
        answers = [c.read_response() for _ in targets]
        c.send(req("GET", "/healthz", headers=[("Connection", "close")]))
        assert c.read_response().body == b"ok\n"
        assert c.read_to_eof() == b""
    counters = []
    for t, r in zip(targets, answers):
        if t == "/healthz":
            assert (r.status, r.body) == (200, b"ok\n")
        elif t == "/api/info":
            assert r.status == 200
            counters.append(r.json()["requests"])
        elif t == "/":
            assert r.status == 200
            counters.append(int(parse_page(r.body).rows["Requests served"]))
        else:
            assert r.status == 404
    assert counters == list(range(counters[0], counters[0] + len(counters)))


MALFORMED = [
    pytest.param(b"\x00\x01\x02\xff garbage\r\n\r\n", id="binary"),
    pytest.param(b"hello world\r\n\r\n", id="not-http"),
    pytest.param(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", id="header-without-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", id="bad-content-length"),
    pytest.param(b"GET / FOO/1.1\r\n\r\n", id="bad-version"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", id="nul-in-header"),
    pytest.param(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="cl-and-te",
    ),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_request_gets_400_and_close(app1, data):
    with Conn(app1.addr) as c:
        c.send(data)
        r = c.read_response()
        assert r.status == 400, r
        assert r.header("Connection").lower() == "close"
        assert c.read_to_eof() == b""


def test_malformed_request_after_a_good_one(app1):
    with Conn(app1.addr) as c:
        c.send(req("GET", "/healthz") + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
               + req("GET", "/healthz"))
        assert c.read_response().body == b"ok\n"
        assert c.read_response().status == 400
        assert c.read_to_eof() == b""
    assert get(app1.addr, "/healthz").status == 200  # and the server still serves


def test_200_concurrent_keepalive_connections(app3):
    conns = []
    try:
        for _ in range(200):
            conns.append(Conn(app3.addr))
        counters = []
        for _ in range(3):  # every connection has a request in flight at once, three times over
            for i, c in enumerate(conns):
                c.send(req("GET", "/api/info" if i % 2 == 0 else "/healthz"))
            for i, c in enumerate(conns):
                r = c.read_response()
                assert r.status == 200
                if i % 2 == 0:
                    counters.append(r.json()["requests"])
                else:
                    assert r.body == b"ok\n"
        assert sorted(counters) == list(range(min(counters), min(counters) + 300))
    finally:
        for c in conns:
            c.close()
    assert get(app3.addr, "/healthz").status == 200


# ---------------------------------------------------------------------------------------------
# Signals. Each test starts an app of its own.


def refused(addr, timeout=1.0):
    """True once connecting to addr is refused (polled for up to timeout seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(addr, timeout=TIMEOUT).close()
        except ConnectionRefusedError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def test_sigterm_lets_the_request_in_flight_finish(start_app):
    addr = ("127.0.0.27", PORT)
    p = start_app("app2", "127.0.0.27:28080")
    with Conn(addr) as idle, Conn(addr) as c:
        assert idle.request("GET", "/healthz").status == 200
        c.send(b"GET /api/info HTTP/1.1\r\nHost: drain")
        time.sleep(0.2)  # let the server read the first half before the signal
        p.popen.send_signal(signal.SIGTERM)
        p.wait_for_output("SIGTERM")
        assert refused(addr), "new connections must be refused while draining"
        assert idle.read_to_eof() == b"", "an idle keep-alive connection is closed at once"
        time.sleep(0.1)
        assert p.running(), "exited with a request in flight"
        c.send(b".example\r\nAccept: */*\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("Connection").lower() == "close"
        assert r.json()["host"] == "drain.example"
        assert c.read_to_eof() == b""
    result = procs.wait(p, timeout=2)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_on_an_idle_app_exits_0_promptly(start_app, sig):
    p = start_app("app1", "127.0.0.27:28080")
    assert get(("127.0.0.27", PORT), "/healthz").status == 200
    t0 = time.monotonic()
    p.popen.send_signal(sig)
    result = procs.wait(p, timeout=2)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 1.5
    assert refused(("127.0.0.27", PORT))


# ---------------------------------------------------------------------------------------------
# The environment.


@pytest.mark.parametrize(
    "listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:", "host.example:80", "1.2.3.4.5:80",
               "127.0.0.1:0", "127.0.0.1:80x", "[127.0.0.1:80", "[::1]80"]
)
def test_bad_listen_exits_1_with_a_message(run_app, listen):
    t0 = time.monotonic()
    result = run_app("app1", {"LISTEN": listen})
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - t0 < 2
    assert "LISTEN" in result.stderr and listen in result.stderr, result.stderr


def test_address_in_use_exits_1_with_a_message(run_app):
    with socket.socket() as taken:
        taken.bind(("127.0.0.26", PORT))
        taken.listen(1)
        result = run_app("app1", {"LISTEN": "127.0.0.26:28080"})
    assert result.returncode == 1, result.stderr
    assert "127.0.0.26:28080" in result.stderr
    assert "in use" in result.stderr.lower(), result.stderr


def test_pod_ip_from_the_environment_is_shown(start_app):
    start_app("app3", "127.0.0.28:28080", env={"POD_NAME": "p-x", "POD_IP": "127.0.0.123"})
    addr = ("127.0.0.28", PORT)
    doc = info(addr)
    assert (doc["pod"], doc["ip"], doc["app"]) == ("p-x", "127.0.0.123", "app3")
    assert parse_page(get(addr, "/").body).rows["Pod IP"] == "127.0.0.123"


def test_pod_name_is_escaped(start_app):
    pod = "<i>pod</i> & \"q\" 'a' \\"
    start_app("app1", "127.0.0.28:28080", env={"POD_NAME": pod})
    addr = ("127.0.0.28", PORT)
    assert info(addr)["pod"] == pod
    r = get(addr, "/")
    assert "<i>" not in r.text
    page = parse_page(r.body)
    assert page.rows["Pod"] == pod
    assert pod in page.texts["title"]


@pytest.mark.parametrize("pod_name", [None, ""])
def test_pod_name_defaults_to_the_hostname(start_app, pod_name):
    start_app("app2", "127.0.0.29:28080", env={"POD_NAME": pod_name})
    addr = ("127.0.0.29", PORT)
    doc = info(addr)
    assert doc["pod"] == socket.gethostname()
    assert doc["ip"] == "127.0.0.29"
    assert parse_page(get(addr, "/").body).rows["Pod"] == socket.gethostname()


# ---------------------------------------------------------------------------------------------
# The harness itself: a sanitizer report must fail the test even when the process behaved.


@pytest.mark.parametrize("report", procs.SANITIZER_MARKERS)
def test_procs_fails_on_a_sanitizer_report(tmp_path, report):
    script = f"echo '==1=={report}: heap-use-after-free' >&2; exec sleep 5"
    p = procs.start(["/bin/sh", "-c", script], log_dir=str(tmp_path), name="fake")
    p.wait_for_output(report)
    with pytest.raises(AssertionError, match="sanitizer report from fake"):
        procs.stop(p, timeout=1)
    assert not p.running()
