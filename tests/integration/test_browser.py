"""A real browser through portier: headless Chromium loads http://app2.com/ and reloads it, and each
load must meet the next app2 replica, as the page's tagline promises ("Reload to meet the next
one").

What broke: a browser asks for /favicon.ico when a page names no icon (Chromium 156 here: after
the first load, then it remembers the 404). That request took a turn of app2's round-robin, so a
reload skipped a replica. The apps' pages now declare their icon inline (a data: URL), and this
test proves that Chromium asks portier for the pages and nothing else.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with urllib (no Selenium: one
less package, and chromedriver is started and stopped by PID with procs like every other process
here). Addresses: portier on 127.0.0.60:28610, the three app2 replicas on 127.0.0.61-63:28600,
chromedriver on 127.0.0.1:28619. Chromium's resolver maps app2.com to portier and every other name
to nothing, no proxy is used and background networking is off, so nothing leaves loopback.
"""

import json
import os
import signal
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Set

import pytest

import procs

# Debian packages: /usr/bin/chromium is in chromium, /usr/bin/chromedriver in chromium-driver.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = {CHROMIUM: "chromium", CHROMEDRIVER: "chromium-driver"}

PORTIER = ("127.0.0.60", 28610)
PODS = [  # POD_NAME, LISTEN, in the order portier's config lists them (the round-robin order)
    ("br-app2-a", "127.0.0.61:28600"),
    ("br-app2-b", "127.0.0.62:28600"),
    ("br-app2-c", "127.0.0.63:28600"),
]
DRIVER = ("127.0.0.1", 28619)
URL = "http://app2.com/"
LOADS = 6  # the first load and 5 reloads: every replica twice

CONFIG = f"""
listen:
  - address: "{PORTIER[0]}:{PORTIER[1]}"
workers: 2
access_log_format: json
routes:
  - host: app2.com
    service: app2
services:
  app2:
    servers: [{", ".join(f'"{listen}"' for _, listen in PODS)}]
"""

# Without the background-networking flags Chromium tries to reach Google's services (refused here);
# without --no-sandbox it will not start as root, nor where user namespaces are off. The resolver
# rules send app2.com to portier, port included (the Host header stays "app2.com"), and fail every
# other name; --no-proxy-server ignores any http_proxy in the environment.
CHROMIUM_BASE_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # Chromium tries https:// first for an http:// URL; on portier's plain port that is a TLS
    # ClientHello, which portier answers (and logs) as a 400 before Chromium falls back.
    "--disable-features=HttpsUpgrades",
]
CHROMIUM_ARGS = CHROMIUM_BASE_ARGS + [
    f"--host-resolver-rules=MAP app2.com {PORTIER[0]}:{PORTIER[1]}, MAP * ~NOTFOUND",
]

CALL_TIMEOUT = 30.0  # any one WebDriver call, starting Chromium included; the test's bound
PAGE_LOAD_MS = 10000  # a navigation or reload, as Chromium times it
SETTLE = 1.0  # how long to wait after the last load for requests Chromium makes afterwards
EXIT_TIMEOUT = 5.0  # how long Chromium's processes get to exit after the session ends

# Reads what a visitor sees: the table's rows and the icons the page declares.
READ_PAGE = """
const rows = {};
for (const tr of document.querySelectorAll("tr"))
    rows[tr.querySelector("th").textContent] = tr.querySelector("td").textContent;
const icons = Array.from(document.querySelectorAll("link[rel~=icon]"), l => l.href);
return {rows: rows, icons: icons};
"""

# Whether Chromium can draw the page's icon: loads its href as an image (async: the last argument
# is WebDriver's callback).
ICON_LOADS = """
const done = arguments[arguments.length - 1];
const img = new Image();
img.onload = () => done(img.naturalWidth > 0);
img.onerror = () => done(false);
img.src = document.querySelector("link[rel~=icon]").href;
"""

