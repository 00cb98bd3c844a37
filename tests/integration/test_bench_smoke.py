"""bench/run.sh --smoke: the bench script, run for real but briefly, so that it cannot rot.

One 1-second round of scenario (a) against portier, nginx and HAProxy and straight at the app; of
one point of the load sweep behind the nginx pods (kn64: keep-alive, 64 clients, the static
origin's three workers); of (dr), new TLS connections resuming their sessions, against the three
proxies' HTTPS listeners (the bench's own certificate, its tls-conns client); and of the open loop
behind the nginx pods at one rate (25% of nginx's kn64 req/s, bench/openloop.c). All of it in the
bench's own network namespace with cubic, where this machine allows one. The figures are not judged
(this machine may be busy, and portier may be an ASan build); what is checked is that the script
runs to the end, prints its tables with a row per target and no failed request, names the network
it ran in, writes no report, and leaves nothing running. wrk, nginx, HAProxy, openssl and a C
compiler with OpenSSL's and libevent's headers come from scripts/deps.sh.
"""

import os
import re
import shutil
import signal
import subprocess

import procs
from conftest import REPO

# Where bench/run.sh puts its processes (see the script): nothing may listen there afterwards.
BENCH_ADDRS = [
    ("127.0.0.22", 28300),
    ("127.0.0.23", 28300),
    ("127.0.0.24", 28300),
    ("127.0.0.22", 28301),
    ("127.0.0.23", 28301),
    ("127.0.0.24", 28301),
    ("127.0.0.40", 28310),
    ("127.0.0.41", 28311),
    ("127.0.0.42", 28312),
    ("127.0.0.40", 28320),
    ("127.0.0.41", 28321),
    ("127.0.0.42", 28322),
]
TIMEOUT = 120.0


def own_netns_possible():
    """True where the bench can have a network namespace of its own: root, `ip`, and a working
    `unshare -n` (a container without CAP_SYS_ADMIN has none; the bench then says so and goes on)."""
    if os.geteuid() != 0 or not (shutil.which("ip") or os.path.exists("/usr/sbin/ip")):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_smoke(build_dir):
    """Runs bench/run.sh --smoke; returns (returncode, stdout, stderr). On a timeout the script
    gets SIGTERM (its exit trap stops what it started, by PID), then its process group SIGKILL."""
    p = subprocess.Popen(
        ["bench/run.sh", "--smoke"],
        cwd=REPO,
        env=dict(os.environ, BUILD=str(build_dir)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        raise AssertionError(
            f"bench/run.sh --smoke still ran after {TIMEOUT}s; stopped.\n"
            f"stdout:\n{out}\nstderr:\n{err}"
        ) from None
    return p.returncode, out, err


def test_bench_smoke_prints_a_row_per_target_and_leaves_nothing_behind(build_dir, portier_bin):
    results = REPO / "bench" / "results"
    readme = REPO / "bench" / "README.md"
    results_before = set(os.listdir(results)) if results.is_dir() else set()
    readme_before = readme.read_text()

    rc, out, err = run_smoke(build_dir)
    both = f"stdout:\n{out}\nstderr:\n{err}"
    assert rc == 0, f"bench/run.sh --smoke exited with {rc}\n{both}"

    # Each scenario's part of the output: from its "### " heading to the next.
    parts = dict(re.findall(r"^### (.*?)\n(.*?)(?=^### |\Z)", out, re.M | re.S))
    plain = parts.get("(a) keep-alive, 100 B")
    sweep = parts.get("(s) nginx pods, keep-alive, 64 clients")
    tls = parts.get("(d) new TLS connections, resumed sessions")
    open_loop = parts.get("Open loop, nginx pods")
    assert None not in (plain, sweep, tls, open_loop), f"a scenario's table is missing\n{both}"

    # | target | req/s | x nginx | x HAProxy | x limit | p50 | p99 | CPU | RSS | errors |
    # client CPU busy | client CPU us/req |
    for part, targets in (
        (plain, ("portier", "nginx", "haproxy", "limit (no proxy)")),
        (sweep, ("portier", "nginx", "haproxy", "limit (no proxy)")),
        (tls, ("portier", "nginx", "haproxy")),
    ):
        for target in targets:
            m = re.search(rf"^\| {re.escape(target)} \|(.*)\|$", part, re.M)
            assert m, f"no table row for {target}\n{both}"
            cells = [c.strip() for c in m.group(1).split("|")]
            assert len(cells) == 11, f"{target}: {len(cells)} columns\n{both}"
            assert int(cells[0]) > 0, f"{target}: no requests per second\n{both}"
            assert cells[8] == "0", f"{target}: {cells[8]} failed requests\n{both}"
            # The client runs pinned: its CPU was measured, and it did work.
            busy = cells[9]
            assert re.fullmatch(r"\d+%", busy) and int(busy[:-1]) > 0, f"{target}: {busy}\n{both}"
            assert float(cells[10]) > 0, f"{target}: client CPU {cells[10]} us/req\n{both}"
    # | rate | target | sent req/s | answered req/s | p50 | p99 | p99.9 | max | errors | CPU us/req |
    # x nginx | x HAProxy | client CPU busy | client CPU us/req |: one rate, every target answered
    # it all, and the client CPU that sent it was measured.
    for target in ("portier", "nginx", "haproxy", "limit (no proxy)"):
        m = re.search(rf"^\| 25% \| {re.escape(target)} \|(.*)\|$", open_loop, re.M)
        assert m, f"no open-loop row for {target}\n{both}"
        cells = [c.strip() for c in m.group(1).split("|")]
        assert len(cells) == 12, f"{target}: {len(cells)} open-loop columns\n{both}"
        assert float(cells[0]) > 0 and float(cells[1]) > 0, f"{target}: no rate\n{both}"
        assert float(cells[2]) > 0, f"{target}: p50 {cells[2]} ms\n{both}"
        assert cells[6] == "0", f"{target}: {cells[6]} open-loop errors\n{both}"
        busy = cells[10]
        assert re.fullmatch(r"\d+%", busy) and int(busy[:-1]) > 0, f"{target}: {busy}\n{both}"
        assert float(cells[11]) > 0, f"{target}: client CPU {cells[11]} us/req\n{both}"

    # The network it ran in, named; its own namespace with cubic wherever one can be had.
    m = re.search(r"^network: (.*)$", out, re.M)
    assert m, f"no network line\n{both}"
    if own_netns_possible():
        network = m.group(1)
        assert network.startswith("its own network namespace"), f"not in its own namespace\n{both}"
        assert "TCP congestion control cubic" in network, f"not cubic\n{both}"
        sampled = re.search(r"on the bench's connections: cubic on (\d+) of the (\d+) ", network)
        assert sampled and sampled.group(1) == sampled.group(2), f"not every connection cubic\n{both}"

    # The handshakes, as tls-conns saw them: TLS 1.3 with every proxy.
    for target in ("portier", "nginx", "haproxy"):
        assert re.search(rf"^\| {target} \| TLSv1\.3 ", tls, re.M), f"{target}: no TLS 1.3\n{both}"

    # portier's stderr is in the output: an ASan build's report would be there.
    report = procs.sanitizer_report(out + err)
    assert report is None, f"sanitizer report during the bench:\n{report}"

    assert (set(os.listdir(results)) if results.is_dir() else set()) == results_before, (
        "--smoke wrote into bench/results"
    )
    assert readme.read_text() == readme_before, "--smoke changed bench/README.md"
    listening = [f"{h}:{p}" for h, p in BENCH_ADDRS if procs._accepts((h, p))]
    assert not listening, f"still listening after the bench: {listening}\n{both}"
