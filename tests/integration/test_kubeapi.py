"""The stand-in Kubernetes API server (kubeapi.py) against real clients, so that portier's tests
(test_kube.py) are tested against something that behaves like the real one.

Debian's kubectl 1.20 lists and watches through it with a kubeconfig of the shape a pod's
in-cluster config has (the server's URL, its CA file, a token file), and must see what a real
cluster would show; a raw HTTPS client checks the wire: chunk framing, BOOKMARKs, the 410 ERROR
event, status updates and their conflicts, selectors, RBAC, drops and restarts.

Addresses: the stand-in on 127.0.0.130:29301 (test_kube.py uses :29300). Every kubectl run is
bounded by a timeout and stopped by PID; every socket operation times out.
"""

import json
import socket
import ssl
import time

import pytest

import httpc
import kubeapi
import procs
from conftest import wait_until

API = ("127.0.0.130", 29301)
TOKEN = "token-a"
KUBECTL_TIMEOUT = 30.0
ING = "/apis/networking.k8s.io/v1"


@pytest.fixture(scope="module")
def rendered():
    """The repo's manifests as `kubectl kustomize k8s` renders them."""
    if not kubeapi.KUBECTL.exists():
        pytest.fail(f"{kubeapi.KUBECTL} is missing (scripts/deps.sh unpacks it)", pytrace=False)
    return kubeapi.render_manifests()


@pytest.fixture
def api(tmp_path, rendered):
    """The stand-in with the rendered Services, Ingress and IngressClass, app2's endpoints and
    the Secret apps-tls, enforcing the rendered ClusterRole portier; stopped at teardown."""
    s = kubeapi.ApiServer(API, tmp_path, tokens=[TOKEN],
                          rbac=kubeapi.cluster_role_rules(rendered), bookmark_interval=0.5)
    s.start()
    try:
        kubeapi.load_manifests(s, rendered)
        s.set_endpoints("apps", "app2", "http", 29342,
                        [("127.0.0.133", True), ("127.0.0.134", True), ("127.0.0.135", False)])
        crt, key = kubeapi.CertAuthority(tmp_path / "ingress-ca").issue(
            "apps", dns=["app1.com", "app2.com", "app3.com"])
        s.apply(kubeapi.tls_secret("apps", "apps-tls", crt, key))
        s.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opaque",
                                                                     "namespace": "apps"},
                 "stringData": {"x": "y"}})
        yield s
    finally:
        s.stop()


# --- kubectl ---------------------------------------------------------------------------------


def kubeconfig(api, tmp_path, token=TOKEN) -> dict:
    """The environment for kubectl: a kubeconfig whose user reads token from a file, a HOME and
    cache of the test's own."""
    tok = tmp_path / "token"
    tok.write_text(token)
    cfg = api.write_kubeconfig(tmp_path / "kubeconfig", tok, namespace="apps")
    return {"KUBECONFIG": str(cfg), "HOME": str(tmp_path)}


def kubectl_argv(tmp_path, *args):
    return [str(kubeapi.KUBECTL), "--cache-dir", str(tmp_path / "kcache"),
            "--request-timeout", "10s", *args]


def kubectl(api, tmp_path, *args, token=TOKEN) -> procs.Result:
    """kubectl ARGS to completion (killed, and failing, after KUBECTL_TIMEOUT)."""
    return procs.run(kubectl_argv(tmp_path, *args), env=kubeconfig(api, tmp_path, token),
                     timeout=KUBECTL_TIMEOUT, log_dir=str(tmp_path), name="kubectl")


def json_stream(text: str):
    """The JSON values kubectl printed one after another (-o json with --watch)."""
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        try:
            v, pos = dec.raw_decode(text, pos)
        except ValueError:
            return out  # a value still being written
        out.append(v)


