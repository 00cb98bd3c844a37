"""Helpers for the offline cluster checks: running commands, reading rendered objects, processes.

Every process a test starts listens on a 127.0.0.14x address and is stopped by PID.
"""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IMAGE_NAMES = ["portier", "app1", "app2", "app3"]
IMAGE_PREFIX = "localhost/portier/"
# Where the kubelet mounts a pod's service account token and the cluster's CA, which portier's
# Kubernetes provider reads in the pod.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# What a calling make puts in the environment (its command-line variables too): none of it reaches
# the VM's provision, so none of it reaches the offline one.
MAKE_VARS = (
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "BUILD",
    "SAN",
    "STATIC",
    "K8S_BUILD",
    "IMAGES",
    "CC",
    "CFLAGS",
    "LDFLAGS",
    "V",
)


def run(cmd: List[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Runs cmd, capturing text output; with check, fails with both streams shown."""
    kw.setdefault("timeout", 300)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited with {r.returncode}\n"
            f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        )
    return r


def index(objs: Iterable[dict]) -> Dict[tuple, dict]:
    """(kind, namespace, name) -> object."""
    out = {}
    for o in objs:
        md = o.get("metadata", {})
        out[(o["kind"], md.get("namespace", ""), md["name"])] = o
    return out


def of_kind(objs: Iterable[dict], *kinds: str) -> List[dict]:
    return [o for o in objs if o["kind"] in kinds]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> List[dict]:
    return pod_spec(workload)["containers"]


def duration_seconds(text: str) -> float:
    """A portier duration ("10s", "500ms", "2m", "1h") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    assert m, f"not a duration: {text!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    """Until host:port accepts a connection; fails at once if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"pid {proc.pid} exited with {proc.returncode} before listening\n{err}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 15) -> Optional[int]:
    """SIGTERM by PID, SIGKILL after timeout; returns the exit code (None if it was killed)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
    return proc.returncode


def http_get(host: str, port: int, path: str, host_header: str, timeout: float = 5):
    """One HTTP/1.1 request with Connection: close; returns (status, headers dict, body bytes)."""
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: tests/k8s\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def provision_env(kubectl: str) -> Dict[str, str]:
    """The environment of an offline provision run: this checkout, Debian's kubectl, and none of
    the calling make's variables (the VM's provision runs `make images` from a clean slate)."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    env.update(P2_OFFLINE="1", P2_REPO=str(REPO), KUBECTL=kubectl)
    return env
