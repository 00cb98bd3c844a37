"""A scriptable fake HTTP/1.1 origin server, for tests that need server behaviour the apps lack.

It listens on a loopback address in a thread, records every byte it receives (per connection and
per parsed request, exactly as portier sent them) and answers each request with a handler the test
gives. The handler sees the parsed request and the connection and returns the raw bytes to send (or
None after doing it itself), so a test can answer anything: chunked responses, 1xx then a final
response, 101 and a tunnel, a response without length then a close, a slow drip, a close in the
middle, a reset, or no answer at all.

    with backend.serve(addr) as b:            # addr: ("127.0.0.x", port); answers 200 "ok"
        ...
        r = b.wait_requests(1)[0]
        assert r.header("X-Forwarded-For") == "127.0.0.1"
        assert b.connections == 1

    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")
        conn.send(b"5\\r\\nhello\\r\\n0\\r\\n\\r\\n")
    with backend.serve(addr, handler):
        ...

Keep-alive: after a handler returns, the connection reads the next request, unless the handler
closed it (conn.close(), conn.reset()) or the request said `Connection: close`. Every socket has a
timeout, stop() (also on leaving the with block) closes everything and joins every thread, and
raises if a thread did not end; a handler that waits "forever" should use conn.wait_stop().
Handler exceptions are recorded in Backend.errors (and re-raised by stop() unless check=False).
"""

import socket
import struct
import threading
import time
from contextlib import contextmanager
from typing import Callable, List, Optional, Tuple

POLL = 0.05  # how often blocking operations look at the stop flag
JOIN_TIMEOUT = 5.0


class BackendStopped(Exception):
    """The backend is stopping: raised inside connection threads to unwind them."""


