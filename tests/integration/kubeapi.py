"""A stand-in Kubernetes API server for black-box tests: HTTPS on loopback, in this process.

No real API server can run here, so the tests of portier's Kubernetes provider talk to this one. It
serves what portier reads (core/v1 Services and Secrets, networking.k8s.io/v1 Ingresses and
IngressClasses, discovery.k8s.io/v1 EndpointSlices) and what Debian's kubectl 1.20 needs to list
and watch them, the way the real one does on the wire (test_kubeapi.py keeps it honest with
kubectl and a raw client):

- HTTPS with a CA of its own made with the `openssl` command (ca_file), HTTP/1.1 with keep-alive;
  responses up to 2048 bytes carry a Content-Length, longer ones are chunked (as Go's net/http
  decides), each watch event is one line in a chunk of its own.
- Bearer tokens (set_tokens), 401 Status otherwise; optional RBAC from a ClusterRole's rules (403
  Status for what they do not grant, as the real authorizer answers).
- LIST (labelSelector, fieldSelector, limit/continue, the meta.k8s.io Table kubectl asks for),
  GET, WATCH (replay from a history after a resourceVersion, live events, BOOKMARKs, timeoutSeconds,
  410 Expired as an ERROR event after compact()), PUT and merge PATCH of ingresses/status.
- One global resourceVersion, as etcd's revision, bumped by every change; objects keep their uid
  and creationTimestamp (a test may give one, to order Ingresses by age), get managedFields, and
  are encoded as Go encodes them (compact, keys in struct order, <, > and & escaped).

The test side is the control API (thread-safe): apply, delete, get, set_endpoints, set_tokens,
compact, drop_watches, stop/start (same address, objects, CA and request log), wait_watches, and
the request log (requests) to assert on what a client asked. Differences from the real server that
a test could meet are listed in DIFFERENCES below.

    api = ApiServer(("127.0.0.130", 29300), tmp_path)
    api.start()
    try:
        load_manifests(api, render_manifests())
        api.set_endpoints("apps", "app2", "http", 29342, [("127.0.0.133", True)])
        ...
    finally:
        api.stop()
"""

import base64
import copy
import datetime
import email.utils
import hashlib
import json
import os
import re
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / "build/tools/kubernetes-client/usr/bin/kubectl"

# What the server says it is (/version): k3s, as on the VM (a preStop sleep needs 1.30).
VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.6+k3s1",
    "gitCommit": "1829eaae5250b78e4e4a6f8ff3ca4a8f1d4d6c52",
    "gitTreeState": "clean",
    "buildDate": "2024-10-22T21:35:40Z",
    "goVersion": "go1.22.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Where the stand-in knowingly differs from a real API server (the report and the docs cite this).
DIFFERENCES = """\
- HTTP/1.1 only (ALPN offers http/1.1): no HTTP/2, no protobuf, no gzip (the real one gzips
  responses over 128 KiB when asked).
- A request without a token gets 401 (a real server with anonymous auth would see
  system:anonymous and answer 403).
- LIST ignores resourceVersion/resourceVersionMatch and always answers the current state; a
  continue token pages through the current state, not a snapshot at the first page's version.
- No admission, validation or defaulting beyond a few defaults (Service ports' protocol and
  targetPort, status.loadBalancer {}), no namespaces to exist, no finalizers, no
  deletionTimestamp, no POST/DELETE over HTTP (the control API changes objects).
- Watches by name (fieldSelector metadata.name=x) work; the legacy /watch/ paths do not.
- The history of events (for watch replay) is unbounded until compact() forgets it; the real
  watch cache keeps a window of a few minutes / 100+ events and then answers 410 by itself.
"""

GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
              "\u2029": "\\u2029"}


def encode(obj) -> bytes:
    """JSON as Go's encoding/json writes it: compact, with <, >, & (and U+2028/9) escaped. These
    characters can only occur inside strings in JSON, so a plain replacement is exact."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in GO_ESCAPES.items():
        text = text.replace(ch, esc)
    return text.encode("utf-8")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str) -> datetime.datetime:
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery's duration.HumanDuration: the AGE column of kubectl."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return f"{h // 24 // 365}y" if dy == 0 else f"{h // 24 // 365}y{dy}d"
    return f"{h // 24 // 365}y"


# --- resources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    short_names: Tuple[str, ...] = ()
    categories: Tuple[str, ...] = ()
    status: bool = False  # has a status subresource
    generation: bool = False  # metadata.generation counts spec changes

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def qualified(self) -> str:
        """"ingresses.networking.k8s.io", "services": as the real server's messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: Dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource("Service", "", "v1", "services", True, ("svc",), ("all",), status=True),
        Resource("Secret", "", "v1", "secrets", True),
        Resource("Ingress", "networking.k8s.io", "v1", "ingresses", True, ("ing",),
                 status=True, generation=True),
        Resource("IngressClass", "networking.k8s.io", "v1", "ingressclasses", False,
                 generation=True),
        Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True,
                 generation=True),
    )
}
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES.values()}
SERVED_KINDS = tuple(RESOURCES)

# What the real server lists for each group (discovery); only the groups served here.
GROUPS = ["networking.k8s.io", "discovery.k8s.io"]
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


# --- errors as the real server writes them ------------------------------------------------------


def status_obj(code: int, reason: str, message: str, details: Optional[dict] = None) -> dict:
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason}
    if details:
        s["details"] = details
    s["code"] = code
    return s


def details_for(res: Resource, name: str) -> dict:
    d = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    return d


class ApiError(Exception):
    """An answer other than 200: a Status object (or, with text, the mux's plain 404)."""

    def __init__(self, code: int, reason: str = "", message: str = "", details=None,
                 text: Optional[str] = None):
        super().__init__(message or text)
        self.code, self.reason, self.message, self.details, self.text = (
            code, reason, message, details, text)


def not_found_page() -> ApiError:
    return ApiError(404, text="404 page not found\n")


# --- selectors -------------------------------------------------------------------------------

_REQ = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nk>[A-Za-z0-9._/-]+)"
    r"|(?P<k>[A-Za-z0-9._/-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<v>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\)"
    r"|))\s*(?:,|$)")


def parse_label_selector(text: str) -> List[tuple]:
    """labelSelector to [(key, op, values)]; op in =, !=, in, notin, exists, !exists. A malformed
    selector is the 400 the real server answers."""
    reqs: List[tuple] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _REQ.match(text, pos)
        if not m or m.end() == pos:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {text!r}")
        if m.group("nk"):
            reqs.append((m.group("nk"), "!exists", ()))
        elif m.group("op"):
            reqs.append((m.group("k"), "!=" if m.group("op") == "!=" else "=", (m.group("v"),)))
        elif m.group("setop"):
            vals = tuple(v.strip() for v in m.group("set").split(",") if v.strip())
            reqs.append((m.group("k"), m.group("setop"), vals))
        else:
            reqs.append((m.group("k"), "exists", ()))
        pos = m.end()
    return reqs


