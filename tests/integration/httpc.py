"""A minimal HTTP/1.x client over a raw socket, so that every byte sent is the test's choice.

req() builds the exact bytes of a request; a Conn sends bytes and reads responses back through a
buffer of its own: framed by Content-Length, chunked, bodiless (HEAD, 1xx, 204, 304) or delimited
by the close. parse_response() reads one from bytes already received, for tests that drive their
sockets themselves. Every socket operation times out.
"""

import json
import re
import socket
import time

import pytest

TIMEOUT = 3.0  # for every socket operation, unless told
HOST = "test.example"  # the Host of a request, unless told

STATUS_LINE = re.compile(r"(HTTP/1\.[01]) (\d{3}) ([^\r\n]*)")


class Response:
    def __init__(self, version, status, reason, headers, head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order, names as received
        self.head = head  # the raw head, through the blank line
        self.body = b""  # decoded
        self.raw_body = b""  # as received (chunk framing included)
        self.framing = None  # "length", "chunked", "close" or "none"
        self.interim = []  # the 1xx responses before this one (Conn.read_final)

    def header(self, name):
        """The first value of a header (case-insensitive name), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:300]!r}>"


def _latin1(s):
    return s if isinstance(s, bytes) else s.encode("latin-1")


def req(method="GET", target="/", host=HOST, version="HTTP/1.1", headers=(), body=b""):
    """The bytes of one request. target and host may be bytes (sent as they are) or str (sent as
    latin-1, a byte a character); host None: no Host header. headers: [(name, value)]."""
    out = b"%s %s %s\r\n" % (_latin1(method), _latin1(target), _latin1(version))
    if host is not None:
        out += b"Host: " + _latin1(host) + b"\r\n"
    for name, value in headers:
        out += f"{name}: {value}\r\n".encode("latin-1")
    return out + b"\r\n" + body


class Closed(EOFError):
    """The server closed the connection before a whole response."""


class _Incomplete(Exception):
    """A parse of bytes already received needs more of them."""


class _Reader:
    """Parses responses from the front of buf, calling _fill() whenever it needs more bytes. A
    response leaves buf only once it was read whole; until then buf keeps every byte of it."""

    length_required = False  # True: a response with a body must carry Content-Length

    def __init__(self, buf=b""):
        self.buf = buf

    def _fill(self):
        raise _Incomplete

    def _fill_to_close(self):
        """Reads into buf until the server closes."""
        raise _Incomplete

    def _need(self, n):
        while len(self.buf) < n:
            self._fill()

    def _find(self, sep, pos):
        """Where sep starts in buf at or after pos, reading on until it is there."""
        start = pos
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                return i
            start = max(pos, len(self.buf) - len(sep) + 1)
            self._fill()

    def _head(self):
        """The response head at the front of buf, and where it ends."""
        end = self._find(b"\r\n\r\n", 0)
        raw = self.buf[:end]
        lines = raw.decode("latin-1").split("\r\n")
        m = STATUS_LINE.fullmatch(lines[0])
        assert m, f"not a status line: {lines[0]!r} in {raw!r}"
        headers = []
        for line in lines[1:]:
            assert ":" in line and line[0] not in " \t", f"bad header line {line!r} in {raw!r}"
            name, value = line.split(":", 1)
            headers.append((name, value.strip(" \t")))
        head = raw + b"\r\n\r\n"
        return Response(m.group(1), int(m.group(2)), m.group(3), headers, head), end + 4

    def _body(self, r, pos, method):
        """Reads r's body, which starts at pos in buf; returns where the response ends."""
        if method == "HEAD" or r.status < 200 or r.status in (204, 304):
            r.framing = "none"
            return pos
        if self.length_required:
            assert r.has("Content-Length"), f"no Content-Length in {r!r}"
        te = r.header("Transfer-Encoding")
        if te is not None:
            assert te.lower() == "chunked", r
            assert not r.has("Content-Length"), f"both Content-Length and chunked: {r!r}"
            r.framing = "chunked"
            start, data = pos, []
            while True:
                eol = self._find(b"\r\n", pos)
                size = int(self.buf[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    break
                self._need(pos + size + 2)
                chunk = self.buf[pos:pos + size + 2]
                assert chunk.endswith(b"\r\n"), chunk
                data.append(chunk[:-2])
                pos += size + 2
            while True:  # the trailer section, through its blank line
                eol = self._find(b"\r\n", pos)
                blank, pos = eol == pos, eol + 2
                if blank:
                    break
            r.body, r.raw_body = b"".join(data), self.buf[start:pos]
        elif r.header("Content-Length") is not None:
            assert len(r.header_all("Content-Length")) == 1, r
            r.framing = "length"
            end = pos + int(r.header("Content-Length"))
            self._need(end)
            r.body = r.raw_body = self.buf[pos:end]
            pos = end
        else:
            r.framing = "close"
            self._fill_to_close()
            r.body = r.raw_body = self.buf[pos:]
            pos = len(self.buf)
        return pos

    def read_head(self):
        """The head of the next response, which leaves the buffer; its body is left to read."""
        r, end = self._head()
        self.buf = self.buf[end:]
        return r

    def read_response(self, method="GET"):
        """One response to a request of this method, interim (1xx) ones included: the caller reads
        on after a 1xx."""
        r, end = self._head()
        end = self._body(r, end, method)
        self.buf = self.buf[end:]
        return r


def parse_response(buf, method="GET"):
    """(Response, rest) if buf starts with a whole response, else None (it needs more bytes). A
    response delimited by the close is never whole here."""
    reader = _Reader(buf)
    try:
        r = reader.read_response(method)
    except _Incomplete:
        return None
    return r, reader.buf


class Conn(_Reader):
    """One client connection with its own read buffer; every operation times out.

    A subclass may change what request() sends as Host (host) and whether a response must carry
    its length (length_required)."""

    host = HOST

    def __init__(self, addr, timeout=TIMEOUT, source=None):
        """source: the local IP address to connect from (a 127.x.x.x), or None for the kernel's
        choice."""
        super().__init__()
        self.sock = socket.create_connection(
            addr, timeout=timeout, source_address=None if source is None else (source, 0)
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(f"connection closed by the server; unparsed: {self.buf[:300]!r}")
        self.buf += chunk

    def _fill_to_close(self):
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return
            self.buf += chunk

    def read_final(self, method="GET"):
        """The final response; the interim ones are in .interim."""
        interim = []
        while True:
            r = self.read_response(method)
            if r.status >= 200 or r.status == 101:
                r.interim = interim
                return r
            interim.append(r)

    def request(self, method="GET", target="/", **kw):
        """Sends req(method, target, **kw), to self.host unless kw names a host; returns the
        final response."""
        kw.setdefault("host", self.host)
        self.send(req(method, target, **kw))
        return self.read_final(method)

    @classmethod
    def get(cls, addr, target="/", method="GET", **kw):
        """One request on a connection of its own."""
        with cls(addr) as c:
            return c.request(method, target, **kw)

    def read_to_eof(self):
        """Everything left until the server closes (EOF or a reset; a timeout fails the test)."""
        self._fill_to_close()
        out, self.buf = self.buf, b""
        return out

    def assert_closed(self):
        """The server closes the connection: nothing more arrives, then EOF (or a reset)."""
        rest = self.read_to_eof()
        assert rest == b"", f"unexpected bytes before the close: {rest!r}"

    def wait_closed(self, timeout):
        """Reads until the server ends the connection (EOF or reset); returns the seconds it took
        and what arrived meanwhile. Fails if it is still open after timeout seconds."""
        t0 = time.monotonic()
        got = b""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                got += data
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"the connection was still open after {timeout}s; got {got[:200]!r}")
        return time.monotonic() - t0, got
