"""Black-box tests of portier's Kubernetes provider against the stand-in API server (kubeapi.py).

portier runs as the DaemonSet runs it, but on loopback: `kubernetes:` in its config names the
stand-in's URL, a token file the test writes (and rewrites, to rotate it) and the stand-in's CA;
PORTIER_NODE_IP is the address it writes into Ingress status (never contacted). The stand-in holds
the objects of k8s/ as `kubectl kustomize k8s` renders them (IngressClass portier, Ingress apps/p2,
the Services app1-app3), enforces the rendered ClusterRole portier, and gets from the test what the
cluster's controllers would write: each Service's EndpointSlices (set_endpoints) pointing at real
app processes (the "pods"), and the TLS Secret apps-tls.

What is tested, one test each: routing from the rendered Ingress, HTTPS with the Secret's
certificate by SNI, scaling app2 3 -> 5 -> 2 under load without a failed request, and to 0 and
back, a not-ready endpoint leaving the rotation, an Ingress edit, a Secret replaced, the API server going away and
coming back, compaction (410, re-list), token rotation, Ingress status, two Ingresses claiming a
host, other classes, portier started before the API server, the API server found from the pod's
environment, and a SIGHUP that adds file routes beside the Ingress's.

Timing: what portier promises "within a second" (it applies a change KUBE_SETTLE_MS after the
event) is measured from the change to the first request that shows it, and asserted to take at
most FOLLOW_S = 3 s: this machine is shared and noisy, and an upper bound with slack is all a test
here may assert about time. Reconnecting after the API server was away waits for portier's
jittered backoff (0.5 s doubling up to 30 s), hence RECONNECT_S for those.

Addresses (no other test file uses them): the stand-in on 127.0.0.130:29300; portier on
127.0.0.131 (29331 plain, 29332 TLS, 29339 admin); the pods on 127.0.0.132-137, ports 29341-29349.
Every process is stopped by PID at teardown (conftest.stopping: portier must exit 0 on SIGTERM),
every load is bounded in requests and seconds, every socket operation times out.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import pytest

import httpc
import kubeapi
import procs
from conftest import BackgroundThreads, assert_alive, start_pod, stopping, wait_until

API = ("127.0.0.130", 29300)
PLAIN = ("127.0.0.131", 29331)
TLS = ("127.0.0.131", 29332)
ADMIN = ("127.0.0.131", 29339)
NODE_IP = "192.168.56.110"
TOKEN = "token-1"

# The shared pods: app1 and app3 on .132, app2's three replicas on .133-.135 (one port per
# Service, as an EndpointSlice has one port list for all its endpoints).
APP1_PORT, APP2_PORT, APP3_PORT = 29341, 29342, 29343
APP1_POD = ("app1", "app1-pod", ("127.0.0.132", APP1_PORT))
APP3_POD = ("app3", "app3-pod", ("127.0.0.132", APP3_PORT))
APP2_PODS = [("app2", f"app2-pod-{c}", (f"127.0.0.{133 + i}", APP2_PORT))
             for i, c in enumerate("abc")]
# The scaling test's own app2 replicas (it stops some): .133-.137 on this port.
SCALE_PORT = 29346

FOLLOW_S = 3.0  # a change portier applies "within a second", with this machine's slack
WAIT_S = 5.0  # for anything else that has no timing promise
RECONNECT_S = 20.0  # back after the API server was away: portier's backoff is up to 30 s * jitter
START_S = 15.0  # portier waits up to 5 s for the first LISTs before it listens


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered():
    """The repo's manifests, rendered by Debian's kubectl."""
    if not kubeapi.KUBECTL.exists():
        pytest.fail(f"{kubeapi.KUBECTL} is missing (scripts/deps.sh unpacks it)", pytrace=False)
    objs = kubeapi.render_manifests()
    if kubeapi.find(objs, "Ingress", "p2", "apps") is None:
        pytest.fail("k8s/ renders no Ingress apps/p2", pytrace=False)
    return objs


@dataclass
class Certs:
    ca: kubeapi.CertAuthority
    crt: Path
    key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    """The Ingress's certificate for app1.com, app2.com, app3.com (CN "apps-tls-1"), from a CA of
    its own (not the API server's)."""
    ca = kubeapi.CertAuthority(tmp_path_factory.mktemp("ingress-ca"), "ingress test CA")
    crt, key = ca.issue("apps-tls-1", dns=["app1.com", "app2.com", "app3.com"])
    return Certs(ca, crt, key)


@pytest.fixture(scope="module")
def pods(build_dir, tmp_path_factory):
    """app1, app3 and app2's three replicas, by pod name; shared by the module (no test stops
    them; tests that do run pods of their own)."""
    log_dir = str(tmp_path_factory.mktemp("kube-pods"))
    out = {}
    with stopping([]) as started:
        for app, pod, addr in [APP1_POD, APP3_POD, *APP2_PODS]:
            p = start_pod(build_dir, app, pod, addr, log_dir)
            started.append(p)
            out[pod] = addr
        yield out


def app2_endpoints(ready=(True, True, True)):
    return [(addr[0], r, pod) for (_, pod, addr), r in zip(APP2_PODS, ready)]


@pytest.fixture
def api(tmp_path, rendered, certs, pods):
    """The stand-in, not yet listening (a test may start portier first), holding the rendered
    objects, the endpoints of the shared pods and the Secret apps-tls; stopped at teardown."""
    s = kubeapi.ApiServer(API, tmp_path, tokens=[TOKEN],
                          rbac=kubeapi.cluster_role_rules(rendered), bookmark_interval=1.0)
    try:
        kubeapi.load_manifests(s, rendered)
        s.set_endpoints("apps", "app1", "http", APP1_PORT, [(APP1_POD[2][0], True, "app1-pod")])
        s.set_endpoints("apps", "app2", "http", APP2_PORT, app2_endpoints())
        s.set_endpoints("apps", "app3", "http", APP3_PORT, [(APP3_POD[2][0], True, "app3-pod")])
        s.apply(kubeapi.tls_secret("apps", "apps-tls", certs.crt, certs.key))
        yield s
    finally:
        s.stop()


@dataclass
class Kube:
    """portier following the stand-in."""

    proc: procs.Proc
    api: kubeapi.ApiServer
    token_file: Path
    config: Path

    def errors(self) -> str:
        return self.proc.stderr()

    def rotate_token(self, token: str):
        """Replaces the token file at once, as the kubelet does (a rename, never a partial
        file)."""
        tmp = self.token_file.with_suffix(".new")
        tmp.write_text(token)
        os.replace(tmp, self.token_file)


def kube_config(api: kubeapi.ApiServer, token_file: Path, server: bool = True,
                extra: str = "") -> str:
    """portier's config; without server, the API server comes from the pod's environment."""
    server_line = f'  server: "{api.url}"\n' if server else ""
    return f"""
listen:
  - address: "{PLAIN[0]}:{PLAIN[1]}"
  - address: "{TLS[0]}:{TLS[1]}"
    tls: true
admin: "{ADMIN[0]}:{ADMIN[1]}"
workers: 2
kubernetes:
  ingress_class: portier
{server_line}  token_file: {token_file}
  ca_file: {api.ca_file}
{extra}"""


@pytest.fixture
def start_kube(portier_bin, tmp_path, api):
    """A factory: start_kube() starts portier following api (started unless api_first=False)
    and, with wait_routes, waits until the rendered Ingress routes. Stopped at teardown (exit 0
    on SIGTERM, no sanitizer report)."""
    started: List[procs.Proc] = []

    def _start(api_first: bool = True, wait_routes: bool = True, env_server: bool = False,
               extra: str = "") -> Kube:
        """env_server: the API server from KUBERNETES_SERVICE_HOST and _PORT, as in a pod;
        extra: YAML appended to the config."""
        if api_first and not api.running:
            api.start()
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        cfg = tmp_path / "portier.yaml"
        cfg.write_text(kube_config(api, token_file, server=not env_server, extra=extra))
        env = {"PORTIER_NODE_IP": NODE_IP}
        if env_server:
            env.update(KUBERNETES_SERVICE_HOST=API[0], KUBERNETES_SERVICE_PORT=str(API[1]))
        p = procs.start([str(portier_bin), "-c", str(cfg)], env=env,
                        wait_for=PLAIN, timeout=START_S, log_dir=str(tmp_path), name="portier")
        started.append(p)
        k = Kube(p, api, token_file, cfg)
        if wait_routes:
            wait_until(lambda: pod_of("app1.com") == "app1-pod", WAIT_S,
                       f"app1.com routes to app1-pod; portier's stderr:\n{k.errors()}")
        return k

    with stopping(started):
        yield _start


@pytest.fixture
def kube(start_kube) -> Kube:
    return start_kube()


# --- clients ----------------------------------------------------------------------------------


def get(host: str, path: str = "/api/info", addr=PLAIN, timeout: float = 3.0):
    """One request on a connection of its own: (status, body)."""
    c = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pod_of(host: str) -> Optional[str]:
    """The pod that answered /api/info for host, or None (an error, or not an app's answer)."""
    try:
        status, body = get(host)
        return json.loads(body)["pod"] if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None


def wait_for(pred: Callable[[], bool], timeout: float, what: str, since: float) -> float:
    """Polls pred until true; returns the seconds from since (a monotonic time) to then."""
    wait_until(pred, timeout, what)
    return time.monotonic() - since


def tls_context(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca.crt))