def labels_match(reqs: Sequence[tuple], labels: Optional[dict]) -> bool:
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        ok = {
            "=": has and v == vals[0],
            "!=": not has or v != vals[0],
            "in": has and v in vals,
            "notin": not has or v not in vals,
            "exists": has,
            "!exists": not has,
        }[op]
        if not ok:
            return False
    return True


def parse_field_selector(text: str, res: Resource) -> List[tuple]:
    """fieldSelector to [(field, op, value)]; only the fields the real server supports for these
    kinds (metadata.name, metadata.namespace; type for Secrets)."""
    reqs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: '{text}'; can't understand "
                           f"'{part}'")
        fld, op, val = m.groups()
        allowed = {"metadata.name", "metadata.namespace"} | ({"type"} if res.kind == "Secret"
                                                             else set())
        if fld not in allowed:
            raise ApiError(400, "BadRequest", f'"{fld}" is not a known field selector: only '
                           f'"metadata.name", "metadata.namespace"')
        reqs.append((fld, "!=" if op == "!=" else "=", val))
    return reqs


def field_value(obj: dict, fld: str) -> str:
    if fld == "type":
        return obj.get("type", "")
    return (obj.get("metadata") or {}).get(fld.split(".", 1)[1], "")


def fields_match(reqs: Sequence[tuple], obj: dict) -> bool:
    return all((field_value(obj, f) == v) == (op == "=") for f, op, v in reqs)


# --- tables (what `kubectl get` prints, converted by the server) ---------------------------------

NAME_COL = {"name": "Name", "type": "string", "format": "name",
            "description": "Name must be unique within a namespace.", "priority": 0}
AGE_COL = {"name": "Age", "type": "string", "format": "",
           "description": "CreationTimestamp is a timestamp representing the server time when "
                          "this object was created.", "priority": 0}


def _col(name, desc, priority=0, type_="string"):
    return {"name": name, "type": type_, "format": "", "description": desc,
            "priority": priority}


def _age(obj) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.timezone.utc)
                           - parse_rfc3339(ts)).total_seconds())


def _first3(items: List[str], empty: str) -> str:
    if not items:
        return empty
    s = ",".join(items[:3])
    return s + (f" + {len(items) - 3} more..." if len(items) > 3 else "")


def _ingress_cells(o):
    spec, st = o.get("spec") or {}, o.get("status") or {}
    rules = spec.get("rules") or []
    hosts = [r["host"] for r in rules if r.get("host")][:3]
    more = len(rules) - 3 if len(rules) > 3 else 0
    lb = [i.get("ip") or i.get("hostname", "") for i in
          ((st.get("loadBalancer") or {}).get("ingress") or [])]
    return [spec.get("ingressClassName") or "<none>",
            (",".join(hosts) or "*") + (f" + {more} more..." if more else ""),
            ",".join(lb), "80, 443" if spec.get("tls") else "80"]


def _slice_cells(o):
    ports = [str(p.get("port")) if p.get("port") is not None else "<unset>"
             for p in (o.get("ports") or [])]
    addrs = [a for e in (o.get("endpoints") or []) for a in (e.get("addresses") or [])]
    return [o.get("addressType", ""), _first3(ports, "<unset>"), _first3(addrs, "<unset>")]


def _service_cells(o):
    spec = o.get("spec") or {}
    ports = [f"{p['port']}/{p.get('protocol', 'TCP')}" for p in (spec.get("ports") or [])]
    sel = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", "<none>",
            ",".join(ports) or "<none>", sel or "<none>"]


# kind -> (columns between Name and Age, cells(obj), wide columns after Age (indexes into cells))
TABLES: Dict[str, tuple] = {
    "Ingress": ([_col("Class", "The name of the IngressClass resource that should be used for "
                               "additional configuration"),
                 _col("Hosts", "Hosts that incoming requests are matched against before the "
                               "ingress rule"),
                 _col("Address", "Address is a list containing ingress points for the "
                                 "load-balancer"),
                 _col("Ports", "Ports of TLS configurations that open")], _ingress_cells, []),
    "EndpointSlice": ([_col("AddressType", "The IP protocol for this slice"),
                       _col("Ports", "The ports contained in this endpoint slice"),
                       _col("Endpoints", "Endpoints contained in this endpoint slice")],
                      _slice_cells, []),
    "Service": ([_col("Type", "The type of the service"),
                 _col("Cluster-IP", "The cluster IP of the service"),
                 _col("External-IP", "The external IP of the service"),
                 _col("Port(s)", "The ports of the service")],
                lambda o: _service_cells(o)[:4],
                [(_col("Selector", "The selector of the service", 1),
                  lambda o: _service_cells(o)[4])]),
    "Secret": ([_col("Type", "The type of the secret"),
                _col("Data", "The number of data entries in the secret", type_="integer")],
               lambda o: [o.get("type", ""), len(o.get("data") or {})], []),
    "IngressClass": ([_col("Controller", "Controller that is responsible for handling this "
                                         "class"),
                      _col("Parameters", "A reference to a resource with additional "
                                         "parameters")],
                     lambda o: [(o.get("spec") or {}).get("controller", ""), "<none>"], []),
}


def table_for(res: Resource, objs: List[dict], rv: str, table_version: str, include: str,
              headers: bool = True, list_meta: Optional[dict] = None) -> dict:
    """A meta.k8s.io Table of objs, as the server converts a LIST (or one watch event) for
    `kubectl get`: rows of cells, each with the object's metadata (includeObject=Metadata, the
    default), the whole object (Object) or nothing (None)."""
    mid, cells, wide = TABLES[res.kind]
    rows = []
    for o in objs:
        row = {"cells": [o["metadata"]["name"], *cells(o), _age(o), *(f(o) for _, f in wide)]}
        if include == "Object":
            row["object"] = with_type(res, o)
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata",
                             "apiVersion": f"meta.k8s.io/{table_version}",
                             "metadata": o["metadata"]}
        rows.append(row)
    t = {"kind": "Table", "apiVersion": f"meta.k8s.io/{table_version}",
         "metadata": list_meta or {"resourceVersion": rv}}
    if headers:
        t["columnDefinitions"] = [NAME_COL, *mid, AGE_COL, *(c for c, _ in wide)]
    t["rows"] = rows
    return t


def wants_table(accept: str) -> Optional[str]:
    """The Table version (v1, v1beta1) the Accept header asks for first, or None for plain JSON.
    Raises the 406 the real server answers when nothing acceptable is offered."""
    if not accept:
        return None
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        mtype, params = bits[0].lower(), dict(
            b.split("=", 1) for b in bits[1:] if "=" in b)
        if mtype not in ("application/json", "application/*", "*/*"):
            continue
        if params.get("as") == "Table":
            if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                return params["v"]
            continue
        if "as" in params:
            continue  # PartialObjectMetadata(List): not served here
        return None
    raise ApiError(406, "NotAcceptable",
                   "only the following media types are accepted: application/json, "
                   "application/yaml, application/vnd.kubernetes.protobuf")