class Request:
    """One request as the backend received it."""

    def __init__(self, conn_id: int, index: int):
        self.conn_id = conn_id  # which accepted connection (0-based, in accept order)
        self.index = index  # its position on that connection (0-based)
        self.head = b""  # request line and header lines, through the blank line, exactly as sent
        self.raw_body = b""  # the body bytes exactly as sent (chunk framing included)
        self.body = b""  # the body, decoded
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers: List[Tuple[str, str]] = []  # [(name, value)] in order, names as received
        self.trailers: List[Tuple[str, str]] = []
        self.chunked = False
        self.sent_continue = False  # the backend answered "100 Continue" before reading the body

    @property
    def raw(self) -> bytes:
        return self.head + self.raw_body

    def header(self, name: str) -> Optional[str]:
        """The first value of a header (case-insensitive name), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_header(self, name: str) -> bool:
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def __repr__(self):
        return f"<Request #{self.conn_id}.{self.index} {self.raw[:300]!r}>"


class BackendConn:
    """The server side of one accepted connection, as handlers see it."""

    def __init__(self, backend: "Backend", sock: socket.socket, conn_id: int):
        self.backend = backend
        self.sock = sock
        self.conn_id = conn_id
        self.buf = b""  # received, not yet consumed by the request parser
        self.closed = False
        self.sock.settimeout(POLL)

    # -- receiving ----------------------------------------------------------------------------

    def _recv_some(self, deadline: Optional[float]) -> bytes:
        """Some bytes, b"" at EOF; BackendStopped when stopping, socket.timeout past deadline."""
        while True:
            if self.backend._stopping.is_set():
                raise BackendStopped()
            if deadline is not None and time.monotonic() >= deadline:
                raise socket.timeout("backend recv deadline")
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return b""
            except OSError:
                if self.closed or self.backend._stopping.is_set():
                    raise BackendStopped()
                raise
            self.backend._record(self.conn_id, data)
            return data

    def recv(self, timeout: float = 5.0) -> bytes:
        """What is buffered or arrives next (at most one read), b"" at EOF; times out (raises)."""
        if self.buf:
            out, self.buf = self.buf, b""
            return out
        return self._recv_some(time.monotonic() + timeout)

    def recv_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            data = self._recv_some(deadline)
            if not data:
                raise EOFError(f"EOF after {self.buf!r}, wanted {n} bytes")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Everything through marker (consumed)."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            data = self._recv_some(deadline)
            if not data:
                raise EOFError(f"EOF before {marker!r}; have {self.buf!r}")
            self.buf += data
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_to_eof(self, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        out, self.buf = self.buf, b""
        while True:
            data = self._recv_some(deadline)
            if not data:
                return out
            out += data

    # -- sending and closing ------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

    def drip(self, data: bytes, interval: float = 0.05, step: int = 1) -> None:
        """Sends data step bytes at a time, interval seconds apart (stops early when stopping)."""
        for i in range(0, len(data), step):
            if i:
                self.wait_stop(interval)
                if self.backend._stopping.is_set():
                    raise BackendStopped()
            self.sock.sendall(data[i : i + step])

    def shutdown_write(self) -> None:
        """Half-close: sends FIN, keeps reading."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Closes the connection (FIN) after what was sent."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def reset(self) -> None:
        """Closes the connection with a TCP RST (SO_LINGER 0)."""
        if not self.closed:
            self.closed = True
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()

    def wait_stop(self, timeout: Optional[float] = None) -> bool:
        """Sleeps until the backend stops (or timeout seconds); True if it is stopping.

        A handler that never answers: `conn.wait_stop()`.
        """
        return self.backend._stopping.wait(timeout)

    def echo(self, timeout: float = 10.0) -> None:
        """Sends back everything received until EOF (a tunnel's far end), then closes."""
        deadline = time.monotonic() + timeout
        if self.buf:
            self.send(self.buf)
            self.buf = b""
        while True:
            data = self._recv_some(deadline)
            if not data:
                break
            self.send(data)
        self.close()

    # -- parsing requests ---------------------------------------------------------------------

    def read_request(self, index: int) -> Optional[Request]:
        """The next request, or None at a clean EOF between requests."""
        while b"\r\n\r\n" not in self.buf:
            data = self._recv_some(None)
            if not data:
                if self.buf:
                    raise EOFError(f"EOF inside a request head: {self.buf!r}")
                return None
            self.buf += data
        i = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:i], self.buf[i:]
        r = Request(self.conn_id, index)
        r.head = head
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ValueError(f"bad request line from the proxy: {lines[0]!r}")
        r.method, r.target, r.version = parts
        for line in lines[1:]:
            if ":" not in line:
                raise ValueError(f"bad header line from the proxy: {line!r}")
            name, value = line.split(":", 1)
            r.headers.append((name, value.strip(" \t")))
        te = ",".join(r.header_all("Transfer-Encoding")).lower()
        if te.replace(" ", "").split(",")[-1] == "chunked":
            r.chunked = True
            self._maybe_continue(r)
            self._read_chunked(r)
        elif r.header("Content-Length") is not None:
            n = int(r.header("Content-Length"))
            if n:
                self._maybe_continue(r)
            r.raw_body = r.body = self.recv_exactly(n, timeout=10.0)
        return r

    def _maybe_continue(self, r: Request) -> None:
        if (
            self.backend.auto_continue
            and (r.header("Expect") or "").lower() == "100-continue"
            and not self.buf
        ):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            r.sent_continue = True

    def _read_chunked(self, r: Request) -> None:
        raw = b""
        body = b""
        while True:
            line = self.recv_until(b"\r\n", timeout=10.0)
            raw += line
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            data = self.recv_exactly(size + 2, timeout=10.0)
            raw += data
            if data[-2:] != b"\r\n":
                raise ValueError(f"chunk data not followed by CRLF: {raw!r}")
            body += data[:-2]
        while True:  # trailers, then the blank line
            line = self.recv_until(b"\r\n", timeout=10.0)
            raw += line
            if line == b"\r\n":
                break
            name, value = line[:-2].decode("latin-1").split(":", 1)
            r.trailers.append((name, value.strip(" \t")))
        r.raw_body, r.body = raw, body


Handler = Callable[[Request, BackendConn], Optional[bytes]]


