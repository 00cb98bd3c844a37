"""Replacing portier without a refused, reset or failed request: `portier -x PATH` takes over the
listening sockets (and the admin listener's) of the portier running with the same -x PATH, which
then drains and exits (handover.h).

The load: clients that keep their connection alive, and clients that open a new connection for
every request, both bounded in time. A keep-alive client whose idle connection the old portier
closed while draining sends its request again on a new connection, as HTTP clients do for a
request that got no byte of an answer (RFC 9112 9.3.1): that is counted, not failed. Everything
else is a failure: a refused or reset connect, a connection closed before its answer on a new
connection, any status but 200.

Addresses: portier on 127.0.0.110:29101 (admin 29102), app2 pods on 127.0.0.111-113:29100.
"""

import http.client
import os
import signal
import socket
import threading
import time
from typing import List

import pytest

import procs
from conftest import BackgroundThreads, stopping, wait_until

PORTIER = ("127.0.0.110", 29101)
ADMIN = ("127.0.0.110", 29102)
PODS = [f"127.0.0.{111 + i}:29100" for i in range(3)]


def config(workers):
    return f"""
listen:
  - address: "{PORTIER[0]}:{PORTIER[1]}"
admin: "{ADMIN[0]}:{ADMIN[1]}"
workers: {workers}
routes:
  - host: app2.com
    service: app2
services:
  app2:
    servers: [{", ".join(f'"{p}"' for p in PODS)}]
timeouts: {{ shutdown_grace: 5s }}
access_log: off
"""


class Load(BackgroundThreads):
    """n keep-alive and n new-connection clients, until stopped (60 s at most)."""

    def __init__(self, n=4):
        self.ok = 0
        self.resent = 0
        self.failures: List[str] = []
        self.lock = threading.Lock()
        super().__init__([(self.keep_alive, ())] * n + [(self.one_per_conn, ())] * n)

    def count(self, failure=None, resent=False):
        with self.lock:
            if failure is not None:
                self.failures.append(failure)
            elif resent:
                self.resent += 1
            else:
                self.ok += 1

    def running(self, deadline):
        return not self.stop_event.is_set() and time.monotonic() < deadline

    def keep_alive(self):
        deadline = time.monotonic() + 60
        conn, used = http.client.HTTPConnection(*PORTIER, timeout=10), False
        while self.running(deadline):
            try:
                conn.request("GET", "/api/info", headers={"Host": "app2.com"})
                r = conn.getresponse()
                r.read()
                self.count(None if r.status == 200 else f"keep-alive: {r.status}")
                used = True
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn, used = http.client.HTTPConnection(*PORTIER, timeout=10), False
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                if not used:
                    self.count(f"keep-alive, a new connection: {e!r}")
                else:
                    self.count(resent=True)  # the idle connection was closed: send it again
                conn, used = http.client.HTTPConnection(*PORTIER, timeout=10), False
            except OSError as e:
                self.count(f"keep-alive: {e!r}")
                conn.close()
                conn, used = http.client.HTTPConnection(*PORTIER, timeout=10), False
        conn.close()

    def one_per_conn(self):
        deadline = time.monotonic() + 60
        while self.running(deadline):
            conn = http.client.HTTPConnection(*PORTIER, timeout=10)
            try:
                conn.request("GET", "/api/info", headers={"Host": "app2.com",
                                                          "Connection": "close"})
                r = conn.getresponse()
                r.read()
                self.count(None if r.status == 200 else f"new connection: {r.status}")
            except (OSError, http.client.HTTPException) as e:
                self.count(f"new connection: {e!r}")
            finally:
                conn.close()



def admin_up():
    try:
        return healthz().endswith(b"\r\n\r\nok\n")
    except OSError:
        return False  # not listening yet: the admin listener opens after the public ones


def healthz():
    with socket.create_connection(ADMIN, timeout=2) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


@pytest.fixture
def pods(start_app):
    for i, listen in enumerate(PODS):
        start_app("app2", listen, env={"POD_NAME": f"ho-{i}"})


def start(portier_bin, tmp_path, started, gen, workers, sock, first=False):
    """Starts portier -x sock; the first one is waited for until it listens (a successor finds
    the address taken already: it announces itself in its log instead)."""
    cfg = tmp_path / f"portier-{gen}.yaml"
    cfg.write_text(config(workers))
    p = procs.start([str(portier_bin), "-x", str(sock), "-c", str(cfg)],
                    wait_for=PORTIER if first else None, log_dir=str(tmp_path),
                    name=f"portier-{gen}")
    started.append(p)
    return p