# --- objects -----------------------------------------------------------------------------------

META_ORDER = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
              "generation", "creationTimestamp", "deletionTimestamp",
              "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
              "finalizers", "managedFields"]
# Top-level keys in Go struct order per kind (what is not listed follows in its own order).
TOP_ORDER = {
    "EndpointSlice": ["kind", "apiVersion", "metadata", "addressType", "endpoints", "ports"],
    "Secret": ["kind", "apiVersion", "metadata", "immutable", "data", "type"],
}


def ordered(kind: str, obj: dict) -> dict:
    """obj with its keys (and metadata's) in the order Go's encoder writes them."""
    order = TOP_ORDER.get(kind, ["kind", "apiVersion", "metadata", "spec", "status"])
    out = {k: obj[k] for k in order if k in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    md = out.get("metadata")
    if isinstance(md, dict):
        m = {k: md[k] for k in META_ORDER if k in md}
        m.update((k, v) for k, v in md.items() if k not in m)
        out["metadata"] = m
    return out


def with_type(res: Resource, obj: dict) -> dict:
    """The object as a GET or a watch event has it: kind and apiVersion first."""
    o = {"kind": res.kind, "apiVersion": res.api_version}
    o.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion"))
    return ordered(res.kind, o)


def without_type(res: Resource, obj: dict) -> dict:
    """The object as a list item has it: the real server writes no kind or apiVersion there."""
    return ordered(res.kind, {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})


def fields_v1(value, top=True):
    """A managedFields fieldsV1 set for value: maps as "f:key" (with "." for an owned map),
    anything else (lists included, as atomic lists are) as {}."""
    if not isinstance(value, dict):
        return {}
    out = {} if top else {".": {}}
    for k, v in value.items():
        out["f:" + k] = fields_v1(v, False)
    return out


def normalize(res: Resource, obj: dict) -> None:
    """The defaults and encodings the real server applies that a client can see."""
    if res.kind == "Service":
        spec = obj.setdefault("spec", {})
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec.get("clusterIP") == "None":
            spec.setdefault("clusterIPs", ["None"])
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif res.kind == "Ingress":
        obj.setdefault("spec", {})
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif res.kind == "Secret":
        # stringData is write-only: the server merges it into data (base64) and drops it.
        for k, v in (obj.pop("stringData", None) or {}).items():
            obj.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
        obj.setdefault("type", "Opaque")
    elif res.kind == "EndpointSlice":
        # Go's []Endpoint and []EndpointPort without omitempty: empty is null on the wire.
        for k in ("endpoints", "ports"):
            if not obj.get(k):
                obj[k] = None


def bookmark_object(res: Resource, rv: int) -> dict:
    """A BOOKMARK's object: the kind's zero value but for the resourceVersion, as Go encodes it
    (creationTimestamp null, empty spec/status, nil slices null)."""
    o = {"kind": res.kind, "apiVersion": res.api_version,
         "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}
    if res.kind in ("Ingress", "Service"):
        o["spec"] = {}
        o["status"] = {"loadBalancer": {}}
    elif res.kind == "IngressClass":
        o["spec"] = {}
    elif res.kind == "EndpointSlice":
        o.update(addressType="", endpoints=None, ports=None)
    return o


def _content(obj: dict) -> dict:
    """What an update compares to see whether anything changed (the real server writes nothing,
    and bumps nothing, for an update that changes nothing)."""
    o = copy.deepcopy(obj)
    md = o.get("metadata", {})
    for k in ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp"):
        md.pop(k, None)
    return o


# --- the wire ----------------------------------------------------------------------------------

REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           406: "Not Acceptable", 409: "Conflict", 410: "Gone", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 500: "Internal Server Error", 504: "Gateway Timeout"}
CHUNK_AFTER = 2048  # Go's net/http: a longer body whose length was not set goes chunked


class _Closed(Exception):
    pass


@dataclass
class HttpRequest:
    method: str
    target: str
    version: str
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default


class _Conn:
    """One client connection: its socket (TLS) and a read buffer; requests in, responses out."""

    MAX_HEAD = 1 << 16

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.dropped = False  # drop_watches() or stop() closed it under the handler

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise _Closed()
        self.buf += data

    def read_request(self) -> Optional[HttpRequest]:
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > self.MAX_HEAD:
                raise ValueError("request head too long")
            try:
                self._fill()
            except _Closed:
                if self.buf.strip():
                    raise ValueError("connection closed mid-request")
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # CRLF between requests is tolerated (RFC 9112 2.2)
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError(f"bad request line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep or not k or k != k.strip():
                raise ValueError(f"bad header line {line!r}")
            headers.append((k, v.strip()))
        req = HttpRequest(parts[0], parts[1], parts[2], headers, b"")
        te = req.header("Transfer-Encoding").lower()
        if te:
            if te != "chunked":
                raise ValueError(f"transfer-encoding {te!r}")
            req.body = self._read_chunked()
        elif req.header("Content-Length"):
            n = int(req.header("Content-Length"))
            while len(self.buf) < n:
                self._fill()
            req.body, self.buf = self.buf[:n], self.buf[n:]
        return req

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_line().split(b";")[0], 16)
            if size == 0:
                while self._read_line():
                    pass  # trailers
                return body
            while len(self.buf) < size + 2:
                self._fill()
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]

    def send_head(self, code: int, headers: List[Tuple[str, str]]):
        lines = [f"HTTP/1.1 {code} {REASONS.get(code, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append("Date: " + email.utils.formatdate(usegmt=True))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send_chunk(self, data: bytes):
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def send_end(self):
        self.sock.sendall(b"0\r\n\r\n")

    def send(self, code: int, body: bytes, ctype: str, extra=()):
        """A whole response: Content-Length up to CHUNK_AFTER bytes, chunked above it."""
        headers = [("Audit-Id", str(uuid.uuid4())), ("Cache-Control", "no-cache, private"),
                   ("Content-Type", ctype), *extra]
        if len(body) <= CHUNK_AFTER:
            self.send_head(code, headers + [("Content-Length", str(len(body)))])
            self.sock.sendall(body)
            return
        self.send_head(code, headers + [("Transfer-Encoding", "chunked")])
        for i in range(0, len(body), CHUNK_AFTER):
            self.send_chunk(body[i:i + CHUNK_AFTER])
        self.send_end()

    def peer_gone(self) -> bool:
        """Whether the client closed its side, or sent anything (a client waiting on a watch
        stream only writes when it is going away: a close_notify alert, then its FIN)."""
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
            return bool(r)
        except (OSError, ValueError):
            return True

    def abort(self, rst: bool = True, wake: bool = True):
        """Ends the connection without a word, as a crash or a broken network does: with rst,
        SO_LINGER 0 makes the close an RST; with wake, shutdown() also wakes a thread blocked on
        the socket (and sends a FIN first). The thread serving it closes the socket."""
        self.dropped = True
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            if wake:
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


# --- the request log and the watches ----------------------------------------------------------


@dataclass
class Request:
    """One request as the server saw it, for assertions."""

    method: str
    path: str
    query: Dict[str, str]
    token: Optional[str]
    time: float  # time.monotonic() at arrival
    wall: float  # time.time() at arrival
    accept: str = ""
    user_agent: str = ""
    body: bytes = b""
    status: int = 0  # the response's status code (200 for a watch, whatever its events)
    expired: bool = False  # a watch answered with the 410 ERROR event

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true", "True")

    def __repr__(self):
        q = urllib.parse.urlencode(self.query)
        tok = (self.token or "-")[:12]
        return f"<{self.method} {self.path}{'?' + q if q else ''} {self.status} token={tok}>"


@dataclass(eq=False)
class Watch:
    """An open watch stream and the events waiting to be written to it."""

    res: Resource
    namespace: Optional[str]
    labels: list
    fields: list
    since: int  # the resourceVersion it started from
    bookmarks: bool
    table: Optional[str]  # Table version, or None for plain objects
    include: str
    conn: _Conn
    request: Request
    started: float = field(default_factory=time.monotonic)
    queue: list = field(default_factory=list)  # (type, object) ready to send
    dropped: bool = False
    sent_headers: bool = False  # Table: the column definitions go with the first event only

    def matches(self, obj: Optional[dict]) -> bool:
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if self.namespace is not None and md.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, md.get("labels")) and fields_match(self.fields, obj)

    def translate(self, etype: str, new: dict, old: Optional[dict]) -> Optional[tuple]:
        """An event as this watch sees it through its selectors: an object that leaves the
        selection is DELETED, one that enters it ADDED (the real server's filtering)."""
        now_in = self.matches(new)
        was_in = self.matches(old) if old is not None else (etype != "ADDED" and now_in)
        if etype == "DELETED":
            return ("DELETED", new) if now_in else None
        if now_in and was_in:
            return ("MODIFIED", new) if etype != "ADDED" else ("ADDED", new)
        if now_in:
            return ("ADDED", new)
        if was_in:
            return ("DELETED", new)
        return None


