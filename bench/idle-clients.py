#!/usr/bin/env python3
"""Idle keep-alive clients for bench/run.sh's memory scenario (e).

Opens COUNT connections to HOST:PORT, makes one keep-alive request on each (at most --batch at a
time, so that the proxy is not asked for thousands of server connections at once), and keeps every
connection open and idle. Then it prints one line:

    ready ok=N failed=N closed=N seconds=S

(closed: connections the proxy closed in the half second after all responses came in) and holds the
connections until SIGTERM/SIGINT or --hold seconds, whichever comes first. The whole setup is bounded
by --timeout seconds: whatever has not answered by then counts as failed. Exit status 0 when every
connection got a 2xx response and is still open, 1 otherwise.

    idle-clients.py 127.0.0.40 28310 10000 --host-header app2.com --path /api/info
"""

import argparse
import errno
import resource
import selectors
import signal
import socket
import sys
import time


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--host-header", default="app2.com")
    ap.add_argument("--path", default="/api/info")
    ap.add_argument("--batch", type=int, default=200, help="requests in flight at most")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole setup")
    ap.add_argument("--hold", type=float, default=120.0, help="seconds to hold, at most")
    return ap.parse_args(argv)


class Client:
    """One connection: connecting, then request sent, then response complete (idle)."""

    __slots__ = ("sock", "buf", "need")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.need = None  # total bytes of head + body once the head is in


def response_done(c):
    """None while more bytes are needed; else True for a complete 2xx response, False otherwise."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = c.buf[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ")
        if len(parts) < 2 or not parts[1].startswith("2"):
            return False
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:  # chunked or close-delimited: not what the apps send
            return False
        c.need = end + 4 + length
    if len(c.buf) < c.need:
        return None
    return True


def run(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 1024), hard))
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host_header}\r\nUser-Agent: idle-clients\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    todo = args.count
    in_flight = 0
    ok, failed = [], 0

    def fail(c):
        nonlocal failed, in_flight
        sel.unregister(c.sock)
        c.sock.close()
        failed += 1
        in_flight -= 1

    while (todo > 0 or in_flight > 0) and time.monotonic() < deadline:
        while todo > 0 and in_flight < args.batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((args.host, args.port))
            todo -= 1
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            in_flight += 1
            sel.register(s, selectors.EVENT_WRITE, Client(s))
        for key, events in sel.select(timeout=0.5):
            c = key.data
            if events & selectors.EVENT_WRITE:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(c)
                    continue
                try:
                    c.sock.send(request)  # small enough for one send on a new socket
                except OSError:
                    fail(c)
                    continue
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                fail(c)
                continue
            if not data:
                fail(c)
                continue
            c.buf += data
            done = response_done(c)
            if done is None:
                continue
            if not done:
                fail(c)
                continue
            sel.unregister(c.sock)
            c.buf = b""
            ok.append(c.sock)
            in_flight -= 1
    failed += todo + in_flight  # never started or never answered before the deadline
    setup = time.monotonic() - started

    # Did the proxy close any of them? An idle connection the peer closed turns readable (EOF).
    for s in ok:
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(timeout=0.5))
    for s in ok:
        sel.unregister(s)
    print(f"ready ok={len(ok)} failed={failed} closed={closed} seconds={setup:.1f}", flush=True)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    hold_until = time.monotonic() + args.hold
    while not stop and time.monotonic() < hold_until:
        time.sleep(0.1)
    for s in ok:
        s.close()
    print("closed", flush=True)
    return 0 if failed == 0 and closed == 0 else 1


if __name__ == "__main__":
    sys.exit(run(parse_args(sys.argv[1:])))