def response(
    status: int = 200,
    body: bytes = b"",
    headers=(),
    reason: Optional[str] = None,
    length: bool = True,
    version: str = "HTTP/1.1",
) -> bytes:
    """The bytes of a response with Content-Length (unless length is False or it is in headers)."""
    reason = REASONS.get(status, "Status") if reason is None else reason
    if isinstance(body, str):
        body = body.encode()
    out = f"{version} {status} {reason}\r\n".encode()
    names = set()
    for name, value in headers:
        names.add(name.lower())
        out += f"{name}: {value}\r\n".encode("latin-1")
    if length and "content-length" not in names and "transfer-encoding" not in names:
        out += f"Content-Length: {len(body)}\r\n".encode()
    return out + b"\r\n" + body


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body: one chunk per piece, then the last chunk and trailers (raw header lines)."""
    out = b""
    for p in pieces:
        if p:
            out += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
}


def ok_handler(req: Request, conn: BackendConn) -> bytes:
    """The default: 200 with a small body naming the request."""
    body = f"ok {req.method} {req.target}\n".encode()
    return response(200, body, [("Content-Type", "text/plain")])


class Backend:
    """The server. Attributes tests read (under no lock; read them after wait_requests / stop):

    connections  accepted connections so far
    requests     every parsed Request, in arrival order
    raw          the bytes received on each connection, by conn_id (list of bytes)
    errors       exceptions from handlers or the request parser (strings)
    """

    def __init__(
        self,
        addr: Tuple[str, int],
        handler: Optional[Handler] = None,
        auto_continue: bool = True,
    ):
        self.addr = addr
        self.handler = handler or ok_handler
        self.auto_continue = auto_continue
        self.connections = 0
        self.requests: List[Request] = []
        self.raw: List[bytes] = []
        self.errors: List[str] = []
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []
        self._conns: List[BackendConn] = []
        self._listener: Optional[socket.socket] = None
        self._acceptor: Optional[threading.Thread] = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> "Backend":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(self.addr)
        except OSError:
            s.close()
            raise
        s.listen(128)
        s.settimeout(POLL)
        self._listener = s
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"backend-{self.addr[0]}:{self.addr[1]}", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self, check: bool = True) -> None:
        """Closes the listener and every connection and joins every thread.

        Raises AssertionError if a thread is still alive after JOIN_TIMEOUT, and (with check) if a
        handler raised.
        """
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(JOIN_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        alive = []
        for t in threads + ([self._acceptor] if self._acceptor else []):
            t.join(JOIN_TIMEOUT)
            if t.is_alive():
                alive.append(t.name)
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
        if alive:
            raise AssertionError(f"backend threads did not stop: {alive}")
        if check and self.errors:
            raise AssertionError("backend handler errors:\n" + "\n".join(self.errors))

    def __enter__(self) -> "Backend":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(check=exc_type is None)

    # -- what tests read ----------------------------------------------------------------------

    @property
    def received(self) -> bytes:
        """Every byte received, on all connections, in connection order."""
        with self._lock:
            return b"".join(self.raw)

    def wait_requests(self, n: int, timeout: float = 5.0) -> List[Request]:
        """Waits until at least n requests were parsed; returns them all (fails on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"backend {self.addr} got {len(self.requests)} requests, wanted {n}; "
                        f"raw: {self.raw!r}; errors: {self.errors}"
                    )
                self._lock.wait(left)
            return list(self.requests)

    def wait_connections(self, n: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.connections < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"backend {self.addr}: {self.connections} connections")
                self._lock.wait(left)
            return self.connections

    # -- inside -------------------------------------------------------------------------------

    def _record(self, conn_id: int, data: bytes) -> None:
        with self._lock:
            self.raw[conn_id] += data

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    break
                conn_id = self.connections
                self.connections += 1
                self.raw.append(b"")
                conn = BackendConn(self, sock, conn_id)
                self._conns.append(conn)
                t = threading.Thread(
                    target=self._serve, args=(conn,), name=f"backend-conn-{conn_id}", daemon=True
                )
                self._threads.append(t)
                self._lock.notify_all()
            t.start()

    def _serve(self, conn: BackendConn) -> None:
        index = 0
        try:
            while not conn.closed:
                req = conn.read_request(index)
                if req is None:
                    break
                with self._lock:
                    self.requests.append(req)
                    self._lock.notify_all()
                index += 1
                out = self.handler(req, conn)
                if conn.closed:
                    break
                if out:
                    conn.send(out)
                if (req.header("Connection") or "").lower() == "close":
                    break
        except BackendStopped:
            pass
        except (ConnectionResetError, BrokenPipeError):
            pass  # the proxy went away; not the test's concern unless it asserts on it
        except Exception as e:  # noqa: BLE001 - reported through errors, and by stop()
            if not self._stopping.is_set():
                with self._lock:
                    self.errors.append(f"conn {conn.conn_id}: {type(e).__name__}: {e}")
        finally:
            conn.close()
            with self._lock:
                self._lock.notify_all()


