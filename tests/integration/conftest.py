"""Fixtures for the integration tests: the real binaries on loopback, stopped by PID, always.

The binaries come from $PORTIER_BUILD (an absolute path such as /work/main/build or
/work/main/build/asan), by default <repo>/build. Everything listens on port 28080 of its own
127.0.0.x address, not 8080, so that a developer's `make run` can keep running alongside.
"""

import os
import pwd
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backend  # noqa: E402
import procs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PORT = 28080


@dataclass
class App:
    """One app process of the topology and what it should report about itself."""

    app: str  # "app2"
    pod: str  # its POD_NAME
    ip: str  # the loopback address it listens on
    port: int
    proc: procs.Proc

    @property
    def addr(self):
        return (self.ip, self.port)


# app, POD_NAME, address: the local topology of DESIGN.md, one "pod" per 127.0.0.x.
TOPOLOGY = [
    ("app1", "app1-pod", "127.0.0.21"),
    ("app2", "app2-pod-a", "127.0.0.22"),
    ("app2", "app2-pod-b", "127.0.0.23"),
    ("app2", "app2-pod-c", "127.0.0.24"),
    ("app3", "app3-pod", "127.0.0.25"),
]


def split_listen(listen: str):
    """ "ip:port" or "[ipv6]:port" to (host, port)."""
    host, port = listen.rsplit(":", 1)
    return host.strip("[]"), int(port)


class BackgroundThreads:
    """Client threads that run for the length of a `with` block: started on entry; on exit
    stop_event is set and each thread joined (join_s at most), and one still running fails the
    test. Each target loops until stop_event is set or its own bound (seconds, requests) runs
    out, so every load stops by itself."""

    def __init__(self, targets, join_s: float = 15.0):
        """targets: (function, args) pairs, one thread each."""
        self.stop_event = threading.Event()
        self.join_s = join_s
        self.threads = [threading.Thread(target=fn, args=args, daemon=True)
                        for fn, args in targets]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join(self.join_s)
        assert not any(t.is_alive() for t in self.threads), "background clients did not stop"


def stop_all(started: List[procs.Proc]) -> List[str]:
    """Stops every process by PID (SIGTERM, SIGKILL after the timeout); returns what went wrong.

    A process is expected to exit 0 on SIGTERM, without needing SIGKILL and without a sanitizer
    report. Every process is stopped before anything is reported.
    """
    problems = []
    for p in started:
        try:
            r = procs.stop(p)
        except AssertionError as e:  # a sanitizer report
            problems.append(str(e))
            continue
        if r.killed:
            problems.append(f"{p.name} (pid {p.pid}) ignored SIGTERM and was killed:\n{r.stderr}")
        elif r.returncode != 0:
            problems.append(f"{p.name} (pid {p.pid}) exited with {r.returncode}:\n{r.stderr}")
    return problems


@contextmanager
def stopping(started: List[procs.Proc]):
    """Runs the block, which may add processes to started; then stops every one (stop_all), also
    when the block failed, and fails the test with whatever went wrong."""
    try:
        yield started
    finally:
        problems = stop_all(started)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def start_pod(build_dir: Path, app: str, pod: str, addr, log_dir: str) -> procs.Proc:
    """Starts app as pod (POD_NAME) listening on addr, without POD_IP, and waits until it
    listens."""
    ip, port = addr
    return procs.start(
        [str(build_dir / app)],
        env={"LISTEN": f"{ip}:{port}", "POD_NAME": pod, "POD_IP": None},
        wait_for=addr,
        log_dir=log_dir,
        name=pod,
    )