@pytest.mark.parametrize("where", ["file", "abstract"])
def test_portier_is_replaced_ten_times_under_load_without_a_failed_request(
        portier_bin, tmp_path, pods, where):
    """-x PATH names a file, or with "@" a name in the abstract namespace (what the DaemonSet
    uses: pods on the host's network share it without a volume)."""
    sock = tmp_path / "handover.sock" if where == "file" else f"@portier-test-{os.getpid()}"
    started: List[procs.Proc] = []
    workers = [2, 3, 1, 2, 4, 2, 1, 3, 2, 2, 2]  # each generation's: sockets regrouped each time
    with stopping(started):
        old = start(portier_bin, tmp_path, started, 0, workers[0], sock, first=True)
        with Load() as load:
            wait_until(lambda: load.ok >= 50, 10, "requests through the first portier")
            for gen in range(1, 11):
                # The one before listens at sock for its successor once its own takeover ended.
                old.wait_for_output("takes over from here", timeout=10)
                new = start(portier_bin, tmp_path, started, gen, workers[gen], sock)
                new.wait_for_output("handover: took the listening sockets", timeout=10)
                result = procs.wait(old, timeout=15)
                assert result.returncode == 0, result.stderr
                assert "handover: the successor serves; draining" in result.stderr
                assert new.running(), new.stderr()
                before = load.ok
                wait_until(lambda: load.ok >= before + 50, 10, f"requests through portier {gen}")
                old = new
        assert healthz().endswith(b"\r\n\r\nok\n")  # the admin listener came along
    assert load.failures == [], f"{len(load.failures)} failed of {load.ok}: {load.failures[:5]}"
    assert load.ok > 1000, load.ok


def test_without_a_running_portier_x_is_an_ordinary_start(portier_bin, tmp_path, pods):
    """Nothing at PATH (or a file left by a portier that is gone): portier binds as usual, and
    listens at PATH for its own successor."""
    sock = tmp_path / "handover.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(sock))  # bound, never listening: connect is refused
    stale.close()
    started: List[procs.Proc] = []
    with stopping(started):
        p = start(portier_bin, tmp_path, started, 0, 2, sock, first=True)
        wait_until(lambda: os.path.exists(sock) and admin_up(), 10, "admin")
        assert "handover: took" not in p.stderr()
        with socket.create_connection(PORTIER, timeout=2):
            pass


def test_a_second_portier_without_x_is_still_refused(portier_bin, tmp_path, pods):
    """The takeover is explicit: the same config started without -x fails at bind, as before,
    and the running one goes on serving."""
    sock = tmp_path / "handover.sock"
    started: List[procs.Proc] = []
    with stopping(started):
        first = start(portier_bin, tmp_path, started, 0, 2, sock, first=True)
        cfg = tmp_path / "second.yaml"
        cfg.write_text(config(2))
        r = procs.run([str(portier_bin), "-c", str(cfg)], log_dir=str(tmp_path), name="second")
        assert r.returncode == 1, r.stderr
        assert "Address already in use" in r.stderr, r.stderr
        assert first.running()
        wait_until(admin_up, 10, "admin")


def test_the_admin_listener_goes_along_after_a_reload_dropped_it_from_the_config(
        portier_bin, tmp_path, pods):
    """A reload cannot close the admin listener (it needs a restart), so it still serves after a
    config without admin is loaded; handed over then, it still goes to the successor."""
    sock = tmp_path / "handover.sock"
    started: List[procs.Proc] = []
    with stopping(started):
        old = start(portier_bin, tmp_path, started, 0, 2, sock, first=True)
        cfg = tmp_path / "portier-0.yaml"
        cfg.write_text(config(2).replace(f'admin: "{ADMIN[0]}:{ADMIN[1]}"\n', ""))
        old.popen.send_signal(signal.SIGHUP)
        old.wait_for_output("reload: a change of admin needs a restart", timeout=5)
        new = start(portier_bin, tmp_path, started, 1, 2, sock)
        new.wait_for_output("handover: took the listening sockets", timeout=10)
        result = procs.wait(old, timeout=15)
        assert result.returncode == 0, result.stderr
        assert healthz().endswith(b"\r\n\r\nok\n")