# urllib without proxies: requests to chromedriver must not go through an http_proxy.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebDriver:
    """One WebDriver session on chromedriver at addr; every call times out."""

    def __init__(self, addr, capabilities):
        self.base = f"http://{addr[0]}:{addr[1]}"
        self.session = None
        self.session = self.send("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def call(self, method, command, body=None):
        """Sends one command of the session ("/url", "/refresh"; "" for the session itself)."""
        return self.send(method, f"/session/{self.session}{command}", body)

    def send(self, method, path, body=None):
        """Sends one request; returns its "value", or raises AssertionError with the error."""
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with OPENER.open(r, timeout=CALL_TIMEOUT) as resp:
                return json.load(resp)["value"]
        except urllib.error.HTTPError as e:
            value = json.load(e).get("value", {})
            raise AssertionError(
                f"WebDriver {method} {path}: {value.get('error')}: {value.get('message')}"
            ) from None

    def quit(self):
        if self.session is not None:
            self.call("DELETE", "")
            self.session = None


def missing_packages() -> List[str]:
    return [f"{path} (Debian package {pkg})" for path, pkg in PACKAGES.items()
            if not os.access(path, os.X_OK)]


def descendants(root: int) -> Set[int]:
    """The PIDs of root's descendants, from /proc."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out: Set[int] = set()
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def mentioning(marker: str) -> Set[int]:
    """The PIDs of processes whose command line mentions marker (the profile directory, unique to
    this test: every Chromium process that reads it, whoever its parent is now)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                out.add(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@contextmanager
def chromium_session(tmp_path, driver_addr, args):
    """A WebDriver session on a fresh headless Chromium started with args, chromedriver on
    driver_addr. At the end the session ends, chromedriver is stopped by PID, and any Chromium
    process still alive after EXIT_TIMEOUT is killed by PID and fails the test."""
    missing = missing_packages()
    if missing:
        pytest.fail(
            f"the browser tests need {' and '.join(missing)}: run scripts/deps.sh", pytrace=False
        )
    home = tmp_path / "home"  # Chromium writes under $HOME and XDG dirs: keep it all in here
    profile = tmp_path / "chromium-profile"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(tmp_path)}
    driver = procs.start(
        [CHROMEDRIVER, f"--port={driver_addr[1]}", f"--log-path={tmp_path / 'chromedriver.log'}"],
        env=env, wait_for=driver_addr, log_dir=str(tmp_path), name="chromedriver",
    )
    browser_pids: Set[int] = set()
    problems: List[str] = []
    wd = None
    try:
        wd = WebDriver(driver_addr, {
            "alwaysMatch": {
                "pageLoadStrategy": "normal",
                "timeouts": {"pageLoad": PAGE_LOAD_MS, "script": 5000, "implicit": 0},
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": args + [f"--user-data-dir={profile}"],
                },
            }
        })
        browser_pids = descendants(driver.pid) | mentioning(str(profile))
        yield wd
    finally:
        browser_pids |= descendants(driver.pid) | mentioning(str(profile))
        if wd is not None:
            try:
                wd.quit()  # chromedriver closes Chromium
            except (AssertionError, OSError) as e:
                problems.append(f"ending the WebDriver session: {e}")
        r = procs.stop(driver, check=False)
        if r.killed:
            problems.append(f"chromedriver (pid {driver.pid}) ignored SIGTERM and was killed")
        deadline = time.monotonic() + EXIT_TIMEOUT
        browser_pids |= mentioning(str(profile))
        while any(alive(p) for p in browser_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = sorted(p for p in browser_pids | mentioning(str(profile)) if alive(p))
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            problems.append(f"Chromium processes {left} still ran {EXIT_TIMEOUT}s after the "
                            "session ended; killed")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def chromium(tmp_path):
    """chromium_session() with this file's Chromium arguments."""
    with chromium_session(tmp_path, DRIVER, CHROMIUM_ARGS) as wd:
        yield wd


def read_page(wd: WebDriver) -> dict:
    return wd.call("POST", "/execute/sync", {"script": READ_PAGE, "args": []})


def access_log(p, n: int) -> List[dict]:
    """portier's access log once it has n lines and nothing more came for SETTLE seconds."""
    deadline = time.monotonic() + 5.0
    while len(p.log().splitlines()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(SETTLE)
    return [json.loads(line) for line in p.log().splitlines() if line]


def test_each_browser_reload_meets_the_next_app2_replica(start_app, start_portier, chromium):
    for pod, listen in PODS:
        start_app("app2", listen, env={"POD_NAME": pod})
    p = start_portier(CONFIG, addr=PORTIER)

    seen = []
    for i in range(LOADS):
        if i == 0:
            chromium.call("POST", "/url", {"url": URL})
        else:
            chromium.call("POST", "/refresh", {})
        seen.append(read_page(chromium))
    log = access_log(p, LOADS)

    # What Chromium asked for, through portier: the page loads and nothing else.
    asked = [(e["method"], e["target"], e["host"], e["status"], e["upstream"]) for e in log]
    extra = [a for a in asked if a[:4] != ("GET", "/", "app2.com", 200)]
    assert not extra, (
        f"Chromium asked for more than the {LOADS} pages: {extra}; all it asked: {asked}; the "
        f"pages showed pods {[s['rows'].get('Pod') for s in seen]}"
    )
    assert len(log) == LOADS, asked

    # Each load met the next replica, in the config's order, whichever replica came first: all
    # three, then the same cycle again.
    pods = [s["rows"].get("Pod") for s in seen]
    order = [pod for pod, _ in PODS]
    assert pods[0] in order, seen[0]
    first = order.index(pods[0])
    want = [order[(first + i) % len(order)] for i in range(LOADS)]
    assert pods == want, f"the loads met pods {pods}, not one replica after the other: {want}"
    assert [e["upstream"] for e in log] == [dict(PODS)[pod] for pod in pods], asked
    # Every replica counted only these pages: its first visit shows 1, its second 2.
    assert [s["rows"].get("Requests served") for s in seen] == ["1"] * 3 + ["2"] * 3, seen
    # The reason: each page declares its icon inline, so the browser had nothing to fetch, and
    # the icon is an image Chromium can draw.
    for s in seen:
        assert s["rows"].get("Host") == "app2.com", s
        assert s["icons"] and all(i.startswith("data:image/svg+xml,") for i in s["icons"]), s
    assert chromium.call("POST", "/execute/async", {"script": ICON_LOADS, "args": []}), seen[-1]