@dataclass
class Event:
    rv: int
    type: str
    kind: str
    obj: dict  # the object after (for DELETED: as it was, with the deletion's resourceVersion)
    old: Optional[dict]


# --- certificates ----------------------------------------------------------------------------


def openssl(*args, cwd=None, timeout=30):
    r = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))}: {r.stderr}")
    return r.stdout


class CertAuthority:
    """A CA made with the openssl command in directory (ECDSA P-256), kept if already there;
    issue() signs server certificates for names and IP addresses."""

    def __init__(self, directory, cn: str = "kubeapi stand-in CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.crt = self.dir / "ca.crt"
        self.key = self.dir / "ca.key"
        if not (self.crt.exists() and self.key.exists()):
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", self.key, "-out", self.crt, "-days", "3650",
                    "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-addext", "subjectKeyIdentifier=hash")

    def issue(self, name: str, dns: Iterable[str] = (), ips: Iterable[str] = (),
              cn: Optional[str] = None, days: int = 30) -> Tuple[Path, Path]:
        """Signs a server certificate <name>.crt (key <name>.key) for dns names and ips; returns
        both paths. cn defaults to name (tests tell certificates apart by it)."""
        crt, key, csr, ext = (self.dir / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "authorityKeyIdentifier=keyid\n"
            f"subjectAltName={','.join(sans)}\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={cn or name}")
        openssl("x509", "-req", "-in", csr, "-CA", self.crt, "-CAkey", self.key,
                "-set_serial", "0x" + os.urandom(8).hex(), "-days", str(days),
                "-extfile", ext, "-out", crt)
        os.chmod(key, 0o600)
        return crt, key


def tls_secret(namespace: str, name: str, crt: Path, key: Path) -> dict:
    """A kubernetes.io/tls Secret of a certificate and key (files), as
    `kubectl create secret tls` makes it."""
    b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": b64(crt), "tls.key": b64(key)}}


# --- the server -------------------------------------------------------------------------------


