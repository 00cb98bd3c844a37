"""bench/openloop.c, the bench's open-loop load generator, against small servers of the test's own.

What is checked is the generator's arithmetic, not anyone's speed: the requests it sends at a rate
(and leaves out of the figures during the warm-up), the latency it charges from each request's due
time (a server that stalls once shows up in p99 and max, not only in the few requests in flight),
its errors and exit statuses, and the responses it can find the end of (Content-Length, chunked,
until close). The servers are backend.py's (a thread per connection, keep-alive, answering at
once unless told otherwise) on 127.0.0.120-129, ports 29200-29299. openloop is built, with the
project's warnings, into this session's temp directory, and every run of it is bounded
(procs.run kills it by PID, and fails, past its timeout).
"""

import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import backend
import procs
from conftest import REPO

CFLAGS = (
    "-O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wshadow "
    "-Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough -fno-common"
).split()

# Each test its own address, so that no test meets another's connections in TIME_WAIT.
ADDR_RATE = ("127.0.0.120", 29200)
ADDR_WARMUP = ("127.0.0.120", 29201)
ADDR_HEADERS = ("127.0.0.120", 29202)
ADDR_STALL = ("127.0.0.121", 29210)
ADDR_NO_STALL = ("127.0.0.121", 29211)
ADDR_NOTHING = ("127.0.0.122", 29220)
ADDR_500 = ("127.0.0.122", 29221)
ADDR_SILENT = ("127.0.0.122", 29222)
ADDR_CHUNKED = ("127.0.0.123", 29230)
ADDR_PIECES = ("127.0.0.123", 29231)
ADDR_SLOW_END = ("127.0.0.123", 29232)
ADDR_EOF = ("127.0.0.123", 29233)


@dataclass
class Line:
    """openloop's one line of stdout."""

    target_rate: float
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    requests: int
    errors: int


@dataclass
class Run:
    returncode: int
    line: Line
    stderr: str


@pytest.fixture(scope="session")
def openloop_bin(tmp_path_factory) -> Path:
    """bench/openloop.c built as the bench builds its clients."""
    out = tmp_path_factory.mktemp("openloop") / "openloop"
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libevent"], capture_output=True, text=True
    )
    if flags.returncode != 0:
        pytest.fail(f"pkg-config libevent: {flags.stderr}", pytrace=False)
    cc = subprocess.run(
        ["cc", *CFLAGS, "-o", str(out), str(REPO / "bench/openloop.c"), *flags.stdout.split()],
        capture_output=True,
        text=True,
    )
    if cc.returncode != 0:
        pytest.fail(f"bench/openloop.c does not build:\n{cc.stderr}", pytrace=False)
    return out


@pytest.fixture
def openloop(openloop_bin, tmp_path):
    """A function: openloop(args, addr) runs openloop ARGS IP PORT to its end (killed by PID, and
    failing, after timeout seconds) and returns a Run with its parsed line."""

    def _run(args, addr, timeout=20.0) -> Run:
        r = procs.run(
            [str(openloop_bin), *args, addr[0], str(addr[1])],
            timeout=timeout,
            log_dir=str(tmp_path),
            name="openloop",
        )
        fields = r.stdout.split()
        assert len(fields) == 8, f"not one line of 8 fields: {r.stdout!r}; stderr:\n{r.stderr}"
        v = [float(f) for f in fields]
        line = Line(*v[:6], requests=int(fields[6]), errors=int(fields[7]))
        return Run(returncode=r.returncode, line=line, stderr=r.stderr)

    return _run


def ok(req, conn):
    return backend.response(200, b"ok\n")


def assert_clean(run: Run, due: int):
    """Every one of the due requests answered, with a 2xx, and the run ended well."""
    assert run.returncode == 0, run.stderr
    assert run.line.errors == 0, run.stderr
    assert abs(run.line.requests - due) <= due * 0.1, (run.line, run.stderr)


def test_sends_at_the_rate_asked(openloop, backends):
    b = backends(ADDR_RATE, ok)
    run = openloop(["-r", "500", "-d", "2", "-c", "8"], ADDR_RATE)
    assert_clean(run, 1000)
    assert run.line.target_rate == 500
    assert abs(run.line.achieved_rate - 500) <= 50, run.line
    assert run.line.p50_ms < 100, run.line  # an answer at once; loose for a busy machine
    assert run.line.p50_ms <= run.line.p99_ms <= run.line.p999_ms <= run.line.max_ms, run.line
    assert b.connections <= 8 + 2  # keep-alive: the connections are reused