def tls_get(ctx: ssl.SSLContext, sni: str, host: Optional[str] = None, timeout: float = 3.0):
    """A request over TLS with SNI sni, verified for that name: (peer certificate's CN, pod)."""
    raw = socket.create_connection(TLS, timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        cert = s.getpeercert()
        cn = dict(x[0] for x in cert["subject"])["commonName"]
        s.sendall(httpc.req("GET", "/api/info", host=host or sni,
                            headers=[("Connection", "close")]))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    r, _ = httpc.parse_response(data) or (None, None)
    assert r is not None, f"no whole response over TLS: {data[:300]!r}"
    return cn, (r.json()["pod"] if r.status == 200 else None)


def tls_cn(ctx: ssl.SSLContext, sni: str) -> Optional[str]:
    """The CN of the certificate portier presents for sni, or None if the handshake fails."""
    try:
        raw = socket.create_connection(TLS, timeout=3)
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
    except (OSError, ssl.SSLError):
        return None


class Load(BackgroundThreads):
    """Requests for host through portier from two threads (one keep-alive connection, one new
    connection per request) until stopped, bounded by max_requests each and max_seconds; records
    (start, end, pod) of each answer and every failure."""

    def __init__(self, host: str = "app2.com", max_requests: int = 3000,
                 max_seconds: float = 45.0):
        self.host = host
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.seen = []  # (monotonic start, monotonic end, pod)
        self.failures = []
        self.lock = threading.Lock()
        super().__init__([(self._run, (True,)), (self._run, (False,))])

    def _one(self, conn):
        t0 = time.monotonic()
        conn.request("GET", "/api/info", headers={"Host": self.host})
        r = conn.getresponse()
        body = r.read()
        with self.lock:
            if r.status != 200:
                self.failures.append(f"{r.status}: {body[:200]!r}")
            else:
                self.seen.append((t0, time.monotonic(), json.loads(body)["pod"]))
        return r

    def _run(self, keepalive: bool):
        deadline = time.monotonic() + self.max_seconds
        conn = None
        for _ in range(self.max_requests):
            if self.stop_event.is_set() or time.monotonic() > deadline:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(*PLAIN, timeout=5)
                r = self._one(conn)
                if not keepalive or r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as e:
                with self.lock:
                    self.failures.append(f"{'keep-alive' if keepalive else 'new'}: {e!r}")
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.005)
        if conn is not None:
            conn.close()

    def first_answer(self, pod: str, after: float) -> Optional[float]:
        with self.lock:
            ends = [end for start, end, p in self.seen if p == pod and end >= after]
        return min(ends) if ends else None

    def started_after(self, t: float) -> List[tuple]:
        with self.lock:
            return [s for s in self.seen if s[0] >= t]


