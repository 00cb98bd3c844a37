"""Black-box tests of issue 11, "HTTPS — TLS termination with SNI": real clients on loopback.

What is tested, one section each (DESIGN.md "Configuration" and the issue are the contract):

  1. protocols: TLS 1.2 and 1.3 accepted; TLS 1.0 and 1.1 refused by portier (an `openssl
     s_server` that allows them shows the client could speak them); ALPN answers
  2. SNI (`openssl s_client`): each name gets its certificate, `*.` wildcards one label deep, no SNI
     and unknown names the first (default) certificate; RSA and ECDSA for one name (the client's
     signature algorithms decide); a chain file verified by a client trusting only the root
  3. routing and round-robin over TLS with curl; X-Forwarded-Proto / -Port for both listeners
  4. session resumption (`-sess_out` / `-sess_in` shows `Reused`): TLS 1.2 tickets and session
     IDs, TLS 1.3; with 4 workers, 20 resumed connections all reused
  5. SIGHUP: a certificate swapped in place serves new handshakes while a keep-alive TLS
     connection opened before keeps working; a broken file keeps the old one serving, logged
  6. per route: `redirect_https` (308 to https://host:28843/same?query) and `hsts`
  7. `timeouts.tls_handshake`; plain HTTP to the TLS port (a readable 400); garbage, a client that
     stops mid-handshake or resets, a ClientHello in 1-byte writes, a renegotiation attempt: each
     handled, and portier serves on (and exits 0 on SIGTERM: the fixture checks)
  8. 500 concurrent TLS clients; a 256 MiB upload and download over TLS with SHA-256 checks, with
     portier's RSS sampled and bounded
  9. `portier -t`: missing, unreadable, mismatched, not-a-certificate and encrypted files refused
     at the value's line and column; expired, not yet valid and unrouted certificates warned about

Certificates are made once per session with the `openssl` command in a temp dir (make_certs): a
test CA, an intermediate, and leaves told apart by their subject CN ("tag-..."); see LEAVES.

Addresses (no other test file uses them): portier on 127.0.0.80, port 28843 (TLS) and 28800
(plain); fake origins (backend.py, or RawOrigin below for big bodies) on 127.0.0.81-84:28811-28814;
app1 on 127.0.0.81:28819; an `openssl s_server` (the TLS 1.0/1.1 control) on 127.0.0.84:28818.
Python clients connect from CLIENT_IP (127.0.0.85). Nothing leaves loopback. Every process is
stopped by PID at teardown (conftest.stopping: portier must exit 0 on SIGTERM, without a sanitizer
report), every thread is joined, every socket operation, subprocess and test is bounded in time;
time is only ever asserted as an upper bound with slack.
"""

import fcntl
import hashlib
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

import backend as fake
import httpc
import procs
from conftest import Portier, accepts, assert_alive, stopping, wait_until

TLS = ("127.0.0.80", 28843)
PLAIN = ("127.0.0.80", 28800)
O1 = ("127.0.0.81", 28811)
O2 = ("127.0.0.82", 28812)
O3 = ("127.0.0.83", 28813)
O4 = ("127.0.0.84", 28814)
APP = ("127.0.0.81", 28819)
CONTROL = ("127.0.0.84", 28818)  # openssl s_server allowing TLS 1.0 / 1.1
CLIENT_IP = "127.0.0.85"
TIMEOUT = 5.0  # every client socket operation, unless told
RUN_TIMEOUT = 20.0  # every openssl / curl / portier -t run
MIB = 1 << 20

ASAN = os.environ.get("PORTIER_BUILD", "").rstrip("/").endswith("/asan")


def hp(addr):
    return f"{addr[0]}:{addr[1]}"


# =============================================================================================
# Certificates, made once per session with the openssl command.

OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_intermediate]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

# `openssl ca`, only to set validity dates in the past or the future (x509 -days cannot).
CA_CNF = """\
[ca]
default_ca = dated
[dated]
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
email_in_dn = no
[any]
commonName = supplied
"""

# name: (key type, subject CN, SANs, issuer: "root", "intermediate" or (startdate, enddate) by the
# root). Every leaf is valid for a.test-like names under .test; the CN tells them apart.
LEAVES = {
    "default": ("ec", "tag-default", ["default.test"], "root"),
    "ecdsa": ("ec", "tag-ecdsa-ab", ["a.test", "b.test"], "root"),
    "rsa": ("rsa", "tag-rsa-a", ["a.test"], "root"),
    "wild": ("ec", "tag-wild", ["*.w.test"], "root"),
    "chain": ("ec", "tag-chain", ["chain.test"], "intermediate"),
    "reload1": ("ec", "tag-reload-1", ["a.test"], "root"),
    "reload2": ("ec", "tag-reload-2", ["a.test"], "root"),
    "expired": ("ec", "tag-expired", ["a.test"], ("20200101000000Z", "20200102000000Z")),
    "future": ("ec", "tag-future", ["a.test"], ("20990101000000Z", "20991231000000Z")),
}


@dataclass
class Certs:
    dir: Path
    ca: str  # the root, the only certificate clients trust

    def crt(self, name) -> str:
        """The certificate file of a leaf (for "chain": leaf then intermediate)."""
        return str(self.dir / f"{name}.crt")

    def key(self, name) -> str:
        return str(self.dir / f"{name}.key")


def openssl(*args, cwd):
    r = subprocess.run(
        ["openssl", *[str(a) for a in args]], cwd=cwd, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=60,
    )
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n"
                             f"{r.stderr.decode(errors='replace')}")


def new_key(path, kind, cwd):
    if kind == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path,
                cwd=cwd)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                path, cwd=cwd)