def test_warmup_requests_are_sent_but_not_counted(openloop, backends):
    b = backends(ADDR_WARMUP, ok)
    run = openloop(["-r", "200", "-d", "1", "-w", "1", "-c", "4"], ADDR_WARMUP)
    assert_clean(run, 200)
    assert abs(len(b.requests) - 400) <= 40, len(b.requests)


def test_sends_the_path_and_headers_given(openloop, backends):
    b = backends(ADDR_HEADERS, ok)
    args = ["-r", "50", "-d", "1", "-c", "2", "-p", "/api/info", "-H", "Host: app2.com"]
    run = openloop(args + ["-H", "X-Bench: yes"], ADDR_HEADERS)
    assert_clean(run, 50)
    for r in b.requests:
        assert (r.method, r.target, r.version) == ("GET", "/api/info", "HTTP/1.1")
        assert r.header_all("Host") == ["app2.com"]
        assert r.header("X-Bench") == "yes"


def test_host_defaults_to_the_address(openloop, backends):
    b = backends(ADDR_HEADERS, ok)
    assert_clean(openloop(["-r", "20", "-d", "0.5", "-c", "1"], ADDR_HEADERS), 10)
    assert {r.header("Host") for r in b.requests} == {"%s:%d" % ADDR_HEADERS}
    assert {r.target for r in b.requests} == {"/"}


class StallOnce:
    """A handler that answers at once, except that every answer due from `after` seconds past the
    first request until `length` seconds later waits for the end of that window: the whole
    server stalls once."""

    def __init__(self, after: float, length: float):
        self.after = after
        self.length = length
        self.first = None
        self.lock = threading.Lock()

    def __call__(self, req, conn):
        t = time.monotonic()
        with self.lock:
            if self.first is None:
                self.first = t
        start = self.first + self.after
        if start <= t < start + self.length:
            conn.wait_stop(start + self.length - t)
        return backend.response(200, b"ok\n")


def test_a_stall_counts_for_every_request_due_during_it(openloop, backends):
    """Coordinated omission: 4 connections, 200 requests/s, and the server stalls for 500 ms once.
    About 100 requests fall due during the stall; a closed-loop client would send only 4 of them
    (and see 4 slow answers, below p99), openloop charges each from its due time."""
    backends(ADDR_STALL, StallOnce(after=1.0, length=0.5))
    run = openloop(["-r", "200", "-d", "3", "-c", "4"], ADDR_STALL)
    assert_clean(run, 600)
    assert run.line.p99_ms >= 200, run.line
    assert run.line.max_ms >= 400, run.line


def test_without_a_stall_no_request_waits_that_long(openloop, backends):
    backends(ADDR_NO_STALL, ok)
    run = openloop(["-r", "200", "-d", "3", "-c", "4"], ADDR_NO_STALL)
    assert_clean(run, 600)
    assert run.line.max_ms < 200, run.line  # loose: the stall above is 500 ms


def test_nothing_listening_exits_1(openloop):
    run = openloop(["-r", "100", "-d", "1", "-c", "2"], ADDR_NOTHING)
    assert run.returncode == 1
    assert (run.line.requests, run.line.errors) == (0, 2), run.line
    assert "no connection could be opened" in run.stderr


def test_non_2xx_answers_are_errors(openloop, backends):
    backends(ADDR_500, lambda req, conn: backend.response(500, b"no\n"))
    run = openloop(["-r", "100", "-d", "1", "-c", "2"], ADDR_500)
    assert run.returncode == 0, run.stderr
    assert abs(run.line.requests - 100) <= 10, run.line
    assert run.line.errors == run.line.requests, run.line


def test_a_server_that_never_answers_ends_in_errors_not_an_endless_queue(openloop, backends):
    """300 requests due on 2 connections that never answer: 2 in flight, at most 2 * RATE = 200
    waiting, the other 98 dropped; every one is an error, and the run still ends by itself."""
    backends(ADDR_SILENT, lambda req, conn: conn.wait_stop())
    run = openloop(["-r", "100", "-d", "3", "-c", "2"], ADDR_SILENT)
    assert run.returncode == 0, run.stderr
    assert (run.line.requests, run.line.errors) == (0, 300), run.stderr
    assert "98 dropped" in run.stderr