# --- tests ------------------------------------------------------------------------------------


def test_routes_from_the_rendered_ingress(kube, pods):
    """The Ingress p2 of k8s/ as portier serves it: app1.com to app1, app2.com round-robin over
    app2's three ready endpoints, any other Host to the default backend app3."""
    assert pod_of("app1.com") == "app1-pod"
    c = http.client.HTTPConnection(*PLAIN, timeout=3)
    try:
        seen = []
        for _ in range(6):
            c.request("GET", "/api/info", headers={"Host": "app2.com"})
            r = c.getresponse()
            assert r.status == 200
            seen.append(json.loads(r.read())["pod"])
    finally:
        c.close()
    assert sorted(set(seen)) == ["app2-pod-a", "app2-pod-b", "app2-pod-c"], seen
    assert pod_of("unknown.example") == "app3-pod"
    assert pod_of("app3.com") == "app3-pod"
    assert_alive(kube)


def test_https_by_sni_with_the_secrets_certificate(kube, certs):
    """The TLS listener has no certificate of its own: each name of the Ingress's tls gets the
    Secret apps-tls's certificate by SNI, verified against its CA, and routes as plain HTTP
    does."""
    ctx = tls_context(certs)
    wait_until(lambda: tls_cn(ctx, "app2.com") == "apps-tls-1", WAIT_S,
               f"the Secret's certificate for app2.com; stderr:\n{kube.errors()}")
    cn, pod = tls_get(ctx, "app2.com")
    assert cn == "apps-tls-1" and pod.startswith("app2-pod-")
    assert tls_get(ctx, "app1.com") == ("apps-tls-1", "app1-pod")
    assert tls_get(ctx, "app3.com") == ("apps-tls-1", "app3-pod")