def make_certs(d: Path) -> Certs:
    """Every certificate and key of LEAVES, plus the odd files of the -t tests, in d."""
    cnf = d / "openssl.cnf"
    cnf.write_text(OPENSSL_CNF)
    new_key(d / "ca.key", "ec", d)
    openssl("req", "-config", cnf, "-new", "-x509", "-key", "ca.key", "-subj",
            "/CN=portier-test-root", "-days", "30", "-set_serial", "1", "-extensions", "v3_ca",
            "-out", "ca.crt", cwd=d)
    new_key(d / "intermediate.key", "ec", d)
    openssl("req", "-config", cnf, "-new", "-key", "intermediate.key", "-subj",
            "/CN=tag-intermediate", "-out", "intermediate.csr", cwd=d)
    openssl("x509", "-req", "-in", "intermediate.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", "2", "-days", "30", "-sha256", "-extfile", cnf, "-extensions",
            "v3_intermediate", "-out", "intermediate.crt", cwd=d)
    (d / "dated").mkdir()
    (d / "dated" / "newcerts").mkdir()
    (d / "dated" / "index.txt").write_text("")
    (d / "dated" / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(CA_CNF.format(dir=d / "dated"))
    for serial, (name, (kind, cn, sans, issuer)) in enumerate(LEAVES.items(), start=10):
        new_key(d / f"{name}.key", kind, d)
        ext = d / f"{name}.ext"
        usage = "digitalSignature,keyEncipherment" if kind == "rsa" else "digitalSignature"
        ext.write_text(
            "[leaf]\nbasicConstraints = critical,CA:FALSE\n"
            f"keyUsage = critical,{usage}\nextendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
            "subjectAltName = " + ",".join(f"DNS:{s}" for s in sans) + "\n"
        )
        openssl("req", "-config", cnf, "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}",
                "-out", f"{name}.csr", cwd=d)
        if isinstance(issuer, tuple):
            openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
                    "-startdate", issuer[0], "-enddate", issuer[1], "-in", f"{name}.csr",
                    "-extfile", ext, "-extensions", "leaf", "-notext", "-out", f"{name}.crt",
                    cwd=d)
            continue
        ca = "ca" if issuer == "root" else "intermediate"
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-set_serial", serial, "-days", "30", "-sha256", "-extfile", ext, "-extensions",
                "leaf", "-out", f"{name}.crt", cwd=d)
        if issuer == "intermediate":
            leaf = (d / f"{name}.crt").read_text()
            (d / f"{name}.crt").write_text(leaf + (d / "intermediate.crt").read_text())
    # The odd files of the -t tests.
    openssl("pkey", "-in", "ecdsa.key", "-aes256", "-passout", "pass:x", "-out", "encrypted.key",
            cwd=d)
    (d / "notcert.pem").write_text((d / "ecdsa.key").read_text())  # a PEM key given as a cert
    return Certs(dir=d, ca=str(d / "ca.crt"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls-certs"))


def test_the_test_certificates_are_what_the_tests_assume(certs):
    """The fixture itself: each leaf verifies against the root (the chain file through its
    intermediate), carries its SANs, and the expired one is expired."""
    for name, (_, cn, sans, issuer) in LEAVES.items():
        text = subprocess.run(
            ["openssl", "x509", "-in", certs.crt(name), "-noout", "-subject", "-ext",
             "subjectAltName"], capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True,
        ).stdout
        assert f"CN = {cn}" in text and all(f"DNS:{s}" in text for s in sans), text
        argv = ["openssl", "verify", "-CAfile", certs.ca]
        if issuer == "intermediate":
            argv += ["-untrusted", str(certs.dir / "intermediate.crt")]
        r = subprocess.run(argv + [certs.crt(name)], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
        if isinstance(issuer, tuple):
            assert r.returncode != 0, f"{name} verifies: {r.stdout}"
        else:
            assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"
    r = subprocess.run(["openssl", "pkey", "-in", str(certs.dir / "encrypted.key"), "-passin",
                        "pass:wrong", "-noout"], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=RUN_TIMEOUT)
    assert r.returncode != 0, "the encrypted key opens without its passphrase"


# =============================================================================================
# Configs, portier, origins


DEFAULT_CERTS = ("default", "ecdsa", "rsa", "wild", "chain")
DEFAULT_ROUTES = ({"host": "a.test", "service": "a"}, {"host": "b.test", "service": "b"})


def config(certs, cert_names=DEFAULT_CERTS, routes=DEFAULT_ROUTES, workers=2, timeouts="",
           extra=""):
    """A portier config: TLS on TLS, plain HTTP on PLAIN, the certificates cert_names (the first
    is the default), routes (dicts of route keys) to services a (O1) and b (O2, O3), default
    service d (O4). timeouts: extra entries of the timeouts mapping; extra: YAML lines appended."""
    out = [
        "listen:",
        f'  - address: "{hp(TLS)}"',
        "    tls: true",
        f'  - address: "{hp(PLAIN)}"',
        f"workers: {workers}",
        "tls:",
        "  certificates:",
    ]
    for name in cert_names:
        out += [f"    - cert: {certs.crt(name)}", f"      key: {certs.key(name)}"]
    out.append("routes:")
    for r in routes:
        items = list(r.items())
        out.append(f"  - {items[0][0]}: {items[0][1]}")
        out += [f"    {k}: {v}" for k, v in items[1:]]
    out += [
        "default_service: d",
        "services:",
        f'  a:\n    servers: ["{hp(O1)}"]',
        f'  b:\n    servers: ["{hp(O2)}", "{hp(O3)}"]',
        f'  d:\n    servers: ["{hp(O4)}"]',
        "timeouts: { shutdown_grace: 1s" + (", " + timeouts if timeouts else "") + " }",
        "access_log: off",
    ]
    if extra:
        out.append(extra)
    return "\n".join(out) + "\n"


@pytest.fixture
def start_px(portier_bin, tmp_path):
    """start_px(yaml_text) writes the config, starts `portier -c FILE` and waits until TLS and
    PLAIN accept connections. Stopped by PID at teardown, where it must exit 0 without a
    sanitizer report (conftest.stopping)."""
    started: List[procs.Proc] = []

    def _start(yaml_text, listeners=(TLS, PLAIN)):
        cfg = tmp_path / f"portier-{len(started)}.yaml"
        cfg.write_text(yaml_text)
        p = procs.start([str(portier_bin), "-c", str(cfg)], env={}, wait_for=listeners[0],
                        log_dir=str(tmp_path), name="portier")
        started.append(p)
        for a in listeners[1:]:
            wait_until(lambda: accepts(a), 5.0, f"portier listening on {hp(a)}")
        return Portier(proc=p, config=cfg, addr=listeners[0])

    with stopping(started):
        yield _start


def named(name):
    """A backend.py handler answering 200 "NAME TARGET" with an X-Origin header."""

    def h(r, conn):
        return fake.response(200, f"{name} {r.target}".encode(), [("X-Origin", name)])

    return h


@pytest.fixture
def origins(backends):
    """The four fake origins of config(): a on O1, b1 and b2 (service b) on O2 and O3, d on O4."""
    return {n: backends(a, named(n)) for n, a in (("a", O1), ("b1", O2), ("b2", O3), ("d", O4))}


@pytest.fixture
def px(certs, origins, start_px):
    """portier with config() in front of the fake origins."""
    return start_px(config(certs))


# =============================================================================================
# Clients


def context(certs, version=None, alpn=None):
    """A verifying client context trusting only the test root."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.ca)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSConn(httpc.Conn):
    """An HTTP client connection over TLS (Python's ssl), from CLIENT_IP, SNI and Host name."""

    def __init__(self, certs, name="a.test", addr=TLS, timeout=TIMEOUT, ctx=None, session=None):
        httpc._Reader.__init__(self)
        self.host = name
        raw = socket.create_connection(addr, timeout=timeout, source_address=(CLIENT_IP, 0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = (ctx or context(certs)).wrap_socket(raw, server_hostname=name,
                                                            session=session)
        except BaseException:
            raw.close()
            raise

    def cn(self):
        """The subject CN of the certificate the server sent."""
        return dict(x[0] for x in self.sock.getpeercert()["subject"])["commonName"]


class PlainConn(httpc.Conn):
    """A plain-HTTP client connection from CLIENT_IP, to Host a.test unless told."""

    host = "a.test"

    def __init__(self, addr=PLAIN, timeout=TIMEOUT):
        super().__init__(addr, timeout, source=CLIENT_IP)


def raw_conn(addr=TLS, timeout=TIMEOUT):
    s = socket.create_connection(addr, timeout=timeout, source_address=(CLIENT_IP, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def wait_closed(sock, timeout):
    """Reads until the peer ends the connection (EOF or reset); returns what arrived. Fails if
    it is still open after timeout seconds."""
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                return got
            got += data
    except ConnectionResetError:
        return got
    except socket.timeout:
        pytest.fail(f"the connection was still open after {timeout}s; got {got[:200]!r}",
                    pytrace=False)


def assert_serves(certs, p, what):
    """portier still runs and answers a new TLS connection."""
    assert_alive(p, what)
    with TLSConn(certs) as c:
        r = c.request("GET", "/still")
    assert r.status == 200 and r.body == b"a /still", (what, r)


class BioClient:
    """A TLS client whose bytes go through memory BIOs and a raw socket, so that the test decides
    how each flight is written (say, one byte per write)."""

    def __init__(self, certs, name="a.test", version=None, addr=TLS, timeout=TIMEOUT):
        self.sock = raw_conn(addr, timeout)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context(certs, version).wrap_bio(self.inc, self.out, server_hostname=name)

    def close(self):
        self.sock.close()

    def flush(self, step=None, pause=0.0):
        """Sends what the TLS engine wrote; step bytes per write, pause seconds apart."""
        data = self.out.read()
        if step is None:
            self.sock.sendall(data)
        else:
            for i in range(0, len(data), step):
                self.sock.sendall(data[i:i + step])
                time.sleep(pause)
        return data

    def feed(self):
        data = self.sock.recv(65536)
        if not data:
            raise httpc.Closed("the server closed the connection")
        self.inc.write(data)

    def client_hello(self):
        """The ClientHello's bytes (nothing is sent)."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.out.read()

    def handshake(self, step=None, pause=0.0):
        while True:
            try:
                self.obj.do_handshake()
                self.flush(step, pause)
                return
            except ssl.SSLWantReadError:
                self.flush(step, pause)
                self.feed()

    def request(self, data):
        """Sends data, returns the response (parsed by httpc)."""
        self.obj.write(data)
        self.flush()
        got = b""
        while True:
            try:
                got += self.obj.read(65536)
            except ssl.SSLWantReadError:
                self.feed()
                continue
            parsed = httpc.parse_response(got)
            if parsed is not None:
                return parsed[0]


# --- openssl s_client --------------------------------------------------------------------------

SUBJECT_CN = re.compile(r"^subject=.*?\bCN\s*=\s*([^,/\n]+)", re.M)


class SClient:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    @property
    def all(self):
        return self.out + self.err

    @property
    def cn(self):
        m = SUBJECT_CN.search(self.out)
        return m.group(1).strip() if m else None

    @property
    def handshake_ok(self):
        return re.search(r"^(New|Reused), TLSv1(\.[0-3])?, Cipher is (?!\(NONE\))", self.out,
                         re.M) is not None

    @property
    def reused(self):
        return re.search(r"^Reused, TLSv1\.[23], Cipher is ", self.out, re.M) is not None

    def __repr__(self):
        return f"<s_client {' '.join(self.argv[2:])} rc={self.rc}:\n{self.all[-3000:]}>"


def s_client(certs, *args, name="a.test", stdin=b"", addr=TLS, timeout=RUN_TIMEOUT):
    """Runs `openssl s_client` to completion: name is the SNI (None: none), stdin what it sends
    (it ends the connection at EOF on stdin unless args hold -ign_eof)."""
    argv = ["openssl", "s_client", "-connect", hp(addr), "-CAfile", certs.ca]
    argv += ["-noservername"] if name is None else ["-servername", name]
    argv += [str(a) for a in args]
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(argv)} still ran after {timeout}s:\n{e.stdout!r}",
                    pytrace=False)
    return SClient(argv, r.returncode, r.stdout.decode(errors="replace"),
                   r.stderr.decode(errors="replace"))


def close_request(host="a.test", target="/s"):
    return httpc.req("GET", target, host, headers=[("Connection", "close")])


def s_client_get(certs, *args, name="a.test", **kw):
    """s_client sending one request with Connection: close and reading until portier closes, so
    that everything the server sends after the handshake (TLS 1.3 tickets) is read."""
    return s_client(certs, "-ign_eof", *args, name=name, stdin=close_request(name or "a.test"),
                    **kw)


# --- curl --------------------------------------------------------------------------------------


def curl(certs, host, target="/", addr=TLS):
    """`curl https://host:PORT/target` resolved to addr, trusting the test root; returns the
    parsed response."""
    argv = ["curl", "-sS", "-i", "--max-time", "10", "--interface", CLIENT_IP, "--cacert",
            certs.ca, "--resolve", f"{host}:{addr[1]}:{addr[0]}",
            f"https://{host}:{addr[1]}{target}"]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)} still ran after {RUN_TIMEOUT}s", pytrace=False)
    assert r.returncode == 0, f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode()}"
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    parsed = httpc.parse_response(head + b"\r\n\r\n", method="HEAD")
    assert parsed is not None, r.stdout[:500]
    parsed[0].body = body
    return parsed[0]


# =============================================================================================
# 1. Protocol versions and ALPN


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_tls12_and_tls13_are_accepted(certs, px, version):
    """A client pinned to TLS 1.2, or to 1.3, negotiates it and gets an answer."""
    with TLSConn(certs, ctx=context(certs, version)) as c:
        assert c.sock.version() == version.name.replace("v1_", "v1."), c.sock.version()
        r = c.request("GET", "/v")
    assert r.status == 200 and r.body == b"a /v", r


@pytest.fixture
def control_server(certs, tmp_path):
    """start(flag) runs `openssl s_server` on CONTROL allowing only that old protocol (-tls1,
    -tls1_1) at security level 0; stopped (killed if need be) at teardown."""
    started = []

    def _start(flag):
        p = procs.start(
            ["openssl", "s_server", "-accept", hp(CONTROL), "-cert", certs.crt("rsa"), "-key",
             certs.key("rsa"), flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-quiet"],
            wait_for=CONTROL, log_dir=str(tmp_path), name="s_server",
        )
        started.append(p)
        return p

    try:
        yield _start
    finally:
        for p in started:
            procs.stop(p, check=False)


@pytest.mark.parametrize("flag,version", [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")])
def test_tls10_and_tls11_are_refused_by_the_server(certs, px, control_server, flag, version):
    """The same client handshakes with an s_server that allows the old protocol, so the refusal
    is portier's: a protocol_version alert, no cipher."""
    args = (flag, "-cipher", "DEFAULT:@SECLEVEL=0")
    control_server(flag)
    ok = s_client(certs, *args, addr=CONTROL, name="a.test")
    # "New, TLSv1.0, Cipher is" names the cipher's version; "Protocol :" the one negotiated.
    assert ok.handshake_ok and re.search(rf"^\s*Protocol\s*:\s*{re.escape(version)}$", ok.out,
                                         re.M), (
        f"the control handshake failed, so the client cannot show anything: {ok!r}")
    r = s_client(certs, *args)
    assert r.rc != 0 and not r.handshake_ok, f"{version} was accepted: {r!r}"
    assert "alert protocol version" in r.all, f"no protocol_version alert from portier: {r!r}"
    assert_serves(certs, px, f"after a {version} ClientHello")


@pytest.mark.parametrize(
    "offer,selected",
    [(["http/1.1"], "http/1.1"), (["h2", "http/1.1"], "http/1.1"), (["h2"], None)],
    ids=["http1.1", "h2+http1.1", "h2-only"],
)
def test_alpn_selects_http11_and_never_fails_a_handshake(certs, px, offer, selected):
    """A client offering only h2 still completes the handshake, with no ALPN (None)."""
    with TLSConn(certs, ctx=context(certs, alpn=offer)) as c:
        assert c.sock.selected_alpn_protocol() == selected, c.sock.selected_alpn_protocol()
        r = c.request("GET", "/alpn")
    assert r.status == 200, r


def test_alpn_h2_only_with_s_client_reports_no_alpn(certs, px):
    """The same with s_client: a handshake, and "No ALPN negotiated" (not a no_application_protocol
    alert, which is what a server that only knows http/1.1 sends by default)."""
    r = s_client(certs, "-alpn", "h2")
    assert r.handshake_ok, r
    assert "No ALPN negotiated" in r.out, r


# =============================================================================================
# 2. SNI: which certificate a handshake gets


@pytest.mark.parametrize(
    "name,tags",
    [
        ("b.test", {"tag-ecdsa-ab"}),
        ("a.test", {"tag-ecdsa-ab", "tag-rsa-a"}),
        ("B.Test", {"tag-ecdsa-ab"}),
        ("x.w.test", {"tag-wild"}),
        ("w.test", {"tag-default"}),
        ("a.b.w.test", {"tag-default"}),
        ("chain.test", {"tag-chain"}),
        ("default.test", {"tag-default"}),
        ("unknown.test", {"tag-default"}),
        (None, {"tag-default"}),
    ],
    ids=lambda v: "no-sni" if v is None else (v if isinstance(v, str) else None),
)
def test_sni_picks_the_certificate(certs, px, name, tags):
    """Exact SANs, then `*.` one label deep (not the bare suffix, not two labels), case
    insensitive; anything else, and no SNI at all, the first certificate."""
    r = s_client(certs, name=name)
    assert r.handshake_ok, r
    assert r.cn in tags, f"SNI {name!r} got {r.cn!r}, wanted one of {sorted(tags)}"


@pytest.mark.parametrize(
    "args,tag",
    [
        (("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"), "tag-rsa-a"),
        (("-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"), "tag-ecdsa-ab"),
        (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), "tag-rsa-a"),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "tag-ecdsa-ab"),
    ],
    ids=["tls1.3-rsa", "tls1.3-ecdsa", "tls1.2-rsa", "tls1.2-ecdsa"],
)
def test_rsa_and_ecdsa_for_one_name_follow_the_client(certs, px, args, tag):
    """a.test has an RSA and an ECDSA certificate: a client that can only verify one kind of
    signature (or use one kind of TLS 1.2 suite) gets that one."""
    r = s_client(certs, *args, name="a.test")
    assert r.handshake_ok, f"no handshake for a client that can only take {tag}: {r!r}"
    assert r.cn == tag, f"{' '.join(args)} got {r.cn!r}, wanted {tag}"


def test_a_chain_file_verifies_against_the_root_alone(certs, px):
    """chain.crt holds the leaf and its intermediate; the client trusts only the root."""
    r = s_client(certs, "-verify_return_error", "-verify_hostname", "chain.test",
                 name="chain.test")
    assert r.handshake_ok and r.cn == "tag-chain", r
    assert "Verify return code: 0 (ok)" in r.out, r
    assert re.search(r"^\s*1 s:.*CN\s*=\s*tag-intermediate", r.out, re.M), (
        f"the intermediate was not sent: {r!r}")
    with TLSConn(certs, name="chain.test") as c:  # Python's verification too
        assert c.cn() == "tag-chain"
        assert c.request("GET", "/chain").status == 200


# =============================================================================================
# 3. Routing, round-robin and X-Forwarded-* over TLS


def test_each_host_is_routed_over_https_with_curl(certs, px, origins):
    """curl (which offers h2 and http/1.1) to each host: a.test to a, b.test round-robin over
    b1 and b2, any other name to the default service."""
    r = curl(certs, "a.test", "/one")
    assert (r.status, r.body) == (200, b"a /one"), r
    got = [curl(certs, "b.test", f"/rr/{i}").header("X-Origin") for i in range(6)]
    assert sorted(set(got)) == ["b1", "b2"] and min(got.count("b1"), got.count("b2")) >= 2, got
    r = curl(certs, "x.w.test", "/other")
    assert (r.status, r.body) == (200, b"d /other"), r


def test_each_app_is_served_over_https_with_curl(certs, start_app, start_px):
    """The real app behind TLS: its page names it and the Host it got."""
    start_app("app1", hp(APP))
    text = config(certs).replace(f'["{hp(O1)}"]', f'["{hp(APP)}"]')
    start_px(text)
    r = curl(certs, "a.test", "/api/info")
    assert r.status == 200, r
    info = r.json()
    assert info["app"] == "app1" and info["host"].split(":")[0] == "a.test", info


@pytest.mark.parametrize("listener,proto", [(TLS, "https"), (PLAIN, "http")],
                         ids=["tls", "plain"])
def test_x_forwarded_proto_and_port_name_the_listener(certs, px, origins, listener, proto):
    """Behind TLS the origin sees X-Forwarded-Proto https and the TLS listener's port; behind
    the plain listener http and its port."""
    if listener == TLS:
        with TLSConn(certs) as c:
            r = c.request("GET", "/xf")
    else:
        with PlainConn() as c:
            r = c.request("GET", "/xf")
    assert r.status == 200, r
    got = origins["a"].wait_requests(1)[-1]
    assert got.header("X-Forwarded-Proto") == proto, got
    assert got.header("X-Forwarded-Port") == str(listener[1]), got


# =============================================================================================
# 4. Session resumption


def resume(certs, tmp_path, version_flag, *extra):
    """A full handshake saving its session, then a second connection offering it; returns both
    s_client runs."""
    sess = tmp_path / f"sess{version_flag}"
    first = s_client_get(certs, version_flag, "-sess_out", sess, *extra)
    assert first.handshake_ok and not first.reused, first
    assert "HTTP/1.1 200" in first.out, first
    assert sess.exists() and sess.stat().st_size > 0, f"s_client saved no session: {first!r}"
    second = s_client_get(certs, version_flag, "-sess_in", sess, *extra)
    return first, second


@pytest.mark.parametrize("version_flag", ["-tls1_2", "-tls1_3"])
def test_a_session_is_resumed_on_a_second_connection(certs, px, tmp_path, version_flag):
    """TLS 1.2 with a session ticket, TLS 1.3 with its PSK ticket."""
    _, second = resume(certs, tmp_path, version_flag)
    assert second.reused, second
    assert "HTTP/1.1 200" in second.out, second


def test_tls12_session_ids_resume_within_a_worker(certs, origins, start_px, tmp_path):
    """No ticket (-no_ticket): the session ID, from the server's cache (one worker)."""
    start_px(config(certs, workers=1))
    _, second = resume(certs, tmp_path, "-tls1_2", "-no_ticket")
    assert second.reused, second


@pytest.mark.parametrize("version_flag", ["-tls1_2", "-tls1_3"])
def test_with_4_workers_every_resumption_is_reused(certs, origins, start_px, tmp_path,
                                                   version_flag):
    """20 connections offering one ticket land on various workers; every one is resumed, since
    the ticket keys are shared by all workers."""
    start_px(config(certs, workers=4))
    sess = tmp_path / "sess"
    first = s_client_get(certs, version_flag, "-sess_out", sess)
    assert first.handshake_ok and sess.exists(), first
    missed = []
    for i in range(20):
        r = s_client_get(certs, version_flag, "-sess_in", sess)
        assert "HTTP/1.1 200" in r.out, r
        if not r.reused:
            missed.append(i)
    assert not missed, f"connections {missed} of 20 were not resumed"


# =============================================================================================
# 5. SIGHUP reloads certificates


def test_sighup_swaps_a_certificate_and_keeps_open_tls_connections(certs, origins, start_px,
                                                                   tmp_path):
    """The files at the config's paths are replaced and SIGHUP sent: new handshakes get the new
    certificate, a keep-alive connection opened before goes on; then a broken file at the same
    path and SIGHUP: the second certificate keeps serving and stderr says the reload failed,
    naming the file."""
    live_crt, live_key = tmp_path / "live.crt", tmp_path / "live.key"

    def install(name):
        live_key.write_bytes(Path(certs.key(name)).read_bytes())
        live_crt.write_bytes(Path(certs.crt(name)).read_bytes())

    install("reload1")
    text = config(certs, cert_names=()).replace(
        "  certificates:\n",
        f"  certificates:\n    - cert: {live_crt}\n      key: {live_key}\n")
    p = start_px(text)

    def new_cn():
        with TLSConn(certs) as c:
            return c.cn()

    assert new_cn() == "tag-reload-1"
    with TLSConn(certs) as kept:
        assert kept.cn() == "tag-reload-1"
        assert kept.request("GET", "/before").status == 200
        install("reload2")
        os.kill(p.proc.pid, signal.SIGHUP)
        wait_until(lambda: new_cn() == "tag-reload-2", 5.0, "a new handshake with the new cert")
        r = kept.request("GET", "/after-reload")
        assert (r.status, r.body) == (200, b"a /after-reload"), r

        errors_before = len(p.errors())
        live_crt.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                             b"-----END CERTIFICATE-----\ngarbage\n")
        os.kill(p.proc.pid, signal.SIGHUP)
        wait_until(lambda: str(live_crt) in p.errors()[errors_before:], 5.0,
                   f"an error line naming {live_crt}:\n{p.errors()}")
        new = p.errors()[errors_before:]
        assert re.search(r"fail|error|keep", new, re.I), f"not said to have failed:\n{new}"
        assert_alive(p, "after a reload with a broken certificate")
        assert new_cn() == "tag-reload-2", "the broken file replaced the certificate serving"
        r = kept.request("GET", "/after-bad-reload")
        assert r.status == 200, r


# =============================================================================================
# 6. redirect_https and hsts, per route

REDIRECT_ROUTES = (
    {"host": "a.test", "service": "a", "redirect_https": "true", "hsts": "1y"},
    {"host": "b.test", "service": "b", "hsts": "1y"},
)


@pytest.fixture
def redirect_px(certs, origins, start_px):
    return start_px(config(certs, routes=REDIRECT_ROUTES))


@pytest.mark.parametrize("host", ["a.test:28800", "a.test"])
def test_plain_http_on_a_redirect_route_gets_308_to_https(redirect_px, origins, host):
    """Same host (without the port the request named), path and query, on the TLS listener's
    port (28843, not 443, so it is written); the origin never sees the request."""
    with PlainConn() as c:
        r = c.request("GET", "/p?q=1", host=host)
    assert r.status == 308, r
    assert r.header("Location") == f"https://a.test:{TLS[1]}/p?q=1", r
    assert not r.has("Strict-Transport-Security"), r
    assert origins["a"].requests == [], "a redirected request reached the origin"


def test_https_on_a_redirect_route_is_proxied_with_hsts(certs, redirect_px):
    """The same route over HTTPS is proxied, with Strict-Transport-Security (hsts: 1y)."""
    with TLSConn(certs) as c:
        r = c.request("GET", "/p?q=1")
    assert (r.status, r.body) == (200, b"a /p?q=1"), r
    assert r.header_all("Strict-Transport-Security") == ["max-age=31536000"], r


def test_plain_http_responses_carry_no_hsts(redirect_px):
    """b.test has hsts: 1y and no redirect: proxied over plain HTTP, without the header."""
    with PlainConn() as c:
        r = c.request("GET", "/plain", host="b.test")
    assert r.status == 200 and r.header("X-Origin") in ("b1", "b2"), r
    assert not r.has("Strict-Transport-Security"), r


def test_hsts_takes_any_duration(certs, origins, start_px):
    """hsts: 2h is max-age=7200."""
    start_px(config(certs, routes=({"host": "a.test", "service": "a", "hsts": "2h"},)))
    with TLSConn(certs) as c:
        r = c.request("GET", "/")
    assert r.header_all("Strict-Transport-Security") == ["max-age=7200"], r


# =============================================================================================
# 7. Handshakes that go wrong

SHORT_HANDSHAKE = "tls_handshake: 1s, client_header: 30s"


@pytest.fixture
def short_px(certs, origins, start_px):
    """portier with tls_handshake 1s (and client_header 30s, so that it cannot be what acts)."""
    return start_px(config(certs, timeouts=SHORT_HANDSHAKE))


def test_a_silent_tls_client_is_closed_after_tls_handshake(certs, short_px):
    """Connects and sends nothing: closed within 5 s (tls_handshake 1s; client_header is 30s)."""
    with raw_conn() as s:
        wait_closed(s, 5.0)
    assert_serves(certs, short_px, "after a silent client")


def test_half_a_client_hello_is_closed_after_tls_handshake(certs, short_px):
    """Sends the first half of a real ClientHello, then nothing: closed within 5 s."""
    c = BioClient(certs)
    try:
        hello = c.client_hello()
        c.sock.sendall(hello[: len(hello) // 2])
        wait_closed(c.sock, 5.0)
    finally:
        c.close()
    assert_serves(certs, short_px, "after half a ClientHello")


def test_a_client_that_stops_mid_handshake_is_closed(certs, short_px):
    """ClientHello sent, the server's flight read, then the client's Finished never sent."""
    c = BioClient(certs)
    try:
        c.sock.sendall(c.client_hello())
        while True:  # until the client would have its Finished to send
            c.feed()
            try:
                c.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if c.out.pending:
                    break
        wait_closed(c.sock, 5.0)
    finally:
        c.close()
    assert_serves(certs, short_px, "after a client stopped mid-handshake")


def test_a_client_that_resets_mid_handshake(certs, px):
    """ClientHello sent, the server's first bytes read, then a TCP reset: portier serves on."""
    c = BioClient(certs)
    try:
        c.sock.sendall(c.client_hello())
        c.feed()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        c.close()  # RST
    assert_serves(certs, px, "after a reset mid-handshake")


def test_plain_http_to_the_tls_port_gets_a_readable_400(certs, px):
    """A plain-text HTTP/1.1 400 whose body says what happened (as nginx does), then the
    close."""
    with raw_conn() as s:
        s.sendall(httpc.req("GET", "/", "a.test"))
        got = wait_closed(s, 5.0)
    parsed = httpc.parse_response(got)
    assert parsed is not None, f"no plain-text HTTP response before the close: {got[:300]!r}"
    r, rest = parsed
    assert (r.version, r.status) == ("HTTP/1.1", 400), r
    assert b"plain HTTP request was sent to HTTPS port" in r.body, r
    assert rest == b"", rest
    assert_serves(certs, px, "after plain HTTP on the TLS port")


GARBAGE = {
    "random": random.Random(11).randbytes(4096),
    "handshake-record-header": b"\x16\x03\x01\x02\x00" + random.Random(12).randbytes(4096),
    "handshake-record-bad-hello": b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c"
    + random.Random(13).randbytes(60),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_to_the_tls_port_is_closed(certs, short_px, kind):
    """Random bytes, a handshake record header followed by random bytes (a record bigger than
    what follows, so only tls_handshake can end it), a malformed ClientHello: each connection is
    closed within 5 s, and portier serves on."""
    with raw_conn() as s:
        try:
            s.sendall(GARBAGE[kind])
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed while we wrote: as good
        wait_closed(s, 5.0)
    assert_serves(certs, short_px, f"after {kind} garbage")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_a_request_in_the_same_write_as_the_last_handshake_message(certs, px, version):
    """Regression: portier reads ahead, so a request sent in one write with the client's Finished
    was read during the handshake, and waited (for a socket event that never came) until the
    client timed out. Here the Finished and the request always go in one write."""
    c = BioClient(certs, version=version, timeout=10.0)
    try:
        while True:
            try:
                c.obj.do_handshake()
                break  # done: the client's last flight is in c.out, not sent yet
            except ssl.SSLWantReadError:
                c.flush()
                c.feed()
        r = c.request(httpc.req("GET", "/together", "a.test"))  # Finished + request: one write
    finally:
        c.close()
    assert (r.status, r.body) == (200, b"a /together"), r


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_a_client_hello_in_1_byte_writes_completes(certs, px, version):
    """Every byte the client sends during the handshake is a write (and a TCP segment) of its
    own; then a request works on the connection."""
    c = BioClient(certs, version=version, timeout=10.0)
    try:
        c.handshake(step=1, pause=0.001)
        assert c.obj.version() == version.name.replace("v1_", "v1."), c.obj.version()
        r = c.request(httpc.req("GET", "/bytewise", "a.test"))
    finally:
        c.close()
    assert (r.status, r.body) == (200, b"a /bytewise"), r


def test_a_renegotiation_attempt_is_handled(certs, px, tmp_path):
    """TLS 1.2 s_client sends "R" (renegotiate), then a request: either the connection goes on
    and the request is answered, or portier ends it; never a hang or a crash."""
    argv = ["openssl", "s_client", "-connect", hp(TLS), "-CAfile", certs.ca, "-servername",
            "a.test", "-tls1_2"]
    out_path = tmp_path / "s_client.out"
    with open(out_path, "wb") as out:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    try:
        def output():
            return out_path.read_text(errors="replace")

        wait_until(lambda: "Verify return code" in output() or p.poll() is not None, 10.0,
                   "the first handshake")
        assert p.poll() is None, output()
        p.stdin.write(b"R\n")
        p.stdin.flush()
        wait_until(lambda: "RENEGOTIATING" in output() or p.poll() is not None, 5.0,
                   "s_client starting the renegotiation")
        time.sleep(0.3)  # portier's answer to it
        if p.poll() is None:
            try:
                p.stdin.write(httpc.req("GET", "/after-r", "a.test"))
                p.stdin.flush()
            except BrokenPipeError:
                pass
        wait_until(lambda: "HTTP/1.1 200" in output() or p.poll() is not None, 10.0,
                   f"an answer after the renegotiation, or the close:\n{output()}")
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(5)
        p.stdin.close()
    assert "RENEGOTIATING" in output(), output()
    assert_serves(certs, px, "after a renegotiation attempt")


# =============================================================================================
# 8. Load: 500 concurrent clients, big transfers


def test_500_concurrent_tls_clients_are_all_answered(certs, start_app, start_px):
    """500 TLS connections open at once (a barrier holds them), then each sends a request to
    app1: every one answered 200."""
    n = 500
    start_app("app1", hp(APP))
    start_px(config(certs, extra="limits: { max_connections: 2000 }").replace(
        f'["{hp(O1)}"]', f'["{hp(APP)}"]'))
    barrier = threading.Barrier(n, timeout=60)
    results: List[object] = [None] * n
    ctx = context(certs)

    def one(i):
        try:
            with TLSConn(certs, ctx=ctx, timeout=60) as c:
                barrier.wait()
                r = c.request("GET", f"/api/info?i={i}")
                results[i] = r.status
        except Exception as e:  # noqa: BLE001 - counted below
            results[i] = repr(e)
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    assert alive == 0, f"{alive} client threads still ran after 120s"
    bad = [(i, r) for i, r in enumerate(results) if r != 200]
    assert not bad, f"{len(bad)} of {n} clients failed, e.g. {bad[:5]}"


def test_a_keep_alive_tls_connection_works_after_its_buffers_are_given_back(certs, px, origins):
    """After a second between requests a TLS connection gives OpenSSL's record buffers back;
    its next requests (one alone, then two pipelined) are read and answered as before."""
    with TLSConn(certs) as c:
        assert c.request("GET", "/first").body == b"a /first"
        time.sleep(1.3)
        assert c.request("GET", "/after-idle").body == b"a /after-idle"
        time.sleep(1.3)
        c.sock.sendall(b"GET /p1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
                       b"GET /p2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert [c.read_response().body for _ in range(2)] == [b"a /p1", b"a /p2"]


@pytest.mark.skipif(ASAN, reason="ASan's quarantine keeps freed memory from being reused")
def test_idle_tls_connections_do_not_keep_their_record_buffers(certs, backends, start_px):
    """Record buffers are kept between requests that follow closely and given back after a
    second idle. Two waves of n connections, each with one request that fills both buffers (an
    8 KiB head in, a 64 KiB body out) and then left open: the second wave's buffers reuse the
    memory the first wave gave back, so it costs portier far less RSS than the first."""
    n = 150
    body = b"x" * (64 << 10)
    for a in (O1, O2, O3, O4):
        backends(a, lambda r, conn: fake.response(200, body))
    p = start_px(config(certs, workers=1, extra="limits: { max_connections: 1000 }"))
    pid = p.proc.pid
    ctx = context(certs)
    held: List[TLSConn] = []

    def wave():
        before = procs.rss(pid)
        for _ in range(n):
            c = TLSConn(certs, ctx=ctx)
            held.append(c)
            r = c.request("GET", "/big", headers=[("X-Pad", "p" * 8000)])
            assert r.status == 200 and len(r.body) == len(body)
        time.sleep(1.5)  # every connection of the wave idle for over a second
        return procs.rss(pid) - before

    try:
        first = wave()
        second = wave()
    finally:
        for c in held:
            c.close()
    assert first > n * (16 << 10), f"the first wave grew RSS by {first} bytes only"
    assert second < first * 0.6, f"RSS grew by {first} bytes, then by {second} for as many again"


# --- big transfers: a raw origin that streams, and portier's RSS --------------------------------

BIG = 256 * MIB
RSS_SLACK = 64 * MIB


def RssSampler(pid):
    """procs.RssSampler, with this file's slack."""
    return procs.RssSampler(pid, RSS_SLACK)


@pytest.fixture
def small_quarantine(monkeypatch):
    """Under ASan freed memory waits in a quarantine (256 MiB by default) before reuse, so RSS
    would grow with the bytes passed through even when portier holds none of them."""
    if ASAN:
        opts = os.environ.get("ASAN_OPTIONS", procs.SANITIZER_ENV["ASAN_OPTIONS"])
        monkeypatch.setenv("ASAN_OPTIONS", opts + ":quarantine_size_mb=4")


def pattern_blocks(total):
    """total bytes (whole MiB) of pseudo-random data, 1 MiB at a time, each block numbered so
    that a lost, repeated or reordered block changes the hash."""
    base = random.Random(20261203).randbytes(MIB)
    for i in range(total // MIB):
        yield struct.pack(">Q", i) + base[8:]


def pattern_digest(total):
    h = hashlib.sha256()
    for b in pattern_blocks(total):
        h.update(b)
    return h.hexdigest()


Stream = fake.Stream


class RawOrigin(fake.ThreadedOrigin):
    """Accepts on addr; each connection runs handler(origin, sock, stream) in a thread of its
    own (conftest's raw_origins fixture makes these)."""

    def __init__(self, addr, handler):
        self.handler = handler
        self.digests: List[str] = []
        self.received = 0  # request body bytes received, all connections
        self.sent = 0  # response body bytes sent
        super().__init__(addr, backlog=64)

    def adopt(self, sock, index):
        sock.settimeout(30)
        return sock

    def serve(self, conn):
        self.handler(self, conn, Stream(conn))

    def describe(self, conn, exc):
        return traceback.format_exc()


def big_handler(origin, sock, stream):
    """/up: hashes the request body and answers "HEX LENGTH"; /down: sends BIG pattern bytes;
    anything else: "ok"."""
    while True:
        req = stream.head()
        if req is None:
            return
        method, target, headers = req
        h = hashlib.sha256()

        def sink(data):
            h.update(data)
            origin.received += len(data)

        n = stream.body(headers, sink)
        if target == "/up":
            origin.digests.append(h.hexdigest())
            body = f"{h.hexdigest()} {n}".encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif target == "/down":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
            for block in pattern_blocks(BIG):
                sock.sendall(block)
                origin.sent += len(block)
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def big_px(certs, raw_origins, small_quarantine, start_px):
    """portier in front of big_handler on O1 (route a.test), warmed up by a first TLS request
    so that RSS is measured with the TLS contexts and pools in place."""
    o = raw_origins(O1, big_handler)
    p = start_px(config(certs))
    with TLSConn(certs) as c:
        assert c.request("GET", "/warm").status == 200
    return p, o


def test_256_mib_upload_over_tls_arrives_whole_in_bounded_memory(certs, big_px):
    """The origin hashes the body it gets: the same SHA-256 as what the client sent, and
    portier's RSS stays within RSS_SLACK of what it was before."""
    p, o = big_px
    expect = pattern_digest(BIG)
    sent = 0
    with RssSampler(p.proc.pid) as mem, TLSConn(certs, timeout=30) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % BIG)
        try:
            for block in pattern_blocks(BIG):
                c.send(block)
                sent += len(block)
            r = c.read_response("POST")
        except socket.timeout:
            pytest.fail(f"stalled for 30 s: the client had written {sent} of {BIG} body bytes "
                        f"(or all of them and waits for the answer), the origin received "
                        f"{o.received}", pytrace=False)
    assert not o.errors, o.errors[0]
    assert r.status == 200, r
    assert r.body.decode() == f"{expect} {BIG}", "the origin got other bytes than were sent"
    mem.check(f"a {BIG // MIB} MiB upload over TLS")


def test_256_mib_download_over_tls_arrives_whole_in_bounded_memory(certs, big_px):
    """The client hashes what it gets: the SHA-256 of what the origin sent, in bounded RSS."""
    p, o = big_px
    expect = pattern_digest(BIG)
    h = hashlib.sha256()
    buf = bytearray(MIB)
    view = memoryview(buf)
    with RssSampler(p.proc.pid) as mem, TLSConn(certs, timeout=30) as c:
        c.send(httpc.req("GET", "/down", "a.test"))
        r = c.read_head()
        assert r.status == 200 and r.header("Content-Length") == str(BIG), r
        h.update(c.buf)
        got = len(c.buf)
        while got < BIG:
            try:
                n = c.sock.recv_into(view, min(MIB, BIG - got))
            except socket.timeout:
                pytest.fail(f"stalled for 30 s: the client got {got} of {BIG} bytes, the origin "
                            f"had sent {o.sent}", pytrace=False)
            assert n, f"EOF after {got} of {BIG} bytes"
            h.update(view[:n])
            got += n
    assert not o.errors, o.errors[0]
    assert got == BIG and h.hexdigest() == expect, "the client got other bytes than were sent"
    mem.check(f"a {BIG // MIB} MiB download over TLS")


# =============================================================================================
# 9. portier -t and certificate files

ERROR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$")


def position(text, token):
    """(line, col), 1-based, of the first occurrence of token in text."""
    i = text.index(token)
    return text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1


def check_text(certs, pairs, routes=("a.test",), default=True):
    """A config for -t: one TLS listener, the (cert, key) paths of pairs, routes to service a."""
    out = ["listen:", f'  - address: "{hp(TLS)}"', "    tls: true", "tls:", "  certificates:"]
    for crt, key in pairs:
        out += [f"    - cert: {crt}", f"      key: {key}"]
    out.append("routes:")
    for host in routes:
        out += [f'  - host: "{host}"', "    service: a"]
    if default:
        out.append("default_service: a")
    out += ["services:", f'  a:\n    servers: ["{hp(O1)}"]']
    return "\n".join(out) + "\n"


def run_check(portier_bin, path, timeout=10.0):
    """`portier -t -c path` with stdin /dev/null and a pseudo-terminal as its controlling
    terminal, so that a passphrase prompt (which OpenSSL writes to and reads from /dev/tty, not
    stdin) would show there and hang until the timeout. Returns (rc, stderr, what the terminal
    got)."""
    master, slave = os.openpty()
    tty_out = b""
    try:
        p = subprocess.Popen(
            [str(portier_bin), "-t", "-c", str(path)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=(slave,), preexec_fn=lambda fd=slave: fcntl.ioctl(fd, termios.TIOCSCTTY, 0),
            env=procs._child_env({}),
        )
        os.close(slave)
        slave = -1
        try:
            out, err = p.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            hung = True
        os.set_blocking(master, False)
        try:
            while True:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                tty_out += chunk
        except (BlockingIOError, OSError):
            pass
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    err = err.decode(errors="replace")
    procs.check_sanitizers(f"portier -t -c {path}", err)
    assert not hung, (f"portier -t -c {path} still ran after {timeout}s (a passphrase prompt?); "
                      f"the terminal got {tty_out!r}; stderr:\n{err}")
    return p.returncode, err, tty_out.decode(errors="replace")


def diagnostics(err, path):
    """The FILE:LINE:COL: lines of err for FILE path, as (line, col, message)."""
    out = []
    for raw in err.splitlines():
        m = ERROR_LINE.match(raw)
        if m and m["file"] == str(path):
            out.append((int(m["line"]), int(m["col"]), m["msg"]))
    return out


def value_position(text, key, value):
    """(line, col) of value in the first `key: value` of text."""
    line, col = position(text, f"{key}: {value}")
    return line, col + len(key) + 2


def refusal_case(certs, tmp_path, case):
    """(cert path, key path, which of the two the error is about) for each -t refusal. No path
    here is in check_text's first entry, so each `cert: X` / `key: X` of the second is unique."""
    ok_crt, ok_key = certs.crt("ecdsa"), certs.key("ecdsa")
    if case == "missing-cert":
        return str(tmp_path / "missing.crt"), ok_key, "cert"
    if case == "missing-key":
        return ok_crt, str(tmp_path / "missing.key"), "key"
    if case == "unreadable-cert":
        if os.geteuid() == 0:
            pytest.skip("root reads a file of mode 000: run as another user to test this case")
        path = tmp_path / "unreadable.crt"
        path.write_bytes(Path(ok_crt).read_bytes())
        path.chmod(0)
        return str(path), ok_key, "cert"
    if case == "directory-as-cert":  # unreadable as a certificate, even by root
        path = tmp_path / "adir.crt"
        path.mkdir()
        return str(path), ok_key, "cert"
    if case == "key-of-another-cert":
        return ok_crt, certs.key("wild"), "key"
    if case == "not-a-certificate":
        return str(certs.dir / "notcert.pem"), ok_key, "cert"
    if case == "encrypted-key":
        return ok_crt, str(certs.dir / "encrypted.key"), "key"
    raise AssertionError(case)


REFUSALS = ["missing-cert", "missing-key", "unreadable-cert", "directory-as-cert",
            "key-of-another-cert", "not-a-certificate", "encrypted-key"]


@pytest.mark.parametrize("case", REFUSALS)
def test_check_refuses_a_bad_certificate_file_at_its_value(portier_bin, certs, tmp_path, case):
    """exit 1 and `FILE:LINE:COL: message` at the offending cert: or key: value, the message
    naming the file; an encrypted key is refused at once, with no passphrase prompt."""
    crt, key, which = refusal_case(certs, tmp_path, case)
    bad = crt if which == "cert" else key
    text = check_text(certs, [(certs.crt("default"), certs.key("default")), (crt, key)])
    path = tmp_path / "check.yaml"
    path.write_text(text)
    rc, err, tty = run_check(portier_bin, path)
    assert rc == 1, f"-t accepted {case}:\n{err}"
    assert "pass phrase" not in tty.lower(), f"a passphrase prompt on the terminal: {tty!r}"
    want = value_position(text, which, bad)
    errors = [d for d in diagnostics(err, path) if not d[2].startswith("warning:")]
    assert any((line, col) == want and bad in msg for line, col, msg in errors), (
        f"wanted an error at {want[0]}:{want[1]} naming {bad}; stderr:\n{err}")


def warning_case(certs, name):
    return check_text(certs, [(certs.crt("default"), certs.key("default")),
                              (certs.crt(name), certs.key(name))])


@pytest.mark.parametrize("name,word", [("expired", "expired"), ("future", None)],
                         ids=["expired", "not-yet-valid"])
def test_check_warns_about_a_certificate_out_of_its_validity(portier_bin, certs, tmp_path, name,
                                                             word):
    """exit 0 with a `warning:` line at the certificate's line (expired: saying so; not yet
    valid: the issue's wording); none about the good default certificate."""
    text = warning_case(certs, name)
    path = tmp_path / "check.yaml"
    path.write_text(text)
    rc, err, _ = run_check(portier_bin, path)
    assert rc == 0, f"-t refused an {name} certificate (a warning, not an error):\n{err}"
    line = position(text, certs.crt(name))[0]
    warnings = [msg for ln, _, msg in diagnostics(err, path)
                if ln == line and msg.startswith("warning:")]
    assert warnings, f"no warning at line {line} ({certs.crt(name)}):\n{err}"
    if word:
        assert any(word in w.lower() for w in warnings), warnings
    default_line = position(text, certs.crt("default"))[0]
    assert not [d for d in diagnostics(err, path) if d[0] == default_line], err


@pytest.mark.parametrize(
    "routes,default,warned",
    [
        (("a.test",), False, True),
        (("a.test",), True, False),
        (("a.test", "x.w.test"), False, False),
        (("a.test", "*.w.test"), False, False),
    ],
    ids=["no-route", "default-service", "route-under-the-wildcard", "wildcard-route"],
)
def test_check_warns_about_a_certificate_no_route_uses(portier_bin, certs, tmp_path, routes,
                                                       default, warned):
    """The *.w.test certificate: warned about when no route's host is one of its names and
    there is no default_service (which serves every name)."""
    text = check_text(certs, [(certs.crt("ecdsa"), certs.key("ecdsa")),
                              (certs.crt("wild"), certs.key("wild"))],
                      routes=routes, default=default)
    path = tmp_path / "check.yaml"
    path.write_text(text)
    rc, err, _ = run_check(portier_bin, path)
    assert rc == 0, err
    line = position(text, certs.crt("wild"))[0]
    got = [msg for ln, _, msg in diagnostics(err, path)
           if ln == line and msg.startswith("warning:")]
    assert bool(got) == warned, f"warnings at line {line} (*.w.test): {got}\n{err}"
    ecdsa_line = position(text, certs.crt("ecdsa"))[0]
    assert not [d for d in diagnostics(err, path) if d[0] == ecdsa_line], (
        f"a warning about the a.test certificate, which a route uses:\n{err}")


def test_check_accepts_the_good_certificates(portier_bin, certs, tmp_path):
    """The config every test above runs on passes -t without an error or a certificate
    warning."""
    text = config(certs)
    path = tmp_path / "check.yaml"
    path.write_text(text)
    rc, err, _ = run_check(portier_bin, path)
    assert rc == 0, err
    lines = {position(text, certs.crt(n))[0] for n in DEFAULT_CERTS}
    assert not [d for d in diagnostics(err, path) if d[0] in lines], err