@pytest.fixture(scope="session")
def build_dir() -> Path:
    """Where the binaries are; fails every test that needs them, clearly, when one is missing."""
    path = Path(os.environ.get("PORTIER_BUILD") or REPO / "build")
    missing = [a for a in ("app1", "app2", "app3") if not os.access(path / a, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found in {path} (set PORTIER_BUILD or run make)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def topology(build_dir, tmp_path_factory) -> Dict[str, App]:
    """The five app processes of the local topology, by pod name; shared by the whole session.

    Tests that count requests must compare before and after on one process, never absolute values.
    """
    log_dir = str(tmp_path_factory.mktemp("topology"))
    apps: Dict[str, App] = {}
    with stopping([]) as started:
        for app, pod, ip in TOPOLOGY:
            p = start_pod(build_dir, app, pod, (ip, PORT), log_dir)
            started.append(p)
            apps[pod] = App(app=app, pod=pod, ip=ip, port=PORT, proc=p)
        yield apps


@pytest.fixture
def app1(topology) -> App:
    return topology["app1-pod"]


@pytest.fixture
def app2_pods(topology) -> List[App]:
    return [topology[p] for p in ("app2-pod-a", "app2-pod-b", "app2-pod-c")]


@pytest.fixture
def app3(topology) -> App:
    return topology["app3-pod"]


@pytest.fixture
def start_app(build_dir, tmp_path):
    """A factory: start_app("app1", "127.0.0.27:28080", env={...}) starts one app of its own and
    waits until it listens. env entries override the defaults (LISTEN, POD_NAME=<app>-solo, no
    POD_IP); a value of None unsets the variable.

    At teardown every process it started is stopped by PID and must exit 0 without a sanitizer
    report; a test may stop one itself first (procs.stop / procs.wait), and that result counts.
    """
    started: List[procs.Proc] = []

    def _start(app: str, listen: str, env: Optional[Mapping[str, Optional[str]]] = None):
        full = {"LISTEN": listen, "POD_NAME": f"{app}-solo", "POD_IP": None}
        full.update(env or {})
        p = procs.start(
            [str(build_dir / app)],
            env=full,
            wait_for=split_listen(listen),
            log_dir=str(tmp_path),
            name=app,
        )
        started.append(p)
        return p

    with stopping(started):
        yield _start


@pytest.fixture
def run_app(build_dir, tmp_path):
    """A factory: run_app("app1", env={...}) runs an app that is expected to exit by itself (a bad
    LISTEN, say) and returns its procs.Result; killed (and failing) if it still runs after
    timeout seconds. Nothing is inherited of POD_NAME, POD_IP or LISTEN unless env sets them."""

    def _run(app: str, env: Mapping[str, Optional[str]], timeout: float = 3.0):
        full = {"LISTEN": None, "POD_NAME": None, "POD_IP": None}
        full.update(env)
        return procs.run(
            [str(build_dir / app)], env=full, timeout=timeout, log_dir=str(tmp_path), name=app
        )

    return _run


# portier in front of the topology, as config/local.yaml has it but on the test port.
PORTIER_ADDR = ("127.0.0.1", 28081)

LOCAL_CONFIG = f"""
listen:
  - address: "{PORTIER_ADDR[0]}:{PORTIER_ADDR[1]}"
workers: 2
routes:
  - host: app1.com
    service: app1
  - host: app2.com
    service: app2
default_service: app3
services:
  app1:
    servers: ["127.0.0.21:{PORT}"]
  app2:
    servers: ["127.0.0.22:{PORT}", "127.0.0.23:{PORT}", "127.0.0.24:{PORT}"]
  app3:
    servers: ["127.0.0.25:{PORT}"]
"""


@pytest.fixture(scope="session")
def portier_bin(build_dir) -> Path:
    path = build_dir / "portier"
    if not os.access(path, os.X_OK):
        pytest.fail(f"portier not found in {build_dir} (run make)", pytrace=False)
    return path


@dataclass
class Portier:
    """A running portier: its process, its config file and the address it listens on."""

    proc: procs.Proc
    config: Path
    addr: tuple

    def log(self) -> str:
        """The access log (stdout) so far."""
        return self.proc.stdout()

    def errors(self) -> str:
        return self.proc.stderr()


@pytest.fixture
def start_portier(portier_bin, tmp_path):
    """A factory: start_portier(yaml_text=LOCAL_CONFIG, addr=PORTIER_ADDR) writes the config to a
    temp file, starts portier -c on it and waits until addr accepts connections. Returns a Portier.
    At teardown every portier it started is stopped by PID (SIGTERM) and must exit 0 without a
    sanitizer report; a test may stop it itself first (procs.stop), and that result counts.
    """
    started: List[procs.Proc] = []

    def _start(yaml_text: str = LOCAL_CONFIG, addr: tuple = PORTIER_ADDR, name: str = "portier",
               env: Optional[Dict[str, str]] = None):
        cfg = tmp_path / f"{name}-{len(started)}.yaml"
        cfg.write_text(yaml_text)
        p = procs.start(
            [str(portier_bin), "-c", str(cfg)], env=env or {}, wait_for=addr,
            log_dir=str(tmp_path), name=name,
        )
        started.append(p)
        return Portier(proc=p, config=cfg, addr=addr)

    with stopping(started):
        yield _start


def accepts(addr) -> bool:
    """Whether something accepts TCP connections on addr (ip, port) now."""
    try:
        with socket.create_connection(addr, timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(pred: Callable[[], bool], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout}s: {what}", pytrace=False)
        time.sleep(0.02)


def assert_alive(p, what=""):
    """portier still runs; if not, say how it ended (a signal is the usual stack overflow)."""
    rc = p.proc.popen.poll()
    if rc is None:
        return
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
    tail = "\n".join(p.errors().splitlines()[-15:])
    pytest.fail(f"portier died ({how}) {what}; stderr ends:\n{tail}", pytrace=False)


@pytest.fixture
def portier(topology, start_portier) -> Portier:
    """portier with the local config in front of the shared topology."""
    return start_portier()


@pytest.fixture
def backends():
    """Fake origins (backend.py): backends(addr, handler) starts one; all are stopped at
    teardown."""
    f = backend.BackendFactory()
    try:
        yield f
    finally:
        f.stop_all()


@contextmanager
def blackhole_at(addr, fillers_max=16):
    """A listener on addr whose accept queue is full: Linux then drops further SYNs, so a connect
    there hangs until its timeout. Connections are queued (never accepted) until one does hang;
    a kernel where none ever does fails the test rather than skipping it."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(addr)
    listener.listen(0)
    fillers = []
    try:
        for _ in range(fillers_max):
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(addr)
            except socket.timeout:
                probe.close()
                break
            fillers.append(probe)
        else:
            raise AssertionError(f"{addr}: {fillers_max} connects past a backlog of 0 completed")
        yield addr
    finally:
        for f in fillers:
            f.close()
        listener.close()


@pytest.fixture
def raw_origins(request):
    """A factory: raw_origins(addr, handler) starts the test module's RawOrigin (a
    backend.ThreadedOrigin of its own kind) on addr. At teardown every one is stopped, and what
    any stop() found wrong fails the test."""
    started = []

    def _start(addr, handler):
        o = request.module.RawOrigin(addr, handler)
        started.append(o)
        return o

    try:
        yield _start
    finally:
        problems = []
        for o in started:
            try:
                o.stop()
            except AssertionError as e:
                problems.append(str(e))
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


class Dnsmasq:
    """A dnsmasq answering name from a hosts file of its own (TTL 1 s, nothing else: no upstream,
    no /etc/hosts); set(ips) rewrites the file and makes dnsmasq re-read it."""

    def __init__(self, proc: procs.Proc, hosts: str, name: str):
        self.proc = proc
        self.hosts = hosts
        self.name = name

    def set(self, ips):
        with open(self.hosts, "w") as f:
            f.writelines(f"{ip} {self.name}\n" for ip in ips)
        os.kill(self.proc.pid, signal.SIGHUP)


@contextmanager
def dnsmasq_at(addr, name, tmp_path, extra=()):
    """Runs dnsmasq on addr (ip, port) for name, stopped by PID on the way out; extra: more of
    dnsmasq's options."""
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.access(exe, os.X_OK):
        pytest.fail("dnsmasq is not installed (scripts/deps.sh installs dnsmasq-base)")
    hosts = str(tmp_path / "hosts")
    open(hosts, "w").close()
    argv = [
        exe, "--no-daemon", f"--port={addr[1]}", f"--listen-address={addr[0]}",
        "--bind-interfaces", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
        "--local=/test/", "--local-ttl=1", "--cache-size=0", "--pid-file",
        # As ourselves, so that it can still read the hosts file in our temp dir.
        f"--user={pwd.getpwuid(os.getuid()).pw_name}",
        *extra,
    ]
    p = procs.start(argv, wait_for=addr, log_dir=str(tmp_path), name="dnsmasq")
    try:
        yield Dnsmasq(p, hosts, name)
    finally:
        procs.stop(p)