def test_scale_app2_3_to_5_to_2_without_a_failed_request(start_kube, api, start_app):
    """app2 scaled 3 -> 5 -> 2 under load (keep-alive and new connections): no request fails; the
    two new pods get requests within FOLLOW_S of the change; when scaling down, the removed pods
    keep serving 1 s after the endpoints change (a preStop pause) and are then stopped, and no
    request started FOLLOW_S after the change reaches them."""
    ips = [f"127.0.0.{133 + i}" for i in range(5)]
    names = [f"app2-scale-{i}" for i in range(5)]
    procs_ = [start_app("app2", f"{ip}:{SCALE_PORT}", env={"POD_NAME": n})
              for ip, n in zip(ips, names)]

    def scale(n_first, keep=None):
        idx = keep if keep is not None else range(n_first)
        api.set_endpoints("apps", "app2", "http", SCALE_PORT,
                          [(ips[i], True, names[i]) for i in idx])

    scale(3)
    kube = start_kube()
    wait_until(lambda: pod_of("app2.com") in names[:3], WAIT_S, "app2.com on the scale pods")
    with Load() as load:
        time.sleep(1.0)
        t_up = time.monotonic()
        scale(5)
        wait_until(lambda: all(load.first_answer(n, t_up) for n in names[3:]), WAIT_S,
                   "the two new pods answer")
        took = max(load.first_answer(n, t_up) for n in names[3:]) - t_up
        assert took <= FOLLOW_S, f"the new pods got requests {took:.2f}s after the change"
        time.sleep(1.0)
        t_down = time.monotonic()
        scale(5, keep=[0, 1])
        time.sleep(1.0)  # preStop: the removed pods still serve while portier follows
        for p in procs_[2:]:
            r = procs.stop(p)
            assert r.returncode == 0, r.stderr
        time.sleep(FOLLOW_S)
    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
    late = [s for s in load.started_after(t_down + FOLLOW_S) if s[2] in names[2:]]
    assert late == [], f"removed pods still got requests: {late[:5]}"
    after = {s[2] for s in load.started_after(t_down + FOLLOW_S)}
    assert after == set(names[:2]), after
    assert_alive(kube)