def test_kubectl_gets_the_rendered_ingress(api, tmp_path, rendered):
    """`kubectl get ingresses -A -o json` shows the Ingress of k8s/ as rendered, with what the
    server adds (uid, resourceVersion, creationTimestamp, status)."""
    r = kubectl(api, tmp_path, "get", "ingresses", "-A", "-o", "json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [("apps", "p2")]
    want = kubeapi.find(rendered, "Ingress", "p2", "apps")
    got = items[0]
    assert got["kind"] == "Ingress" and got["apiVersion"] == "networking.k8s.io/v1"
    assert got["spec"] == want["spec"]
    md = got["metadata"]
    assert md["labels"] == want["metadata"]["labels"]
    assert md["uid"] and int(md["resourceVersion"]) > 0 and md["creationTimestamp"]
    assert got["status"] == {"loadBalancer": {}}
    # The list is what the server sent through the Table-less path (-o json asks for JSON).
    lists = [q for q in api.requests if q.path == f"{ING}/ingresses"]
    assert lists and lists[-1].query.get("limit") == "500"
    assert "as=Table" not in lists[-1].accept


def test_kubectl_gets_endpointslices(api, tmp_path):
    """`kubectl get endpointslices -n apps -o json`: app2's slice with its three endpoints, the
    not-ready one marked so."""
    r = kubectl(api, tmp_path, "get", "endpointslices", "-n", "apps", "-o", "json")
    assert r.returncode == 0, r.stderr
    (s,) = json.loads(r.stdout)["items"]
    assert s["metadata"]["labels"]["kubernetes.io/service-name"] == "app2"
    assert s["addressType"] == "IPv4"
    assert s["ports"] == [{"name": "http", "protocol": "TCP", "port": 29342}]
    assert [(e["addresses"], e["conditions"]["ready"]) for e in s["endpoints"]] == [
        (["127.0.0.133"], True), (["127.0.0.134"], True), (["127.0.0.135"], False)]
    assert s["metadata"]["ownerReferences"][0]["name"] == "app2"


def test_kubectl_prints_the_servers_tables(api, tmp_path):
    """Without -o, kubectl asks for a meta.k8s.io Table and prints its columns (-A adds
    NAMESPACE from each row's object metadata), as against a real server."""
    r = kubectl(api, tmp_path, "get", "ingresses", "-A")
    assert r.returncode == 0, r.stderr
    head, row = r.stdout.splitlines()[:2]
    assert head.split() == ["NAMESPACE", "NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert row.split()[:5] == ["apps", "p2", "portier", "app1.com,app2.com", "80,"]
    r = kubectl(api, tmp_path, "get", "endpointslices")
    assert r.returncode == 0, r.stderr
    head, row = r.stdout.splitlines()[:2]
    assert head.split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    name, *cells, _age = row.split()
    assert name.startswith("app2-")
    assert cells == ["IPv4", "29342", "127.0.0.133,127.0.0.134,127.0.0.135"]
    lists = [q for q in api.requests if q.path.endswith("/endpointslices")]
    assert "as=Table;v=v1;g=meta.k8s.io" in lists[-1].accept


def test_kubectl_without_tables_prints_name_and_age(tmp_path, rendered):
    """What kubectl does when a server ignores the Table in Accept and sends the plain list: it
    prints NAME and AGE only. The stand-in serves Tables, as the real server does, so that what
    kubectl shows (CLASS, HOSTS, ADDRESS...) is what a cluster would show."""
    s = kubeapi.ApiServer(API, tmp_path, tokens=[TOKEN], tables=False)
    with s:
        kubeapi.load_manifests(s, rendered)
        r = kubectl(s, tmp_path, "get", "ingresses", "-A")
    assert r.returncode == 0, r.stderr
    head, row = r.stdout.splitlines()
    assert head.split() == ["NAMESPACE", "NAME", "AGE"]
    assert row.split()[:2] == ["apps", "p2"]


def _edit_p2(api, host):
    ing = api.get("Ingress", "apps", "p2")
    ing["spec"]["rules"].append({"host": host, "http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "app1", "port": {"number": 8080}}}}]}})
    return api.apply(ing)


def test_kubectl_watch_sees_an_edit(api, tmp_path):
    """`kubectl get ingresses -A --watch -o json --output-watch-events`: the Ingress as an ADDED
    event, then, after an edit made once the watch is open, a MODIFIED with the edit."""
    p = procs.spawn(kubectl_argv(tmp_path, "get", "ingresses", "-A", "--watch", "-o", "json",
                                 "--output-watch-events"),
                    env=kubeconfig(api, tmp_path), log_dir=str(tmp_path), name="kubectl-watch")
    try:
        wait_until(lambda: any(e.get("type") == "ADDED" for e in json_stream(p.stdout())), 15,
                   "kubectl printed the Ingress")
        (w,) = api.wait_watches(1, timeout=10, kind="Ingress")
        assert w.request.query.get("watch") == "true"
        # kubectl watches from the list's resourceVersion (nothing changed since), so it gets
        # no synthetic ADDED from the server: the ADDED printed is kubectl's own, from the list.
        assert w.since == api.resource_version
        _edit_p2(api, "watched.example")
        wait_until(lambda: any(e.get("type") == "MODIFIED" and "watched.example" in json.dumps(e)
                               for e in json_stream(p.stdout())), 10,
                   f"kubectl printed the edit; it printed:\n{p.stdout()[-2000:]}\n{p.stderr()}")
    finally:
        procs.stop(p, check=False)


def test_kubectl_human_watch_prints_new_rows(api, tmp_path):
    """`kubectl get ingresses -A --watch` (Tables per event, headers with the first only, as the
    real server sends them): the row, then a row for the edit, one header line in all."""
    p = procs.spawn(kubectl_argv(tmp_path, "get", "ingresses", "-A", "--watch"),
                    env=kubeconfig(api, tmp_path), log_dir=str(tmp_path), name="kubectl-watch")
    try:
        wait_until(lambda: "p2" in p.stdout(), 15, "kubectl printed the Ingress")
        api.wait_watches(1, timeout=10, kind="Ingress")
        _edit_p2(api, "watched.example")
        wait_until(lambda: len([ln for ln in p.stdout().splitlines() if " p2 " in ln]) >= 2, 10,
                   f"kubectl printed the edit; it printed:\n{p.stdout()}\n{p.stderr()}")
        out = p.stdout()
        assert out.count("NAMESPACE") == 1, out
        assert "app1.com,app2.com,watched.example" in out, out
    finally:
        procs.stop(p, check=False)


def test_a_wrong_token_is_refused(api, tmp_path):
    """A token the server does not accept: kubectl exits non-zero naming Unauthorized; on the
    wire, 401 with a Status object. After set_tokens, the new token works and the old fails."""
    r = kubectl(api, tmp_path, "get", "ingresses", "-A", "-o", "json", token="wrong")
    assert r.returncode != 0
    assert "Unauthorized" in r.stderr, r.stderr
    with KubeConn(API, api, token="wrong") as c:
        resp = c.k("GET", f"{ING}/ingresses")
        assert resp.status == 401
        assert resp.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "message": "Unauthorized",
                               "reason": "Unauthorized", "code": 401}
    api.set_tokens(["token-b"])
    assert kubectl(api, tmp_path, "get", "ingresses", "-A", token="token-b").returncode == 0
    r = kubectl(api, tmp_path, "get", "ingresses", "-A", token=TOKEN)
    assert r.returncode != 0 and "Unauthorized" in r.stderr


# --- a raw client ------------------------------------------------------------------------------


class KubeConn(httpc.Conn):
    """One HTTPS connection to the stand-in, verified against its CA, with a bearer token."""

    def __init__(self, addr, api, token=TOKEN, timeout=5.0):
        super().__init__(addr, timeout=timeout)
        ctx = ssl.create_default_context(cafile=str(api.ca_file))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=addr[0])
        self.host = f"{addr[0]}:{addr[1]}"
        self.token = token

    def k(self, method, target, body=None, headers=(), ctype="application/json"):
        h = [("Authorization", f"Bearer {self.token}"), ("Accept", "application/json"),
             ("User-Agent", "kubeapi-test/1.0"), *headers]
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            h += [("Content-Type", ctype), ("Content-Length", str(len(data)))]
        return self.request(method, target, headers=h, body=data)

    def watch(self, target):
        """Sends a watch request and reads the head; chunk() reads the events."""
        self.send(httpc.req("GET", target, host=self.host, headers=[
            ("Authorization", f"Bearer {self.token}"), ("Accept", "application/json")]))
        return self.read_head()

    def chunk(self):
        """The next chunk's data (b"" for the final chunk, after which the trailer is read)."""
        eol = self._find(b"\r\n", 0)
        size = int(self.buf[:eol], 16)
        self._need(eol + 2 + size + 2)
        data = self.buf[eol + 2:eol + 2 + size]
        assert self.buf[eol + 2 + size:eol + 4 + size] == b"\r\n", self.buf[:200]
        self.buf = self.buf[eol + 4 + size:]
        if size == 0:
            self.buf = self.buf[2:] if self.buf.startswith(b"\r\n") else self.buf
        return data

    def event(self):
        """The next event: each chunk holds exactly one JSON line, as the real server writes."""
        data = self.chunk()
        if data == b"":
            return None
        assert data.endswith(b"\n") and data.count(b"\n") == 1, data
        return json.loads(data)


def test_watch_framing_bookmarks_and_timeout(api):
    """A watch from the current resourceVersion: 200, chunked, application/json; a live change
    as one chunk holding one JSON line; BOOKMARKs carrying only kind, apiVersion and the
    resourceVersion (Go's zero value otherwise); the final chunk after timeoutSeconds; the
    connection then serves the next request (keep-alive)."""
    rv = api.resource_version
    with KubeConn(API, api) as c:
        head = c.watch(f"{ING}/ingresses?allowWatchBookmarks=true&resourceVersion={rv}"
                       f"&timeoutSeconds=2&watch=1")
        assert head.status == 200
        assert head.header("Transfer-Encoding") == "chunked"
        assert head.header("Content-Type") == "application/json"
        assert head.header("Content-Length") is None
        api.wait_watches(1)
        _edit_p2(api, "live.example")
        ev = c.event()
        assert ev["type"] == "MODIFIED"
        assert ev["object"]["kind"] == "Ingress" and "live.example" in json.dumps(ev)
        assert int(ev["object"]["metadata"]["resourceVersion"]) == api.resource_version
        bookmarks, t0 = [], time.monotonic()
        while True:
            ev = c.event()
            if ev is None:
                break
            assert ev["type"] == "BOOKMARK", ev
            bookmarks.append(ev["object"])
        assert 1.0 < time.monotonic() - t0 < 4.0  # ended by timeoutSeconds=2, not by us
        assert bookmarks, "no BOOKMARK within 2 s at a 0.5 s interval"
        assert bookmarks[-1] == {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
                                 "metadata": {"resourceVersion": str(api.resource_version),
                                              "creationTimestamp": None},
                                 "spec": {}, "status": {"loadBalancer": {}}}
        r = c.k("GET", "/version")  # the same connection, after the final chunk
        assert r.status == 200 and r.json()["major"] == "1"


def test_watch_replays_history_and_filters_by_selector(api):
    """A watch from an older resourceVersion replays what happened since (in order, each event
    with its own resourceVersion); a labelSelector watch sees an object that leaves the
    selection as DELETED; resourceVersion 0 starts with a synthetic ADDED per object."""
    rv0 = api.resource_version
    api.set_endpoints("apps", "app1", "http", 29341, [("127.0.0.132", True)])
    api.set_endpoints("apps", "app2", "http", 29342, [("127.0.0.133", True)])
    api.delete("Secret", "apps", "opaque")
    ep = "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices"
    with KubeConn(API, api) as c:
        c.watch(f"{ep}?resourceVersion={rv0}&watch=true&labelSelector="
                f"kubernetes.io/service-name%3Dapp2&timeoutSeconds=1")
        ev = c.event()
        assert ev["type"] == "MODIFIED" and ev["object"]["endpoints"][0]["addresses"] == [
            "127.0.0.133"] and len(ev["object"]["endpoints"]) == 1
        assert int(ev["object"]["metadata"]["resourceVersion"]) > rv0
        assert c.event() is None  # app1's slice is not selected; the stream ends after 1 s
    with KubeConn(API, api) as c:
        c.watch(f"{ep}?resourceVersion=0&watch=true&timeoutSeconds=1")
        names = [c.event()["object"]["metadata"]["name"] for _ in range(2)]
        assert sorted(n.split("-")[0] for n in names) == ["app1", "app2"]
    with KubeConn(API, api) as c:
        rv = api.resource_version
        c.watch(f"{ep}?resourceVersion={rv}&watch=1&labelSelector=tier%3Dfront")
        api.wait_watches(1)
        s = api.list("EndpointSlice", "apps")[0]
        s["metadata"]["labels"]["tier"] = "front"
        api.apply(s)
        assert c.event()["type"] == "ADDED"
        del s["metadata"]["labels"]["tier"]
        api.apply(s)
        ev = c.event()
        assert ev["type"] == "DELETED" and "tier" not in ev["object"]["metadata"]["labels"]


def test_watch_from_a_compacted_version_gets_410(api):
    """After compact(), a watch from a resourceVersion before the compaction gets what the real
    server sends: 200, one ERROR event with the Status 410 Expired, the end of the stream."""
    old = api.resource_version
    api.compact()
    with KubeConn(API, api) as c:
        head = c.watch(f"{ING}/ingresses?allowWatchBookmarks=true&resourceVersion={old}"
                       f"&watch=true")
        assert head.status == 200
        ev = c.event()
        assert ev == {"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"too old resource version: {old} ({api.resource_version})",
            "reason": "Expired", "code": 410}}
        assert c.event() is None
        # The client re-lists, then watches from the list's version: no error.
        lst = c.k("GET", f"{ING}/ingresses").json()
        c.watch(f"{ING}/ingresses?resourceVersion={lst['metadata']['resourceVersion']}"
                f"&watch=true&timeoutSeconds=1")
        assert c.event() is None
    expired = [q for q in api.requests if q.expired]
    assert len(expired) == 1 and expired[0].query["resourceVersion"] == str(old)


def test_drop_watches_resets_without_the_final_chunk(api):
    """drop_watches(): the client's stream breaks (a reset, or EOF) with no final chunk, as
    when a connection or the server dies; a FIN variant too."""
    for rst in (True, False):
        with KubeConn(API, api) as c:
            c.watch(f"{ING}/ingresses?resourceVersion={api.resource_version}&watch=true")
            api.wait_watches(1)
            api.drop_watches(rst=rst)
            with pytest.raises((httpc.Closed, ConnectionResetError, ssl.SSLError)):
                c.event()
        assert api.open_watches() == []


def test_status_put_conflicts_and_subresource_rules(api):
    """PUT .../ingresses/p2/status: a stale resourceVersion is 409 Conflict; the current one
    replaces status only (a spec change in the body is ignored), bumps the version and reaches a
    watch as MODIFIED; the same status again writes nothing. PATCH is refused by the rendered
    ClusterRole (it grants update), as a real cluster would (403)."""
    path = f"{ING}/namespaces/apps/ingresses/p2/status"
    with KubeConn(API, api) as c, KubeConn(API, api) as w:
        ing = c.k("GET", f"{ING}/namespaces/apps/ingresses/p2").json()
        stale = json.loads(json.dumps(ing))
        _edit_p2(api, "moved.example")
        w.watch(f"{ING}/ingresses?resourceVersion={api.resource_version}&watch=true")
        api.wait_watches(1)

        stale["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.56.110"}]}}
        r = c.k("PUT", path, stale)
        assert r.status == 409
        assert r.json()["reason"] == "Conflict" and r.json()["code"] == 409
        assert "the object has been modified" in r.json()["message"]

        cur = c.k("GET", f"{ING}/namespaces/apps/ingresses/p2").json()
        cur["status"] = stale["status"]
        cur["spec"]["rules"] = []  # ignored by the status subresource
        r = c.k("PUT", path, cur)
        assert r.status == 200, r
        out = r.json()
        assert out["status"] == stale["status"]
        assert "moved.example" in json.dumps(out["spec"])
        assert int(out["metadata"]["resourceVersion"]) == api.resource_version
        ev = w.event()
        assert ev["type"] == "MODIFIED" and ev["object"]["status"] == stale["status"]
        assert any(m.get("subresource") == "status" and m["manager"] == "kubeapi-test"
                   for m in ev["object"]["metadata"]["managedFields"])

        rv = api.resource_version
        again = c.k("PUT", path, out)
        assert again.status == 200 and api.resource_version == rv  # nothing changed

        r = c.k("PATCH", path, {"status": {}}, ctype="application/merge-patch+json")
        assert r.status == 403 and r.json()["reason"] == "Forbidden", r
        assert 'cannot patch resource "ingresses/status"' in r.json()["message"]
        assert c.k("PUT", f"{ING}/namespaces/apps/ingresses/p2", out).status == 403


