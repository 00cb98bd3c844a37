"""Start a binary on loopback, wait until it listens, stop it by PID; sanitizer-aware.

Generic on purpose: the apps' tests use it, and so will portier's. A process's stdout and stderr go
to files (never pipes, which block the child once full), so that they can be read after the fact
and searched for log lines and sanitizer reports.

    p = procs.start(["build/app1"], env={"LISTEN": "127.0.0.21:28080"},
                    wait_for=("127.0.0.21", 28080))
    ...
    result = procs.stop(p)          # SIGTERM, then SIGKILL after the timeout; always reaped
    assert result.returncode == 0

stop() and run() raise AssertionError, naming the report, when stderr holds an AddressSanitizer,
LeakSanitizer or UndefinedBehaviorSanitizer report, so a test fails even if the process behaved.
"""

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple, Union

# What each sanitizer prints at the start of a report.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# Sanitizer options that make reports useful without changing what the process does. Options the
# caller's environment already sets win.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}

START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0


@dataclass
class Result:
    """How a process ended: its exit status (negative: killed by that signal) and its output."""

    returncode: int
    stderr: str
    stdout: str
    killed: bool  # stop() had to send SIGKILL


@dataclass
class Proc:
    """A started process. Its output files stay on disk after it ends, for post-mortems."""

    argv: Sequence[str]
    popen: subprocess.Popen
    stderr_path: str
    stdout_path: str
    name: str
    result: Optional[Result] = field(default=None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far (bytes that are not UTF-8 replaced)."""
        return _read(self.stderr_path)

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def wait_for_output(self, text: str, timeout: float = 2.0, stream: str = "stderr") -> str:
        """Waits until stderr (or stdout) contains text; returns the whole output or fails."""
        read = self.stderr if stream == "stderr" else self.stdout
        deadline = time.monotonic() + timeout
        while True:
            out = read()
            if text in out:
                return out
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name} (pid {self.pid}) did not write {text!r} to {stream} within "
                    f"{timeout}s; it wrote:\n{out}"
                )
            time.sleep(0.01)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def sanitizer_report(text: str) -> Optional[str]:
    """Returns the sanitizer report in text (from its first marker line on), or None."""
    first = None
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0 and (first is None or i < first):
            first = i
    if first is None:
        return None
    start = text.rfind("\n", 0, first) + 1
    return text[start:]


def check_sanitizers(name: str, stderr: str) -> None:
    """Raises AssertionError naming the report if stderr holds a sanitizer report."""
    report = sanitizer_report(stderr)
    if report is not None:
        raise AssertionError(f"sanitizer report from {name}:\n{report}")


def _child_env(env: Optional[Mapping[str, Optional[str]]]) -> dict:
    """The inherited environment plus env; a value of None removes that variable."""
    out = dict(os.environ)
    for key, value in SANITIZER_ENV.items():
        out.setdefault(key, value)
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _accepts(addr: Tuple[str, int], timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(addr, timeout=timeout):
            return True
    except OSError:
        return False


def spawn(
    argv: Union[str, Sequence[str]],
    env: Optional[Mapping[str, Optional[str]]] = None,
    log_dir: Optional[str] = None,
    name: Optional[str] = None,
) -> Proc:
    """Starts argv (a list, or one path) without waiting for anything. stdin is /dev/null."""
    argv = [argv] if isinstance(argv, (str, os.PathLike)) else list(argv)
    argv = [os.fspath(a) for a in argv]
    name = name or os.path.basename(argv[0])
    log_dir = log_dir or tempfile.mkdtemp(prefix="procs-")
    fd_err, err_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".stderr", dir=log_dir)
    fd_out, out_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".stdout", dir=log_dir)
    try:
        popen = subprocess.Popen(
            argv,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=fd_out,
            stderr=fd_err,
            close_fds=True,
        )
    finally:
        os.close(fd_err)
        os.close(fd_out)
    return Proc(argv=argv, popen=popen, stderr_path=err_path, stdout_path=out_path, name=name)


def start(
    argv: Union[str, Sequence[str]],
    env: Optional[Mapping[str, Optional[str]]] = None,
    wait_for: Optional[Tuple[str, int]] = None,
    timeout: float = START_TIMEOUT,
    log_dir: Optional[str] = None,
    name: Optional[str] = None,
) -> Proc:
    """Starts argv and, with wait_for=(host, port), waits until that port accepts a connection.

    Fails (AssertionError, with the process's stderr) if something else already listens there, if
    the process exits first, or if it does not listen within timeout seconds; the process is then
    killed, never left behind.
    """
    if wait_for is not None and _accepts(wait_for):
        raise AssertionError(
            f"{wait_for[0]}:{wait_for[1]} already accepts connections before starting "
            f"{argv}: another process listens there"
        )
    proc = spawn(argv, env=env, log_dir=log_dir, name=name)
    if wait_for is None:
        return proc
    deadline = time.monotonic() + timeout
    while True:
        if not proc.running():
            result = stop(proc, check=False)
            raise AssertionError(
                f"{proc.name} (pid {proc.pid}) exited with {result.returncode} before listening "
                f"on {wait_for[0]}:{wait_for[1]}; stderr:\n{result.stderr}"
            )
        if _accepts(wait_for, timeout=0.1):
            if proc.running():
                return proc
            continue  # it answered, yet the process is gone: someone else listens; report above
        if time.monotonic() >= deadline:
            result = stop(proc, check=False)
            raise AssertionError(
                f"{proc.name} (pid {proc.pid}) did not listen on {wait_for[0]}:{wait_for[1]} "
                f"within {timeout}s; stderr:\n{result.stderr}"
            )
        time.sleep(0.02)


def stop(
    proc: Proc, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT, check: bool = True
) -> Result:
    """Sends sig to proc (by PID) unless it has exited, waits up to timeout seconds, then SIGKILLs.

    Always reaps the process. Returns its Result; a second call returns the same Result. With
    check (the default), raises AssertionError if stderr holds a sanitizer report.
    """
    if proc.result is None:
        killed = False
        if proc.popen.poll() is None:
            try:
                proc.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = True
                proc.popen.kill()
                proc.popen.wait()
        proc.result = Result(
            returncode=proc.popen.returncode,
            stderr=proc.stderr(),
            stdout=proc.stdout(),
            killed=killed,
        )
    if check:
        check_sanitizers(f"{proc.name} (pid {proc.pid})", proc.result.stderr)
    return proc.result


def wait(proc: Proc, timeout: float = STOP_TIMEOUT, check: bool = True) -> Result:
    """Waits for proc to exit by itself; SIGKILLs it (and fails) if it does not within timeout."""
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        result = stop(proc, sig=signal.SIGKILL, timeout=1, check=False)
        raise AssertionError(
            f"{proc.name} (pid {proc.pid}) still ran after {timeout}s; killed. stderr:\n"
            f"{result.stderr}"
        ) from None
    return stop(proc, check=check)


def run(
    argv: Union[str, Sequence[str]],
    env: Optional[Mapping[str, Optional[str]]] = None,
    timeout: float = STOP_TIMEOUT,
    log_dir: Optional[str] = None,
    name: Optional[str] = None,
) -> Result:
    """Runs argv to completion (a process expected to exit by itself); see wait()."""
    return wait(spawn(argv, env=env, log_dir=log_dir, name=name), timeout=timeout)


def rss(pid: int) -> int:
    """A process's resident set size in bytes, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread, as a context manager; max is the highest
    seen, and check() fails when it rose more than slack bytes above the start."""

    def __init__(self, pid: int, slack: int):
        self.pid = pid
        self.slack = slack
        self.base = rss(pid)
        self.max = self.base
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.max = max(self.max, rss(self.pid))
                self.samples += 1
            except (OSError, AssertionError):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)

    @property
    def growth(self) -> int:
        return self.max - self.base

    def check(self, what: str) -> None:
        mib = 1 << 20
        assert self.samples > 0, "no RSS sample was taken"
        assert self.growth < self.slack, (
            f"the RSS grew by {self.growth / mib:.1f} MiB during {what} (from "
            f"{self.base / mib:.1f} to {self.max / mib:.1f} MiB; {self.samples} samples)")