def test_app2_scaled_to_zero_answers_503_then_recovers(kube, api):
    """app2 scaled to 0: its EndpointSlice then has "endpoints": null, as the real server
    encodes an empty list; app2.com answers 503 (a backend with no server), the other hosts
    still route, and scaling back up routes again, each within FOLLOW_S."""
    t = time.monotonic()
    (s,) = api.set_endpoints("apps", "app2", "http", APP2_PORT, [])
    assert s["endpoints"] is None
    took = wait_for(lambda: get("app2.com")[0] == 503, WAIT_S,
                    f"app2.com answers 503; stderr:\n{kube.errors()}", t)
    assert took <= FOLLOW_S, f"503 came {took:.2f}s after the change"
    assert pod_of("app1.com") == "app1-pod"
    t = time.monotonic()
    api.set_endpoints("apps", "app2", "http", APP2_PORT, app2_endpoints())
    took = wait_for(lambda: (pod_of("app2.com") or "").startswith("app2-pod-"), WAIT_S,
                    "app2.com routes again", t)
    assert took <= FOLLOW_S, f"app2 came back {took:.2f}s after the change"
    assert_alive(kube)


def test_a_not_ready_endpoint_leaves_the_rotation(kube, api):
    """An endpoint whose conditions.ready turns false (a failing readiness probe) gets no new
    request FOLLOW_S after the change, while the others serve on without a failure."""
    with Load() as load:
        time.sleep(1.0)
        t = time.monotonic()
        api.set_endpoints("apps", "app2", "http", APP2_PORT, app2_endpoints((True, True, False)))
        time.sleep(FOLLOW_S + 1.5)
    assert load.failures == [], load.failures[:5]
    before = {s[2] for s in load.seen if s[0] < t}
    assert "app2-pod-c" in before, before
    late = load.started_after(t + FOLLOW_S)
    assert len(late) > 20, f"too few requests after the change to tell: {len(late)}"
    assert {s[2] for s in late} == {"app2-pod-a", "app2-pod-b"}
    last_c = max((s[0] for s in load.seen if s[2] == "app2-pod-c"), default=t)
    assert last_c - t <= FOLLOW_S, f"app2-pod-c got a request {last_c - t:.2f}s after"