class ApiServer:
    """The stand-in API server on addr (ip, port), its files (CA, server certificate) in tmpdir.

    tokens: the bearer tokens accepted (set_tokens changes them). rbac: a ClusterRole's rules
    (cluster_role_rules) that every resource request must be granted, or None for all.
    bookmark_interval: seconds between BOOKMARKs on a watch that allows them.
    """

    USER = "system:serviceaccount:portier:portier"

    def __init__(self, addr: Tuple[str, int], tmpdir, tokens: Sequence[str] = ("token-1",),
                 rbac: Optional[List[dict]] = None, bookmark_interval: float = 1.0,
                 start_rv: int = 1000, tables: bool = True):
        self.addr = (addr[0], int(addr[1]))
        self.dir = Path(tmpdir) / f"kubeapi-{addr[0]}-{addr[1]}"
        self.ca = CertAuthority(self.dir / "ca", "kubeapi stand-in CA")
        self.cert, self.key = self.ca.issue("apiserver", dns=["kubernetes",
                                                              "kubernetes.default.svc"],
                                            ips=[addr[0]], cn="kube-apiserver")
        self.ca_file = self.ca.crt
        self.rbac = rbac
        self.bookmark_interval = bookmark_interval
        # False: Accept's Table is ignored and plain JSON sent (as a server without table
        # conversion would); kubectl then prints only NAME and AGE (test_kubeapi shows it).
        self.tables = tables
        self.requests: List[Request] = []
        self._cond = threading.Condition()
        self._tokens = set(tokens)
        self._store: Dict[tuple, dict] = {}
        self._history: List[Event] = []
        self._rv = start_rv
        self._compacted = 0  # watches from before this resourceVersion get 410
        self._watches: List[Watch] = []
        self._conns: Dict[_Conn, threading.Thread] = {}
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._stopping = False
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ctx.load_cert_chain(self.cert, self.key)
        self._ctx.set_alpn_protocols(["http/1.1"])

    # -- lifecycle

    @property
    def url(self) -> str:
        return f"https://{self.addr[0]}:{self.addr[1]}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self):
        """Listens on addr (again, after stop(), with the same objects, CA and log)."""
        assert self._listener is None, "already running"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.addr)
        s.listen(64)
        s.settimeout(0.1)
        self._stopping = False
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(s,),
                                               name="kubeapi-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self):
        """Closes the listener and every connection, open watches included (no final chunk,
        as when the server goes away), and waits for their threads."""
        if self._listener is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._accept_thread.join(5)
        self._listener.close()
        self._listener = None
        with self._cond:
            conns = list(self._conns.items())
        for c, _ in conns:
            c.abort(rst=False)
        for _, t in conns:
            t.join(5)
        stuck = [t.name for _, t in conns if t.is_alive()]
        assert not stuck, f"kubeapi: connection threads still running after stop: {stuck}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self, listener):
        while not self._stopping:
            try:
                raw, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.settimeout(None)
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True,
                                 name=f"kubeapi-{peer[0]}:{peer[1]}")
            t.start()

    def _serve(self, raw):
        """One connection: the TLS handshake, then requests until the client closes, an error,
        a drop or stop()."""
        conn = None
        try:
            sock = self._ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            sock.settimeout(10)
            sock.do_handshake()
            sock.settimeout(None)
            conn = _Conn(sock)
            with self._cond:
                if self._stopping:
                    return
                self._conns[conn] = threading.current_thread()
            while not conn.dropped:
                try:
                    req = conn.read_request()
                except ValueError as e:
                    conn.send(400, f"bad request: {e}\n".encode(), "text/plain; charset=utf-8",
                              [("Connection", "close")])
                    return
                if req is None:
                    return
                if not self._handle(conn, req):
                    return
        except (OSError, ssl.SSLError, _Closed):
            pass
        finally:
            if conn is not None:
                with self._cond:
                    self._conns.pop(conn, None)
                try:
                    conn.sock.close()
                except OSError:
                    pass
            else:
                raw.close()

    # -- the control API

    def set_tokens(self, tokens: Sequence[str]):
        """The bearer tokens accepted from now on (open watches are not re-checked, as on a
        real server: a token is checked when a request arrives)."""
        with self._cond:
            self._tokens = set(tokens)

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def apply(self, obj: dict, manager: str = "kubectl-client-side-apply") -> dict:
        """Creates obj or replaces the object of its kind, namespace and name (ADDED or MODIFIED
        to the watches); returns it as stored. An Ingress's or Service's status is kept unless obj
        has one (as `kubectl apply` leaves status alone). Nothing changes, and no event is sent,
        when obj equals what is stored."""
        res = RESOURCES[obj["kind"]]
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if res.namespaced:
            md.setdefault("namespace", "default")
        else:
            md.pop("namespace", None)
        key = (res.kind, md.get("namespace", ""), md["name"])
        with self._cond:
            old = self._store.get(key)
            if old is not None and "status" not in obj and "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            normalize(res, obj)
            obj["apiVersion"], obj["kind"] = res.api_version, res.kind
            if old is not None:
                md.setdefault("uid", old["metadata"]["uid"])
                md.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"])
                if _content(obj) == _content(old):
                    return copy.deepcopy(old)
            return self._write(res, key, obj, old, manager)

    def _write(self, res: Resource, key: tuple, obj: dict, old: Optional[dict], manager: str,
               subresource: str = "") -> dict:
        """Stores obj (lock held): new resourceVersion, uid, creationTimestamp, generation,
        managedFields; records and sends the event."""
        md = obj["metadata"]
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", now_rfc3339())
        if res.generation:
            gen = (old or {}).get("metadata", {}).get("generation", 0)
            spec_changed = old is None or {k: v for k, v in obj.items()
                                           if k not in ("metadata", "status")} != \
                {k: v for k, v in old.items() if k not in ("metadata", "status")}
            md["generation"] = gen + 1 if spec_changed else max(gen, 1)
        fields = ({"f:status": fields_v1(obj.get("status"), False)} if subresource else
                  fields_v1({k: v for k, v in obj.items()
                             if k not in ("kind", "apiVersion", "status")}))
        if not subresource:
            fm = fields.get("f:metadata", {})
            for k in ("name", "namespace", "uid", "resourceVersion", "generation",
                      "creationTimestamp", "managedFields"):
                fm.pop("f:" + k, None)
        entry = {"manager": manager, "operation": "Update", "apiVersion": res.api_version,
                 "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields}
        if subresource:
            entry["subresource"] = subresource
        managed = [m for m in ((old or {}).get("metadata", {}).get("managedFields") or [])
                   if (m.get("manager"), m.get("subresource", "")) != (manager, subresource)]
        md["managedFields"] = managed + [entry]
        md["resourceVersion"] = str(self._bump())
        obj = ordered(res.kind, obj)
        self._store[key] = obj
        self._emit(res, "MODIFIED" if old is not None else "ADDED", obj, old)
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: Optional[str], name: str) -> dict:
        """Deletes an object (DELETED to the watches, with the deletion's resourceVersion);
        returns it. KeyError if there is none."""
        res = RESOURCES[kind]
        key = (kind, namespace or "" if res.namespaced else "", name)
        with self._cond:
            old = self._store.pop(key)
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._bump())
            self._emit(res, "DELETED", gone, old)
            return gone

    def get(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict]:
        res = RESOURCES[kind]
        with self._cond:
            o = self._store.get((kind, namespace or "" if res.namespaced else "", name))
            return copy.deepcopy(o) if o is not None else None

    def list(self, kind: str, namespace: Optional[str] = None) -> List[dict]:
        with self._cond:
            return [copy.deepcopy(o) for (k, ns, _), o in sorted(self._store.items())
                    if k == kind and (namespace is None or ns == namespace)]

    def set_endpoints(self, namespace: str, service: str, port_name: Optional[str], port: int,
                      endpoints: Sequence, max_per_slice: int = 100) -> List[dict]:
        """The EndpointSlices of service as the EndpointSlice controller writes them: named
        <service>-xxxxx (stable, so a later call replaces them), labelled
        kubernetes.io/service-name, addressType IPv4, one port (port_name, port), at most
        max_per_slice endpoints each. endpoints: (ip, ready) or (ip, ready, pod) tuples, or dicts
        with ip, ready and optionally serving, terminating, pod. Slices no longer needed are
        deleted. Returns the slices."""
        eps = []
        for e in endpoints:
            if not isinstance(e, dict):
                e = dict(zip(("ip", "ready", "pod"), e))
            ready = bool(e.get("ready", True))
            pod = e.get("pod") or f"{service}-{e['ip'].replace('.', '-')}"
            eps.append({
                "addresses": [e["ip"]],
                "conditions": {"ready": ready, "serving": bool(e.get("serving", ready)),
                               "terminating": bool(e.get("terminating", False))},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod,
                              "uid": str(uuid.UUID(hashlib.md5(pod.encode()).hexdigest()))},
                "nodeName": "server",
            })
        groups = [eps[i:i + max_per_slice] for i in range(0, len(eps), max_per_slice)] or [[]]
        svc = self.get("Service", namespace, service)
        out = []
        with self._cond:
            for i, group in enumerate(groups):
                name = f"{service}-{hashlib.sha1(f'{service}/{i}'.encode()).hexdigest()[:5]}"
                labels = dict(((svc or {}).get("metadata") or {}).get("labels") or {})
                labels.update({"kubernetes.io/service-name": service,
                               "endpointslice.kubernetes.io/managed-by":
                                   "endpointslice-controller.k8s.io"})
                md = {"name": name, "generateName": f"{service}-", "namespace": namespace,
                      "labels": labels,
                      "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                      now_rfc3339()}}
                if svc:
                    md["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service",
                                              "name": service, "uid": svc["metadata"]["uid"],
                                              "controller": True, "blockOwnerDeletion": True}]
                ports = [{"name": port_name or "", "protocol": "TCP", "port": port}]
                out.append(self.apply({"apiVersion": "discovery.k8s.io/v1",
                                       "kind": "EndpointSlice", "metadata": md,
                                       "addressType": "IPv4", "endpoints": group,
                                       "ports": ports}, manager="k3s"))
            keep = {o["metadata"]["name"] for o in out}
            for (k, ns, n), o in list(self._store.items()):
                if (k == "EndpointSlice" and ns == namespace and n not in keep and
                        (o["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
                        == service):
                    self.delete(k, ns, n)
        return out

    def compact(self, drop_watches: bool = False):
        """Forgets the history, as etcd's compaction: a watch from an older resourceVersion gets
        410 Expired. The resourceVersion first moves on by 10, as other objects' writes (leases,
        events) move a real cluster's on, so that what any client has seen is now too old. With
        drop_watches, also closes every open watch, under the same lock (no BOOKMARK can tell a
        client the new version in between)."""
        with self._cond:
            self._rv += 10
            self._compacted = self._rv
            self._history = []
            if drop_watches:
                self._drop_locked(True)
        if drop_watches:
            self._wait_dropped()

    def drop_watches(self, rst: bool = True):
        """Closes every open watch connection abruptly (an RST, or with rst=False a FIN),
        without the final chunk, as a broken connection or a crashed server does."""
        with self._cond:
            self._drop_locked(rst)
        self._wait_dropped()

    def _drop_locked(self, rst: bool):
        for w in self._watches:
            w.dropped = True
            # An RST needs the serving thread to close the socket itself (it waits on the
            # condition, not the socket, so it wakes); a FIN is shutdown()'s.
            w.conn.abort(rst, wake=not rst)
        self._cond.notify_all()

    def _wait_dropped(self, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(w.dropped for w in self._watches):
                left = deadline - time.monotonic()
                assert left > 0, "kubeapi: dropped watches still open"
                self._cond.wait(left)

    def open_watches(self, kind: Optional[str] = None) -> List[Watch]:
        with self._cond:
            return [w for w in self._watches if kind is None or w.res.kind == kind]

    def wait_watches(self, n: int, timeout: float = 5.0, kind: Optional[str] = None,
                     since: Optional[float] = None) -> List[Watch]:
        """Waits until at least n watches (of kind; opened at or after since, a monotonic time)
        are open; returns them, or raises AssertionError naming what is open."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ws = [w for w in self._watches if (kind is None or w.res.kind == kind) and
                      (since is None or w.started >= since) and not w.dropped]
                if len(ws) >= n:
                    return ws
                left = deadline - time.monotonic()
                if left <= 0:
                    open_ = [(w.res.kind, w.request.path) for w in self._watches]
                    raise AssertionError(f"kubeapi: not {n} watches of {kind or 'any kind'} "
                                         f"within {timeout}s; open: {open_}")
                self._cond.wait(min(left, 0.1))

    def requests_since(self, t: float, path_prefix: str = "") -> List[Request]:
        with self._cond:
            return [r for r in self.requests if r.time >= t and r.path.startswith(path_prefix)]

    def write_kubeconfig(self, path, token_file, namespace: str = "default") -> Path:
        """A kubeconfig of the shape of a pod's in-cluster config: this server, its CA file, a
        user that reads its token from token_file."""
        path = Path(path)
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "portier", "user": {"tokenFile": str(token_file)}}],
            "contexts": [{"name": "in-cluster", "context": {
                "cluster": "in-cluster", "user": "portier", "namespace": namespace}}],
            "current-context": "in-cluster"}, indent=1))
        return path

    # -- events

    def _emit(self, res: Resource, etype: str, obj: dict, old: Optional[dict]):
        """Records an event (lock held) and queues it for every watch it concerns."""
        ev = Event(int(obj["metadata"]["resourceVersion"]), etype, res.kind,
                   copy.deepcopy(obj), copy.deepcopy(old) if old is not None else None)
        self._history.append(ev)
        for w in self._watches:
            if w.res.kind == res.kind:
                t = w.translate(etype, ev.obj, ev.old)
                if t:
                    w.queue.append(t)
        self._cond.notify_all()

    # -- HTTP

    def _handle(self, conn: _Conn, hreq: HttpRequest) -> bool:
        """Answers one request; returns whether the connection stays open."""
        url = urllib.parse.urlsplit(hreq.target)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query,
                                                            keep_blank_values=True).items()}
        auth = hreq.header("Authorization")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        req = Request(hreq.method, url.path, query, token, time.monotonic(), time.time(),
                      hreq.header("Accept"), hreq.header("User-Agent"), hreq.body)
        with self._cond:
            self.requests.append(req)
            authorized = token is not None and token in self._tokens
        keep = not (hreq.header("Connection").lower() == "close" or hreq.version == "HTTP/1.0")
        try:
            if not authorized:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            streamed = self._route(conn, hreq, req)
            return keep and not conn.dropped and streamed is not False
        except ApiError as e:
            req.status = e.code
            if e.text is not None:
                conn.send(e.code, e.text.encode(), "text/plain; charset=utf-8")
            else:
                conn.send(e.code, encode(status_obj(e.code, e.reason, e.message, e.details)),
                          "application/json")
            return keep

    def _json(self, conn, req, obj, code=200):
        req.status = code
        conn.send(code, encode(obj), "application/json")

    def _route(self, conn: _Conn, hreq: HttpRequest, req: Request):
        path = req.path.rstrip("/") or "/"
        segs = [s for s in path.split("/") if s]
        if path in ("/healthz", "/readyz", "/livez"):
            req.status = 200
            conn.send(200, b"ok", "text/plain; charset=utf-8")
            return True
        if hreq.method != "GET" and (len(segs) < 3 or segs[0] not in ("api", "apis")):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on "
                                                    "the requested resource")
        if path == "/version":
            return self._json(conn, req, VERSION)
        if path == "/api":
            return self._json(conn, req, {"kind": "APIVersions", "versions": ["v1"],
                                          "serverAddressByClientCIDRs": [
                                              {"clientCIDR": "0.0.0.0/0",
                                               "serverAddress": f"{self.addr[0]}:"
                                                                f"{self.addr[1]}"}]})
        if path == "/apis":
            return self._json(conn, req, {"kind": "APIGroupList", "apiVersion": "v1",
                                          "groups": [self._group(g) for g in GROUPS]})
        if segs[:1] == ["apis"] and len(segs) == 2:
            if segs[1] not in GROUPS:
                raise not_found_page()
            return self._json(conn, req, dict(kind="APIGroup", apiVersion="v1",
                                              **self._group(segs[1])))
        if segs == ["api", "v1"] or (len(segs) == 3 and segs[0] == "apis"):
            group = "" if segs[0] == "api" else segs[1]
            if group and (group not in GROUPS or segs[2] != "v1"):
                raise not_found_page()
            return self._json(conn, req, self._resource_list(group))
        return self._resource(conn, hreq, req, segs)

    def _group(self, g: str) -> dict:
        gv = {"groupVersion": f"{g}/v1", "version": "v1"}
        return {"name": g, "versions": [gv], "preferredVersion": gv}

    def _resource_list(self, group: str) -> dict:
        resources = []
        for r in sorted((r for r in RESOURCES.values() if r.group == group),
                        key=lambda r: r.plural):
            d = {"name": r.plural, "singularName": "", "namespaced": r.namespaced,
                 "kind": r.kind, "verbs": VERBS}
            if r.short_names:
                d["shortNames"] = list(r.short_names)
            if r.categories:
                d["categories"] = list(r.categories)
            d["storageVersionHash"] = base64.b64encode(
                hashlib.sha256(r.qualified().encode()).digest()[:8]).decode()
            resources.append(d)
            if r.status:
                resources.append({"name": f"{r.plural}/status", "singularName": "",
                                  "namespaced": r.namespaced, "kind": r.kind,
                                  "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/v1" if group else "v1", "resources": resources}

    def _authorize(self, verb: str, res: Resource, sub: str, ns: Optional[str],
                   name: Optional[str]):
        """The real authorizer's answer to what the ClusterRole's rules grant, as a 403."""
        if self.rbac is None:
            return
        resource = f"{res.plural}/{sub}" if sub else res.plural
        for rule in self.rbac:
            if (set(rule.get("apiGroups", [])) & {res.group, "*"} and
                    set(rule.get("resources", [])) & {resource, "*"} and
                    set(rule.get("verbs", [])) & {verb, "*"} and
                    (not rule.get("resourceNames") or name in rule["resourceNames"])):
                return
        what = f'{res.qualified()} "{name}" is forbidden' if name else \
            f"{res.qualified()} is forbidden"
        where = (f' in the namespace "{ns}"' if ns else " at the cluster scope")
        raise ApiError(403, "Forbidden",
                       f'{what}: User "{self.USER}" cannot {verb} resource "{resource}" in API '
                       f'group "{res.group}"{where}',
                       details_for(res, name or "") if name else {"group": res.group,
                                                                    "kind": res.plural})

    def _resource(self, conn, hreq, req, segs):
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) >= 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise not_found_page()
        ns = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0] if rest else ""))
        if res is None or len(rest) > 3 or (ns is not None and not res.namespaced):
            raise not_found_page()
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else ""
        if (sub and (sub != "status" or not res.status)) or (
                name and res.namespaced and ns is None):
            raise not_found_page()
        m = hreq.method
        if m == "GET" and name is None:
            verb = "watch" if req.watch else "list"
        elif m == "GET":
            verb = "get"
        elif m == "PUT" and name:
            verb = "update"
        elif m == "PATCH" and name:
            verb = "patch"
        else:
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        self._authorize(verb, res, sub, ns, name)
        if verb == "list":
            return self._list(conn, hreq, req, res, ns)
        if verb == "watch":
            return self._watch(conn, hreq, req, res, ns)
        if verb == "get":
            o = self.get(res.kind, ns, name)
            if o is None:
                raise ApiError(404, "NotFound", f'{res.qualified()} "{name}" not found',
                               details_for(res, name))
            return self._json(conn, req, with_type(res, o))
        return self._update(conn, hreq, req, res, ns, name, sub, verb)

    def _selection(self, req, res):
        return (parse_label_selector(req.query.get("labelSelector", "")),
                parse_field_selector(req.query.get("fieldSelector", ""), res))

    def _list(self, conn, hreq, req, res, ns):
        labels, fields = self._selection(req, res)
        table = wants_table(hreq.header("Accept")) if self.tables else None
        limit = int(req.query.get("limit") or 0)
        cont = req.query.get("continue", "")
        with self._cond:
            rv = self._rv
            items = [o for (k, n, _), o in sorted(self._store.items())
                     if k == res.kind and (ns is None or n == ns) and
                     labels_match(labels, o["metadata"].get("labels")) and
                     fields_match(fields, o)]
            items = copy.deepcopy(items)
        meta: dict = {"resourceVersion": str(rv)}
        if cont:
            try:
                c = json.loads(base64.urlsafe_b64decode(cont + "=="))
                start, rv = c["start"], c["rv"]
            except (ValueError, KeyError):
                raise ApiError(400, "BadRequest", "continue key is not valid")
            if rv < self._compacted:
                raise ApiError(410, "Expired",
                               "The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without the "
                               "continue parameter.")
            meta["resourceVersion"] = str(rv)
            items = [o for o in items if (o["metadata"].get("namespace", ""),
                                          o["metadata"]["name"]) > tuple(start)]
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": int(meta["resourceVersion"]),
                 "start": [last.get("namespace", ""), last["name"]]}).encode()).decode().rstrip(
                "=")
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if table:
            return self._json(conn, req, table_for(res, items, meta["resourceVersion"], table,
                                                   req.query.get("includeObject", "Metadata"),
                                                   list_meta=meta))
        return self._json(conn, req, {"kind": res.list_kind, "apiVersion": res.api_version,
                                      "metadata": meta,
                                      "items": [without_type(res, o) for o in items]})

    def _update(self, conn, hreq, req, res, ns, name, sub, verb):
        """PUT (update) or PATCH (merge patch) of an object or its status. Of the main object,
        status is kept; of status, only status changes (the status subresource's rules)."""
        try:
            body = json.loads(hreq.body or b"null")
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown "
                                              f"format: {e}")
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request is not an object")
        if verb == "patch":
            ctype = hreq.header("Content-Type").split(";")[0].strip()
            if ctype not in ("application/merge-patch+json",
                             "application/strategic-merge-patch+json"):
                raise ApiError(415, "UnsupportedMediaType",
                               "the body of the request was in an unknown format - accepted "
                               "media types include: application/merge-patch+json")
        manager = (req.user_agent.split("/")[0] or "unknown")
        key = (res.kind, ns or "", name)
        with self._cond:
            old = self._store.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{res.qualified()} "{name}" not found',
                               details_for(res, name))
            if verb == "patch":
                new = merge_patch(copy.deepcopy(old), body)
            else:
                new = body
                md = new.get("metadata") or {}
                if md.get("name") != name or (res.namespaced and
                                              md.get("namespace", ns) != ns):
                    raise ApiError(400, "BadRequest", "the name of the object "
                                   f"({md.get('name')}) does not match the name on the URL "
                                   f"({name})")
            want_rv = (new.get("metadata") or {}).get("resourceVersion", "")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict",
                               f'Operation cannot be fulfilled on {res.qualified()} "{name}": '
                               f'the object has been modified; please apply your changes to the '
                               f'latest version and try again', details_for(res, name))
            stored = copy.deepcopy(old)
            if sub == "status":
                stored["status"] = copy.deepcopy(new.get("status") or {})
            else:
                stored = {k: copy.deepcopy(v) for k, v in new.items() if k != "status"}
                stored["metadata"] = dict(stored.get("metadata") or {})
                for k in ("uid", "creationTimestamp", "namespace"):
                    if k in old["metadata"]:
                        stored["metadata"][k] = old["metadata"][k]
                if "status" in old:
                    stored["status"] = copy.deepcopy(old["status"])
            normalize(res, stored)
            stored["apiVersion"], stored["kind"] = res.api_version, res.kind
            if _content(stored) == _content(old):
                out = copy.deepcopy(old)  # no change: no write, no new resourceVersion
            else:
                out = self._write(res, key, stored, old, manager, sub)
        return self._json(conn, req, with_type(res, out))

    def _watch(self, conn, hreq, req, res, ns):
        labels, fields = self._selection(req, res)
        table = wants_table(hreq.header("Accept")) if self.tables else None
        rv_text = req.query.get("resourceVersion", "")
        try:
            since = int(rv_text) if rv_text not in ("", "0") else 0
        except ValueError:
            raise ApiError(400, "BadRequest", f'resourceVersion: Invalid value: "{rv_text}": '
                                              f'must be a non-negative integer')
        try:
            timeout = float(req.query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds: not a number")
        w = Watch(res, ns, labels, fields, since,
                  req.query.get("allowWatchBookmarks") in ("1", "true", "True"), table,
                  req.query.get("includeObject", "Metadata"), conn, req)
        expired = None
        with self._cond:
            deadline = time.monotonic() + 3
            while since > self._rv and time.monotonic() < deadline:
                self._cond.wait(0.1)  # a future version: the real cache waits up to 3 s
            if since > self._rv:
                raise ApiError(504, "Timeout", f"Too large resource version: {since}, current: "
                                               f"{self._rv}",
                               {"causes": [{"reason": "ResourceVersionTooLarge",
                                            "message": "Too large resource version"}],
                                "retryAfterSeconds": 1})
            if since and since < self._compacted:
                expired = f"too old resource version: {since} ({self._compacted})"
            elif since == 0:
                # From "now" (resourceVersion unset or 0): every object as a synthetic ADDED.
                w.queue = [("ADDED", copy.deepcopy(o)) for (k, _, _), o in
                           sorted(self._store.items()) if k == res.kind and w.matches(o)]
            else:
                for ev in self._history:
                    if ev.rv > since and ev.kind == res.kind:
                        t = w.translate(ev.type, copy.deepcopy(ev.obj), ev.old)
                        if t:
                            w.queue.append(t)
            if not expired:
                self._watches.append(w)
                self._cond.notify_all()
        req.status = 200
        req.expired = expired is not None
        try:
            conn.send_head(200, [("Audit-Id", str(uuid.uuid4())),
                                 ("Cache-Control", "no-cache, private"),
                                 ("Content-Type", "application/json"),
                                 ("Transfer-Encoding", "chunked")])
            if expired:
                conn.send_chunk(encode({"type": "ERROR", "object": status_obj(
                    410, "Expired", expired)}) + b"\n")
                conn.send_end()
                return True
            return self._stream(conn, w, time.monotonic() + timeout)
        finally:
            with self._cond:
                if w in self._watches:
                    self._watches.remove(w)
                self._cond.notify_all()

    def _stream(self, conn: _Conn, w: Watch, deadline: float) -> bool:
        """Writes w's events as they come, a BOOKMARK every bookmark_interval when allowed,
        until the deadline (then the final chunk: a clean end), a drop or stop()."""
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            bookmark = None
            with self._cond:
                while True:
                    if w.dropped or self._stopping:
                        conn.dropped = True
                        return False
                    if w.queue:
                        events, w.queue = w.queue, []
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        events = None
                        break
                    if w.bookmarks and now >= next_bookmark:
                        bookmark = self._rv  # every event up to it is already queued or sent
                        next_bookmark = now + self.bookmark_interval
                        events = []
                        break
                    self._cond.wait(min(deadline, next_bookmark, now + 0.2) - now)
                    if conn.peer_gone():
                        return False
            if events is None:
                conn.send_end()
                return True
            for etype, obj in events:
                conn.send_chunk(self._event(w, etype, obj))
            if bookmark is not None:
                conn.send_chunk(encode({"type": "BOOKMARK",
                                        "object": bookmark_object(w.res, bookmark)}) + b"\n")

    def _event(self, w: Watch, etype: str, obj: dict) -> bytes:
        if w.table:
            o = table_for(w.res, [obj], obj["metadata"]["resourceVersion"], w.table, w.include,
                          headers=not w.sent_headers)
            w.sent_headers = True
        else:
            o = with_type(w.res, obj)
        return encode({"type": etype, "object": o}) + b"\n"


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


# --- our manifests -----------------------------------------------------------------------------


def render_manifests(kubectl: Path = KUBECTL, timeout: float = 120) -> List[dict]:
    """Every object `kubectl kustomize k8s` renders (the repo's manifests), parsed."""
    import yaml  # python3-yaml; imported here so that the server itself needs only the stdlib

    r = subprocess.run([str(kubectl), "kustomize", str(REPO / "k8s")], capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize k8s exited with {r.returncode}:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def find(objs: Iterable[dict], kind: str, name: str, namespace: Optional[str] = None):
    for o in objs:
        md = o.get("metadata") or {}
        if o.get("kind") == kind and md.get("name") == name and (
                namespace is None or md.get("namespace") == namespace):
            return o
    return None


def cluster_role_rules(objs: Iterable[dict], name: str = "portier") -> List[dict]:
    """The rules of the rendered ClusterRole name (for ApiServer's rbac)."""
    role = find(objs, "ClusterRole", name)
    if role is None:
        raise AssertionError(f"no ClusterRole {name} in the rendered manifests")
    return role.get("rules") or []


def load_manifests(api: ApiServer, objs: Iterable[dict]) -> List[dict]:
    """Applies the objects of the kinds the stand-in serves, as `kubectl apply` would (with its
    last-applied-configuration annotation); returns them as stored."""
    out = []
    for o in objs:
        if o.get("kind") not in SERVED_KINDS:
            continue
        o = copy.deepcopy(o)
        last = json.dumps(o, separators=(",", ":"), sort_keys=True) + "\n"
        o["metadata"].setdefault("annotations", {})[
            "kubectl.kubernetes.io/last-applied-configuration"] = last
        out.append(api.apply(o))
    return out