GOOD = ["-r", "10", "-d", "1", "-c", "1"]
TARGET = ["127.0.0.124", "29240"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        TARGET,  # no -r, -d, -c
        ["-d", "1", "-c", "1"] + TARGET,
        ["-r", "0", "-d", "1", "-c", "1"] + TARGET,
        ["-r", "x", "-d", "1", "-c", "1"] + TARGET,
        ["-r", "10", "-d", "-1", "-c", "1"] + TARGET,
        ["-r", "10", "-d", "1", "-c", "0"] + TARGET,
        ["-r", "10", "-d", "1", "-c", "1.5"] + TARGET,
        GOOD + ["-w", "-1"] + TARGET,
        GOOD + ["-H", "no colon"] + TARGET,
        GOOD + ["-p", "no-slash"] + TARGET,
        GOOD + ["-z"] + TARGET,
        GOOD + ["localhost", "29240"],
        GOOD + ["127.0.0.124", "0"],
        GOOD + ["127.0.0.124"],
        GOOD + TARGET + ["extra"],
    ],
)
def test_bad_arguments_exit_2(openloop_bin, tmp_path, argv):
    r = procs.run([str(openloop_bin), *argv], timeout=5, log_dir=str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "usage: openloop" in r.stderr
    assert r.stdout == ""


def chunked_ok(req, conn):
    head = backend.response(200, headers=[("Transfer-Encoding", "chunked")], length=False)
    return head + backend.chunked(b"hello ", b"world\n", trailers=b"X-Trailer: 1\r\n")


def in_pieces(req, conn):
    """chunked_ok's response cut at awkward places, each piece its own send: inside the status
    line, a header name, the CRLF that ends the head, the first chunk's size line, its data, the
    CRLF after it, the last chunk, the trailer, the final CRLF."""
    data = chunked_ok(req, conn)
    assert data.startswith(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello ")
    assert len(data) == 88
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    last = 0
    for cut in (5, 23, 46, 48, 53, 57, 70, 80, 87, 88):
        conn.send(data[last:cut])
        last = cut
        time.sleep(0.001)
    return None


def test_chunked_responses(openloop, backends):
    backends(ADDR_CHUNKED, chunked_ok)
    assert_clean(openloop(["-r", "200", "-d", "1", "-c", "4"], ADDR_CHUNKED), 200)


def test_responses_in_pieces(openloop, backends):
    backends(ADDR_PIECES, in_pieces)
    assert_clean(openloop(["-r", "50", "-d", "1", "-c", "4"], ADDR_PIECES), 50)


def test_latency_runs_to_the_last_chunk(openloop, backends):
    """The head and a first chunk at once, the last chunk 100 ms later: every latency includes
    the wait (a lower bound, which no busy machine can break)."""

    def slow_end(req, conn):
        head = backend.response(200, headers=[("Transfer-Encoding", "chunked")], length=False)
        conn.send(head + b"6\r\nhello \r\n")
        conn.wait_stop(0.1)
        conn.send(b"6\r\nworld\n\r\n0\r\n\r\n")
        return None

    backends(ADDR_SLOW_END, slow_end)
    run = openloop(["-r", "20", "-d", "1", "-c", "4"], ADDR_SLOW_END)
    assert_clean(run, 20)
    assert run.line.p50_ms >= 100, run.line


def test_responses_ended_by_close_and_connection_close(openloop, backends):
    """Bodies without a length end when the server closes, and `Connection: close` answers close
    the connection: openloop reopens it, and neither is an error."""
    n = [0]

    def eof_or_close(req, conn):
        n[0] += 1
        if n[0] % 2:
            conn.send(backend.response(200, b"until close\n", length=False))
        else:
            conn.send(backend.response(200, b"closing\n", headers=[("Connection", "close")]))
        conn.close()
        return None

    b = backends(ADDR_EOF, eof_or_close)
    run = openloop(["-r", "50", "-d", "1", "-c", "2"], ADDR_EOF)
    assert_clean(run, 50)
    assert b.connections >= 40  # one per request (the last ones may still be opening)


def test_interim_and_bodiless_responses(openloop, backends):
    """A 103 before the final answer is skipped; a 204 has no body, whatever it says (304 neither,
    by the same rule, but it is no 2xx)."""
    n = [0]

    def interim_then_empty(req, conn):
        n[0] += 1
        final = b"HTTP/1.1 204 No Content\r\n\r\n"
        if n[0] % 2:
            final = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
        return b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + final

    backends(ADDR_EOF, interim_then_empty)
    assert_clean(openloop(["-r", "50", "-d", "1", "-c", "2"], ADDR_EOF), 50)