def test_lists_selectors_and_errors(api):
    """LIST by namespace, labelSelector and fieldSelector type=kubernetes.io/tls as portier asks;
    items without kind/apiVersion, as the real server writes them; a body over 2048 bytes
    chunked, a short one with Content-Length; unknown paths and objects as the real 404s."""
    with KubeConn(API, api) as c:
        r = c.k("GET", "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls")
        lst = r.json()
        assert lst["kind"] == "SecretList" and lst["apiVersion"] == "v1"
        assert [i["metadata"]["name"] for i in lst["items"]] == ["apps-tls"]
        assert "kind" not in lst["items"][0] and "apiVersion" not in lst["items"][0]
        assert set(lst["items"][0]["data"]) == {"tls.crt", "tls.key"}
        r = c.k("GET", f"{ING}/ingresses")
        assert len(r.body) > 2048 and r.framing == "chunked"

        r = c.k("GET", "/apis/discovery.k8s.io/v1/endpointslices?labelSelector="
                       "kubernetes.io%2Fservice-name%3Dapp2,app.kubernetes.io%2Fname%3Dapp2")
        assert [i["metadata"]["labels"]["kubernetes.io/service-name"]
                for i in r.json()["items"]] == ["app2"]
        r = c.k("GET", "/api/v1/namespaces/other/services")
        assert r.json()["items"] == [] and r.framing == "length"
        assert c.k("GET", "/api/v1/services").json()["metadata"]["resourceVersion"] == str(
            api.resource_version)

        r = c.k("GET", "/api/v1/secrets?fieldSelector=spec.x%3Dy")
        assert r.status == 400 and r.json()["reason"] == "BadRequest"
        r = c.k("GET", "/api/v1/namespaces/apps/services/nope")
        assert r.status == 404 and r.json()["message"] == 'services "nope" not found'
        r = c.k("GET", f"{ING}/namespaces/apps/ingresses/nope")
        assert r.json()["details"] == {"name": "nope", "group": "networking.k8s.io",
                                       "kind": "ingresses"}
        r = c.k("GET", "/api/v1/pods")
        assert r.status == 404 and r.body == b"404 page not found\n"

        api.set_endpoints("apps", "app1", "http", 29341, [("127.0.0.132", True)])
        r = c.k("GET", "/apis/discovery.k8s.io/v1/endpointslices?limit=1")
        page = r.json()
        assert len(page["items"]) == 1 and page["metadata"]["continue"]
        nxt = c.k("GET", "/apis/discovery.k8s.io/v1/endpointslices?limit=1&continue="
                  + page["metadata"]["continue"]).json()
        assert "continue" not in nxt["metadata"]