def test_an_ingress_edit_adds_a_host(kube, api):
    """A rule added to the Ingress (www.app1.com -> app1) routes within FOLLOW_S; before, the
    name went to the default backend."""
    assert pod_of("www.app1.com") == "app3-pod"
    ing = api.get("Ingress", "apps", "p2")
    ing["spec"]["rules"].append({"host": "www.app1.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "app1", "port": {"name": "http"}}}}]}})
    t = time.monotonic()
    api.apply(ing)
    took = wait_for(lambda: pod_of("www.app1.com") == "app1-pod", WAIT_S,
                    f"www.app1.com routes to app1; stderr:\n{kube.errors()}", t)
    assert took <= FOLLOW_S, f"the new host routed {took:.2f}s after the edit"
    assert pod_of("app1.com") == "app1-pod"


def test_a_replaced_tls_secret_serves_new_handshakes(kube, api, certs):
    """The Secret apps-tls replaced by a new certificate: new handshakes get it within
    FOLLOW_S."""
    ctx = tls_context(certs)
    wait_until(lambda: tls_cn(ctx, "app2.com") == "apps-tls-1", WAIT_S, "the first certificate")
    crt, key = certs.ca.issue("apps-tls-2", dns=["app1.com", "app2.com", "app3.com"])
    t = time.monotonic()
    api.apply(kubeapi.tls_secret("apps", "apps-tls", crt, key))
    took = wait_for(lambda: tls_cn(ctx, "app2.com") == "apps-tls-2", WAIT_S,
                    f"the new certificate; stderr:\n{kube.errors()}", t)
    assert took <= FOLLOW_S, f"the new certificate came {took:.2f}s after the change"
    assert tls_get(ctx, "app1.com") == ("apps-tls-2", "app1-pod")


def test_the_api_server_away_and_back(kube, api):
    """The API server stopped: portier keeps serving the last routes (no request fails while it
    is away, and portier keeps running). Started again: a change made after the restart is
    applied (the watches resumed or re-listed), within RECONNECT_S."""
    api.wait_watches(5, timeout=WAIT_S)
    api.stop()
    with Load() as load:
        time.sleep(3.0)
        assert pod_of("app1.com") == "app1-pod"
        assert pod_of("other.example") == "app3-pod"
    assert load.failures == [], load.failures[:5]
    assert {s[2] for s in load.seen} == {"app2-pod-a", "app2-pod-b", "app2-pod-c"}
    assert_alive(kube, "while the API server was away")
    t = time.monotonic()
    api.start()
    api.set_endpoints("apps", "app2", "http", APP2_PORT, app2_endpoints((True, False, False)))
    wait_until(lambda: all(pod_of("app2.com") == "app2-pod-a" for _ in range(6)), RECONNECT_S,
               f"only app2-pod-a after the restart; stderr:\n{kube.errors()}")
    assert api.requests_since(t), "portier asked nothing of the restarted server"


def test_compaction_makes_portier_list_again(kube, api):
    """compact() and every watch dropped: portier's watches from its last resourceVersion get
    the 410 ERROR event, it LISTs again, and a change made afterwards is applied."""
    api.wait_watches(5, timeout=WAIT_S)
    t = time.monotonic()
    api.compact(drop_watches=True)
    api.set_endpoints("apps", "app2", "http", APP2_PORT, app2_endpoints((False, True, False)))
    wait_until(lambda: all(pod_of("app2.com") == "app2-pod-b" for _ in range(6)), RECONNECT_S,
               f"only app2-pod-b after the compaction; stderr:\n{kube.errors()}")
    log = api.requests_since(t)
    slices = "/apis/discovery.k8s.io/v1/endpointslices"
    expired = [q for q in log if q.path == slices and q.expired]
    assert expired, f"no watch of endpointslices got 410: {log}"
    relist = [q for q in log if q.path == slices and not q.watch and q.time > expired[0].time]
    assert relist, f"no LIST of endpointslices after the 410: {log}"


def test_token_rotation(kube, api):
    """The token file rewritten with a new token that the server accepts (the old one no
    longer): every request portier makes afterwards carries the new token, and a change is
    applied. The watches are dropped to make portier ask again. Before the rotation, the test
    waits for portier to be idle (five watches open, the Ingress status written), so that no
    request that read the old token is still on its way."""
    api.wait_watches(5, timeout=WAIT_S)
    wait_until(lambda: lb_ingress(api, "p2") == [{"ip": NODE_IP}], WAIT_S, "the status of p2")
    api.set_tokens(["token-2"])
    kube.rotate_token("token-2")
    t = time.monotonic()
    api.drop_watches()
    api.set_endpoints("apps", "app2", "http", APP2_PORT, app2_endpoints((False, False, True)))
    wait_until(lambda: all(pod_of("app2.com") == "app2-pod-c" for _ in range(6)), RECONNECT_S,
               f"only app2-pod-c after the rotation; stderr:\n{kube.errors()}")
    api.wait_watches(5, timeout=RECONNECT_S, since=t)  # every kind asked again
    later = api.requests_since(t)
    assert {q.token for q in later} == {"token-2"}, later
    assert all(q.status != 401 for q in later), later


def test_the_served_ingress_gets_the_node_address_as_status(kube, api):
    """status.loadBalancer.ingress of the Ingress served becomes [{ip: PORTIER_NODE_IP}],
    written through the status subresource (PUT .../status, which the ClusterRole grants),
    leaving the spec alone."""
    spec = api.get("Ingress", "apps", "p2")["spec"]
    wait_until(lambda: lb_ingress(api, "p2") == [{"ip": NODE_IP}], WAIT_S,
               f"the status of apps/p2; stderr:\n{kube.errors()}\nrequests: {api.requests}")
    assert api.get("Ingress", "apps", "p2")["spec"] == spec
    puts = [q for q in api.requests if q.method != "GET"]
    assert puts and all(q.method == "PUT" and q.path ==
                        "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/p2/status"
                        for q in puts), puts
    assert all(q.status in (200, 409) for q in puts), puts


def lb_ingress(api, name, namespace="apps"):
    """status.loadBalancer.ingress of an Ingress as the stand-in holds it (None if unset)."""
    return ((api.get("Ingress", namespace, name).get("status") or {}).get("loadBalancer")
            or {}).get("ingress")


def ingress(name, host, service, created, cls="portier", annotations=None):
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "apps", "creationTimestamp": created},
           "spec": {"rules": [{"host": host, "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 8080}}}}]}}]}}
    if cls:
        ing["spec"]["ingressClassName"] = cls
    if annotations:
        ing["metadata"]["annotations"] = annotations
    return ing


def test_the_older_ingress_wins_a_host(kube, api):
    """Two Ingresses claim dup.example: the older by creationTimestamp wins whatever the order
    they arrive in, and portier's stderr has a line naming both."""
    api.apply(ingress("dup-new", "dup.example", "app1", "2024-06-01T00:00:00Z"))
    wait_until(lambda: pod_of("dup.example") == "app1-pod", WAIT_S, "dup-new alone routes")
    api.apply(ingress("dup-old", "dup.example", "app3", "2020-01-01T00:00:00Z"))
    wait_until(lambda: pod_of("dup.example") == "app3-pod", WAIT_S,
               f"the older dup-old wins; stderr:\n{kube.errors()}")
    wait_until(lambda: any("dup-old" in ln and "dup-new" in ln
                           for ln in kube.errors().splitlines()), WAIT_S,
               f"a line naming both Ingresses; stderr:\n{kube.errors()}")


def test_ingresses_of_another_class_are_ignored(kube, api):
    """An Ingress of class other (by ingressClassName, or by the old annotation) is not served;
    one that names no class is portier's, the default class; an Ingress served is the sync
    point."""
    api.apply({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
               "metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}})
    api.apply(ingress("foreign", "foreign.example", "app1", "2020-01-01T00:00:00Z", cls="other"))
    api.apply(ingress("foreign-annotated", "foreign2.example", "app1", "2020-01-01T00:00:00Z",
                      cls=None, annotations={"kubernetes.io/ingress.class": "other"}))
    api.apply(ingress("classless", "classless.example", "app1", "2020-01-01T00:00:00Z",
                      cls=None))
    wait_until(lambda: pod_of("classless.example") == "app1-pod", WAIT_S,
               f"the class-less Ingress is served; stderr:\n{kube.errors()}")
    assert pod_of("foreign.example") == "app3-pod"
    assert pod_of("foreign2.example") == "app3-pod"
    wait_until(lambda: lb_ingress(api, "classless") == [{"ip": NODE_IP}], WAIT_S,
               "the status of the class-less Ingress")
    for name in ("foreign", "foreign-annotated"):
        assert api.get("Ingress", "apps", name)["status"] == {"loadBalancer": {}}, name


def test_portier_started_before_the_api_server(start_kube, api):
    """portier started while the API server is down listens anyway (after its first LISTs time
    out), serves nothing from Kubernetes, keeps running, and routes once the server is up."""
    kube = start_kube(api_first=False, wait_routes=False)
    status, _ = get("app1.com")
    assert status != 200 and pod_of("app1.com") is None
    time.sleep(1.0)
    assert_alive(kube, "with no API server")
    api.start()
    wait_until(lambda: pod_of("app1.com") == "app1-pod", RECONNECT_S,
               f"app1.com routes once the API server is up; stderr:\n{kube.errors()}")
    assert pod_of("app2.com").startswith("app2-pod-")
    assert pod_of("x.example") == "app3-pod"


def test_the_api_server_from_the_pod_environment(start_kube, api):
    """Without kubernetes.server, portier finds the API server as a pod does, from
    KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, and routes by the Ingress."""
    kube = start_kube(env_server=True)
    assert pod_of("app2.com").startswith("app2-pod-")
    assert "from https://127.0.0.130:29300" in kube.errors()


FILE_ROUTES = f"""
routes:
  - host: file.example
    service: file-app1
  - host: app2.com
    service: file-app1
services:
  file-app1:
    servers: ["{APP1_POD[2][0]}:{APP1_POD[2][1]}"]
"""


def test_a_reload_keeps_the_ingresses_and_adds_the_files_routes(start_kube, api):
    """SIGHUP with routes added to the file: they serve beside the Ingress's at once (no API
    round trip), the file's app2.com winning over the Ingress's (a warning names it), and the
    provider goes on following the API server afterwards."""
    kube = start_kube()
    assert pod_of("file.example") == "app3-pod"
    kube.config.write_text(kube.config.read_text() + FILE_ROUTES)
    os.kill(kube.proc.pid, signal.SIGHUP)
    wait_until(lambda: pod_of("file.example") == "app1-pod", WAIT_S,
               f"file.example routes after SIGHUP; stderr:\n{kube.errors()}")
    assert pod_of("app2.com") == "app1-pod"
    assert pod_of("app1.com") == "app1-pod"
    assert pod_of("x.example") == "app3-pod"
    assert "kubernetes route app2.com / is also in the file" in kube.errors()
    # Still following: an Ingress edit after the reload applies.
    ing = api.get("Ingress", "apps", "p2")
    ing["spec"]["rules"].append({"host": "late.example", "http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "app1", "port": {"number": 8080}}}}]}})
    api.apply(ing)
    wait_until(lambda: pod_of("late.example") == "app1-pod", WAIT_S,
               f"late.example routes; stderr:\n{kube.errors()}")
    assert_alive(kube)


def test_status_api_shows_a_hostless_exact_route(kube, api):
    """An Ingress rule without a host and with an Exact path ("/", the apps' HTML page, which
    names the pod) routes that path of any host without routes of its own, and
    the admin's /api/status lists it (host null, exact true) rather than failing on it."""
    ing = api.get("Ingress", "apps", "p2")
    ing["spec"]["rules"].append({"http": {"paths": [
        {"path": "/", "pathType": "Exact",
         "backend": {"service": {"name": "app1", "port": {"number": 8080}}}}]}})
    api.apply(ing)
    wait_until(lambda: get("whatever.example", "/")[0] == 200 and
               b"app1-pod" in get("whatever.example", "/")[1], WAIT_S,
               f"the host-less Exact route; stderr:\n{kube.errors()}")
    assert pod_of("whatever.example") == "app3-pod"  # /api/info is not "/": the default
    assert pod_of("app2.com").startswith("app2-pod-")  # a host's own routes come first
    c = http.client.HTTPConnection(*ADMIN, timeout=3)
    try:
        c.request("GET", "/api/status")
        r = c.getresponse()
        status = json.loads(r.read())
    finally:
        c.close()
    assert r.status == 200
    hostless = [rt for rt in status["routes"] if rt["host"] is None]
    assert hostless == [{"host": None, "path": "/", "exact": True,
                         "service": "apps/app1:8080", "redirect_https": False}], status["routes"]
    assert {s["name"]: s["source"] for s in status["services"]}["apps/app1:8080"] == "kubernetes"
    assert_alive(kube)


def test_api_connections_have_tcp_keepalive(kube, api):
    """portier's connections to the API server (five watches, open for minutes) carry TCP keepalive
    (30 s idle, then probes), so an API server that vanished without a word is noticed in about a
    minute, not at the end of a watch's timeout. ss shows the kernel's keepalive timer on them."""
    api.wait_watches(5, WAIT_S)
    ss = shutil.which("ss") or "/usr/bin/ss"
    seen = {"out": ""}

    def all_keepalive() -> bool:
        # A connection with unacknowledged bytes in flight (a request just sent) shows the
        # retransmit timer instead ("timer:(on,...)"); the keepalive timer returns once it is
        # idle, so look again rather than judge one instant.
        out = subprocess.run([ss, "-tnoH", "state", "established", "dst", f"{API[0]}:{API[1]}"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        seen["out"] = out
        lines = [line for line in out.splitlines() if line.strip()]
        return len(lines) >= 5 and all("timer:(keepalive," in line for line in lines)

    deadline = time.monotonic() + WAIT_S
    while not all_keepalive():
        assert time.monotonic() < deadline, \
            f"not five idle watches, each with the keepalive timer:\n{seen['out']}"
        time.sleep(0.05)