@contextmanager
def serve(addr: Tuple[str, int], handler: Optional[Handler] = None, **kw):
    """A started Backend, stopped (threads joined) when the block ends, even on failure."""
    b = Backend(addr, handler, **kw).start()
    try:
        yield b
    finally:
        b.stop(check=False)
    if b.errors:
        raise AssertionError("backend handler errors:\n" + "\n".join(b.errors))


class BackendFactory:
    """factory(addr, handler) starts one; stop_all() stops every one. The `backends` fixture
    (conftest.py) is one, stopped at teardown."""

    def __init__(self):
        self.started: List[Backend] = []

    def __call__(self, addr, handler: Optional[Handler] = None, **kw) -> Backend:
        b = Backend(addr, handler, **kw).start()
        self.started.append(b)
        return b

    def stop_all(self) -> None:
        problems = []
        for b in self.started:
            try:
                b.stop()
            except AssertionError as e:
                problems.append(f"{b.addr}: {e}")
        if problems:
            raise AssertionError("\n".join(problems))


class ThreadedOrigin:
    """A listener on addr whose every connection runs in a thread of its own, for origins that
    must act at the socket level (send half a body, reset, stall). Subclasses say what a
    connection is (adopt: a socket in, an object with .sock out) and what runs on it (serve);
    an exception there is recorded in errors (describe) unless stop() is under way. stop() closes
    the listener and every connection and joins every thread, failing if one does not end."""

    def __init__(self, addr, backlog=128):
        self.addr = addr
        self.stopping = threading.Event()
        self.errors: List[str] = []
        self.conns: list = []  # what adopt() returned, in accept order
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(addr)
        self.listener.listen(backlog)
        self.listener.settimeout(0.05)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def adopt(self, sock, index):
        return sock

    def serve(self, conn):
        raise NotImplementedError

    def describe(self, conn, exc):
        return f"{type(exc).__name__}: {exc}"

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                conn = self.adopt(sock, len(self.conns))
                self.conns.append(conn)
                t = threading.Thread(target=self._run, args=(conn,), daemon=True)
                self._threads.append(t)
            t.start()

    def _run(self, conn):
        try:
            self.serve(conn)
        except Exception as e:  # noqa: BLE001 - reported by the test or stop()
            if not self.stopping.is_set():
                self.errors.append(self.describe(conn, e))
        finally:
            conn_sock(conn).close()

    def stop(self):
        self.stopping.set()
        self._acceptor.join(5)
        self.listener.close()
        with self._lock:
            conns, threads = list(self.conns), list(self._threads)
        for c in conns:
            try:
                conn_sock(c).shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        alive = [t for t in threads if (t.join(5), t.is_alive())[1]]
        assert not alive, f"{len(alive)} origin threads did not stop"


def conn_sock(conn):
    """The socket of what ThreadedOrigin.adopt() returned: the socket itself, or its .sock."""
    return conn if isinstance(conn, socket.socket) else conn.sock


class Stream:
    """Buffered reading on an origin's socket, with bodies streamed to a callback."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _more(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("EOF from the proxy")
        self.buf += data

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return out
            self._more()

    def head(self):
        """(method, target, {lowercase name: value}), or None at EOF before a request."""
        try:
            first = self.line()
        except EOFError:
            if self.buf:
                raise
            return None
        method, target, _ = first.decode("latin-1").split(" ")
        headers = {}
        while True:
            line = self.line()
            if not line:
                return method, target, headers
            k, v = line.decode("latin-1").split(":", 1)
            headers[k.strip().lower()] = v.strip()

    def exactly(self, n, sink):
        while n:
            if not self.buf:
                self._more()
            take = min(n, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take

    def body(self, headers, sink):
        """Streams a request body (Content-Length or chunked) to sink; returns its length."""
        total = 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line():
                        pass
                    return total
                self.exactly(size, sink)
                total += size
                assert self.line() == b"", "chunk data not followed by CRLF"
        n = int(headers.get("content-length", "0"))
        self.exactly(n, sink)
        return n