def test_stop_and_start_keep_objects_ca_and_versions(api, tmp_path):
    """stop() closes everything (connections refused after it); start() serves the same
    objects and resourceVersion with the same CA, so a client resumes where it was."""
    rv = api.resource_version
    c = KubeConn(API, api)
    try:
        c.watch(f"{ING}/ingresses?resourceVersion={rv}&watch=true")
        api.wait_watches(1)
        api.stop()
        with pytest.raises((httpc.Closed, ConnectionResetError, ssl.SSLError)):
            c.event()
    finally:
        c.close()
    with pytest.raises(OSError):
        socket.create_connection(API, timeout=1).close()
    api.start()
    assert api.resource_version == rv
    with KubeConn(API, api) as c:
        c.watch(f"{ING}/ingresses?resourceVersion={rv}&watch=true&timeoutSeconds=1")
        _edit_p2(api, "after.example")
        assert c.event()["type"] == "MODIFIED"
    r = kubectl(api, tmp_path, "get", "ingress", "p2", "-o", "json")
    assert r.returncode == 0 and "after.example" in r.stdout


def test_idle_keepalive_connection_serves_many_requests(api):
    """HTTP/1.1 keep-alive: one connection, requests one after another, the request log records
    each with its token."""
    with KubeConn(API, api) as c:
        for _ in range(5):
            assert c.k("GET", "/api").status == 200
    assert [q.token for q in api.requests if q.path == "/api"] == [TOKEN] * 5


def test_the_rendered_manifests_have_what_test_kube_assumes(rendered):
    """The shape test_kube.py relies on (README of the brief): IngressClass portier, the default,
    controller portier.dev/ingress-controller; Ingress apps/p2 of that class with app1.com and
    app2.com, default backend app3, tls for the three names in apps-tls; headless Services with
    port 8080 named http."""
    ic = kubeapi.find(rendered, "IngressClass", "portier")
    assert ic["spec"]["controller"] == "portier.dev/ingress-controller"
    assert ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    ing = kubeapi.find(rendered, "Ingress", "p2", "apps")
    spec = ing["spec"]
    assert spec["ingressClassName"] == "portier"
    assert [(r["host"], r["http"]["paths"][0]["backend"]["service"]["name"])
            for r in spec["rules"]] == [("app1.com", "app1"), ("app2.com", "app2")]
    assert spec["defaultBackend"]["service"] == {"name": "app3", "port": {"number": 8080}}
    assert spec["tls"] == [{"hosts": ["app1.com", "app2.com", "app3.com"],
                            "secretName": "apps-tls"}]
    for app in ("app1", "app2", "app3"):
        svc = kubeapi.find(rendered, "Service", app, "apps")
        assert svc["spec"]["clusterIP"] == "None"
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8080)]
