"""Black-box tests of portier's command line: -t (config check), -v, usage, and startup failures.

DESIGN.md, "portier's command line" and "Configuration": `portier -t -c FILE` exits 0 for a good
config, or 1 with one `FILE:LINE:COL: message` line on stderr for EVERY error (FILE as given, LINE
and COL 1-based, pointing at the offending value, or key for an unknown key). Every expected
position here is computed from the YAML text itself (where the offending token is), never copied
from portier's output.

Warnings (an expired certificate, say) are `FILE:LINE:COL: warning: message` lines on stderr;
they do not make -t fail.

Ports: 127.0.0.1:28250-28259 (this file's own listeners and portiers).
"""

import re
import socket
import subprocess
import time

import pytest

import procs
from conftest import REPO

RUN_TIMEOUT = 5.0
ERROR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$")
WARNING = "warning: "

# A config using most keys, valid as it stands; each error case below changes one piece of it.
BASE = """\
listen:
  - address: "127.0.0.1:28250"
admin: "127.0.0.1:28259"
workers: 2
routes:
  - host: app1.com
    service: app1
  - host: app2.com
    path: /api
    service: app2
  - host: "*.example.com"
    service: app2
default_service: app3
services:
  app1:
    servers: ["127.0.0.21:8080"]
  app2:
    servers: ["127.0.0.22:8080", "127.0.0.23:8080", "127.0.0.24:8080"]
  app3:
    servers: ["127.0.0.25:8080"]
    health_check: { path: /healthz, interval: 5s, timeout: 1s }
  app4:
    dns: "app4.apps.svc.cluster.local:8080"
resolvers: ["127.0.0.53"]
trusted_proxies: ["10.0.0.0/8", "127.0.0.1"]
timeouts:
  client_header: 10s
  client_body: 30s
  client_idle: 60s
  upstream_connect: 500ms
  upstream_response: 1m
  shutdown_grace: 0s
limits: { max_header_bytes: 16k, max_body_bytes: 0, max_connections: 10000 }
access_log: stdout
access_log_format: json
"""


def run_portier(portier_bin, args, cwd=None, timeout=RUN_TIMEOUT):
    """Runs portier to completion; returns (returncode, stdout, stderr). Fails past timeout."""
    try:
        r = subprocess.run(
            [str(portier_bin)] + [str(a) for a in args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=procs._child_env({}),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"portier {args} still ran after {timeout}s (killed)")
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    procs.check_sanitizers(f"portier {args}", err)
    return r.returncode, out, err


def position(text, token, nth=1):
    """(line, col), 1-based, of the nth occurrence of token in text."""
    i = -1
    for _ in range(nth):
        i = text.index(token, i + 1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def error_lines(stderr, fname):
    """The stderr lines, each parsed as FILE:LINE:COL: message; fails on any other line. Warnings
    (FILE:LINE:COL: warning: message) are not errors and are left out."""
    return [e for e in diagnostic_lines(stderr, fname) if not e[2].startswith(WARNING)]


def warning_lines(stderr, fname):
    """The warnings among the stderr lines, as (line, col, message without "warning: ")."""
    return [(line, col, msg[len(WARNING):]) for line, col, msg in diagnostic_lines(stderr, fname)
            if msg.startswith(WARNING)]


def diagnostic_lines(stderr, fname):
    """Every stderr line parsed as FILE:LINE:COL: message; fails on any other line."""
    out = []
    for raw in stderr.splitlines():
        if not raw.strip():
            continue
        m = ERROR_LINE.match(raw)
        assert m, f"not a FILE:LINE:COL: message line: {raw!r}\nstderr:\n{stderr}"
        assert m["file"] == fname, f"FILE should be {fname!r} as given: {raw!r}"
        out.append((int(m["line"]), int(m["col"]), m["msg"]))
    return out


def check(portier_bin, tmp_path, text, name="portier.yaml"):
    """Writes text to tmp_path/name and runs `portier -t -c name` in tmp_path (a relative FILE)."""
    (tmp_path / name).write_text(text)
    return run_portier(portier_bin, ["-t", "-c", name], cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# -t on good configs


# Where the shipped configs read their certificate: make run's (scripts/certs.sh makes it); the
# cluster's names none (its certificates come from the Ingresses' Secrets, through the API).
SHIPPED_CERTS = {
    "local.yaml": ("build/certs/server.crt", "build/certs/server.key"),
    "cluster.yaml": None,
}


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory):
    """A CA and certificate made by scripts/certs.sh, as make run and the VM make them."""
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([str(REPO / "scripts" / "certs.sh"), str(d)], check=True, capture_output=True,
                   timeout=60)
    return d


def shipped(name, certs_dir, tmp_path):
    """config/NAME as shipped, but with its certificate paths pointing at certs_dir (a clean clone
    has no build/certs, and the pod's mount exists only in the pod)."""
    text = (REPO / "config" / name).read_text()
    path = tmp_path / name
    if SHIPPED_CERTS[name] is None:
        assert "cert:" not in text, f"{name} names a certificate file now"
        path.write_text(text)
        return path
    cert, key = SHIPPED_CERTS[name]
    assert cert in text and key in text, f"{name} no longer reads {cert} and {key}"
    path.write_text(text.replace(cert, str(certs_dir / "server.crt"))
                    .replace(key, str(certs_dir / "server.key")))
    return path


def test_check_accepts_the_shipped_local_config(portier_bin, certs_dir, tmp_path):
    path = shipped("local.yaml", certs_dir, tmp_path)
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 0, f"portier -t -c {path} exited {rc}:\n{err}"
    assert not any(ERROR_LINE.match(line) for line in err.splitlines()), err


@pytest.mark.parametrize("name", ["cluster.yaml", "local.yaml"])
def test_check_accepts_the_shipped_configs_without_warnings(portier_bin, name, certs_dir,
                                                            tmp_path):
    path = shipped(name, certs_dir, tmp_path)
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 0, f"portier -t -c {path} exited {rc}:\n{err}"
    assert err.strip() == f"{path}: ok", err


def test_check_accepts_a_config_using_every_key(portier_bin, tmp_path):
    rc, out, err = check(portier_bin, tmp_path, BASE)
    assert rc == 0, f"a valid config was refused:\n{err}"


def test_check_accepts_quoted_scalars_every_unit_and_ipv6(portier_bin, tmp_path):
    """Scalars may be quoted; sizes take k/m/g, durations ms/s/m/h; listen may be IPv6."""
    text = (
        BASE.replace("workers: 2", 'workers: "2"')
        .replace('  - address: "127.0.0.1:28250"', '  - address: "[::1]:28250"')
        .replace("client_header: 10s", 'client_header: "10s"')
        .replace("client_idle: 60s", "client_idle: 1h")
        .replace("upstream_response: 1m", "upstream_response: 90000ms")
        .replace("max_header_bytes: 16k", "max_header_bytes: 1m")
        .replace("max_body_bytes: 0", 'max_body_bytes: "2g"')
    )
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 0, err
    rc, out, err = check(portier_bin, tmp_path, text.replace('workers: "2"', "workers: auto"))
    assert rc == 0, err


def test_check_accepts_a_minimal_config(portier_bin, tmp_path):
    """Every key has a default; one service behind default_service is all that is needed."""
    text = 'default_service: s\nservices:\n  s:\n    servers: ["127.0.0.1:8080"]\n'
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 0, err


def test_check_does_not_bind_the_listen_address(portier_bin, tmp_path):
    """-t checks the file; it must not need (or take) the addresses a running portier owns."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 28250))
        s.listen(1)
        rc, out, err = check(portier_bin, tmp_path, BASE)
    assert rc == 0, err


# ---------------------------------------------------------------------------------------------
# -t on bad configs: one error each, at the right place


# (id, text replaced in BASE, its replacement, where the error must point (alternatives), a word
# the message must contain (case-insensitive))
ONE_ERROR_CASES = [
    ("unknown-top-key", "listen:\n", "listn:\n", ["listn"], "listn"),
    ("unknown-nested-key", "client_idle: 60s", "client_idel: 60s", ["client_idel"], "client_idel"),
    ("scalar-expects-mapping", "limits: { max_header_bytes: 16k, max_body_bytes: 0, "
     "max_connections: 10000 }", "limits: 16k", ["16k"], "limits"),
    ("sequence-for-a-scalar", "workers: 2", "workers: [2]", ["[2]"], "workers"),
    ("mapping-for-a-sequence", 'servers: ["127.0.0.21:8080"]', "servers: { a: 1 }",
     ["{ a: 1 }"], "servers"),
    ("workers-not-a-number", "workers: 2", "workers: many", ["many"], "many"),
    ("bad-duration-unit", "client_idle: 60s", "client_idle: 10x", ["10x"], "10x"),
    ("bad-duration-no-number", "upstream_connect: 500ms", "upstream_connect: ms",
     ["ms\n  upstream_response"], "upstream_connect"),
    ("bad-size-unit", "max_header_bytes: 16k", "max_header_bytes: 12q", ["12q"], "12q"),
    ("bad-size-negative", "max_body_bytes: 0", "max_body_bytes: -5", ["-5"], "-5"),
    ("route-to-undefined-service", "    service: app1\n", "    service: nope\n", ["nope"], "nope"),
    ("default-to-undefined-service", "default_service: app3", "default_service: nope", ["nope"],
     "nope"),
    ("duplicate-host-and-path", "  - host: app2.com\n    path: /api\n",
     "  - host: APP1.com.\n    path: /\n", ["APP1.com.", "/\n"], "app1.com"),
    ("listen-port-out-of-range", '"127.0.0.1:28250"', '"127.0.0.1:99999"', ['"127.0.0.1:99999"'],
     "99999"),
    ("listen-not-an-address", '"127.0.0.1:28250"', '"nowhere"', ['"nowhere"'], "nowhere"),
    ("server-bad-ip", '"127.0.0.21:8080"', '"127.0.0.300:8080"', ['"127.0.0.300:8080"'],
     "127.0.0.300"),
    ("admin-bad-address", 'admin: "127.0.0.1:28259"', 'admin: "127.0.0.1:"',
     ['"127.0.0.1:"'], "admin"),
    ("trusted-proxy-bad-cidr", '"10.0.0.0/8"', '"10.0.0.0/33"', ['"10.0.0.0/33"'], "10.0.0.0/33"),
    ("service-with-empty-servers", 'servers: ["127.0.0.25:8080"]', "servers: []",
     ["[]", "app3:"], "app3"),
    ("service-with-neither-servers-nor-dns",
     '  app1:\n    servers: ["127.0.0.21:8080"]\n', "  app1: {}\n", ["{}", "app1:"], "app1"),
    ("access-log-format-unknown", "access_log_format: json", "access_log_format: xml", ["xml"],
     "xml"),
    ("duplicate-key", "workers: 2\n", "workers: 2\nworkers: 3\n", ["workers: 3", "3\nroutes"],
     "workers"),
    ("path-without-slash", "path: /api", "path: api", ["api\n"], "path"),
    ("bad-wildcard-host", '"*.example.com"', '"a*b.example.com"', ['"a*b.example.com"'], "a*b"),
    ("workers-zero", "workers: 2", "workers: 0", ["0\nroutes"], "workers"),
    ("workers-too-many", "workers: 2", "workers: 100000", ["100000"], "workers"),
    ("max-connections-zero", "max_connections: 10000", "max_connections: 0", ["0 }"],
     "max_connections"),
    ("size-overflow", "max_body_bytes: 0", "max_body_bytes: 99999999999999999999g",
     ["99999999999999999999g"], "max_body_bytes"),
    ("duration-overflow", "client_idle: 60s", "client_idle: 99999999999999999999h",
     ["99999999999999999999h"], "client_idle"),
    ("zero-connect-timeout", "upstream_connect: 500ms", "upstream_connect: 0s",
     ["0s\n  upstream_response"],
     "upstream_connect"),
    ("bad-service-name", "  app4:\n", '  "app 4":\n', ['"app 4"'], "app 4"),
    ("no-listeners", 'listen:\n  - address: "127.0.0.1:28250"\n', "listen: []\n", ["[]"],
     "listen"),
    ("servers-and-dns", '    dns: "app4.apps.svc.cluster.local:8080"\n',
     '    dns: "app4.apps.svc.cluster.local:8080"\n    servers: ["127.0.0.1:8080"]\n',
     ["app4:", "dns:", "servers:", '"app4.apps', '["127.0.0.1:8080"]'], "app4"),
    ("bad-health-interval", "interval: 5s", "interval: soon", ["soon"], "soon"),
    # Absurd values: accepted once, each would make every request fail or a start refuse.
    ("max-header-bytes-under-1k", "max_header_bytes: 16k", "max_header_bytes: 1023", ["1023"],
     "max_header_bytes"),
    ("client-body-zero", "client_body: 30s", "client_body: 0s", ["0s\n  client_idle"],
     "client_body"),
    ("client-header-zero", "client_header: 10s", "client_header: 0ms", ["0ms"], "client_header"),
    ("health-interval-under-100ms", "interval: 5s", "interval: 50ms", ["50ms"], "interval"),
    ("health-timeout-longer-than-interval", "timeout: 1s", "timeout: 6s", ["6s }"], "timeout"),
    ("health-timeout-zero", "timeout: 1s", "timeout: 0s", ["0s }"], "timeout"),
    ("health-path-with-a-query", "path: /healthz", "path: /healthz?full=1", ["/healthz?full=1"],
     "/healthz?full=1"),
    ("health-path-too-long", "path: /healthz", "path: /" + "h" * 1024, ["/hhh"], "path"),
    ("route-same-path-but-a-trailing-slash", '  - host: "*.example.com"\n',
     '  - host: app2.com\n    path: /api/\n    service: app1\n  - host: "*.example.com"\n',
     ["app2.com\n    path: /api/"], "/api/"),
    ("duplicate-resolver", 'resolvers: ["127.0.0.53"]', 'resolvers: ["127.0.0.53", "127.0.0.53:53"]',
     ['"127.0.0.53:53"'], "127.0.0.53"),
    ("listeners-overlap", '  - address: "127.0.0.1:28250"\n',
     '  - address: "127.0.0.1:28250"\n  - address: "0.0.0.0:28250"\n', ['"0.0.0.0:28250"'],
     "overlaps"),
    ("access-log-path-too-long", "access_log: stdout", "access_log: /tmp/" + "a" * 4100,
     ["/tmp/aaa"], "access_log"),
    # The top-level mapping is the first level, so the 64th '[' is the 65th level.
    ("yaml-nested-too-deep", "workers: 2", "workers: " + "[" * 64 + "]" * 64, ["[" + "]" * 64],
     "nested deeper than 64 levels"),
]


@pytest.mark.parametrize(
    "old,new,at,word", [c[1:] for c in ONE_ERROR_CASES], ids=[c[0] for c in ONE_ERROR_CASES]
)
def test_check_reports_one_error_at_its_place(portier_bin, tmp_path, old, new, at, word):
    assert BASE.count(old) >= 1, old
    text = BASE.replace(old, new, 1)
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 1, f"portier -t accepted (or crashed on) a bad config: rc {rc}\n{err}"
    errors = error_lines(err, "portier.yaml")
    assert len(errors) == 1, f"expected exactly one error line:\n{err}"
    line, col, msg = errors[0]
    allowed = [position(text, tok) for tok in at]
    assert (line, col) in allowed, f"error at {line}:{col}, expected one of {allowed}: {msg}"
    assert word.lower() in msg.lower(), f"the message should name {word!r}: {msg}"


def test_check_reports_every_error_of_a_file_in_file_order(portier_bin, tmp_path):
    text = """\
listn:
  - address: "127.0.0.1:28250"
workers: many
timeouts: { client_idle: 10x, client_header: 5s }
limits: { max_header_bytes: 12q }
routes:
  - host: app1.com
    service: nope
  - host: app2.com
    service: app2
  - host: APP2.com
    service: app2
default_service: app2
services:
  app2:
    servers: ["127.0.0.300:8080", "127.0.0.22:8080"]
  empty:
    servers: []
"""
    rc, out, err = check(portier_bin, tmp_path, text, name="several.yaml")
    assert rc == 1, err
    errors = error_lines(err, "several.yaml")
    expected = [
        (position(text, "listn"), "listn"),
        (position(text, "many"), "many"),
        (position(text, "10x"), "10x"),
        (position(text, "12q"), "12q"),
        (position(text, "nope"), "nope"),
        (position(text, "APP2.com"), "app2.com"),
        (position(text, '"127.0.0.300:8080"'), "127.0.0.300"),
    ]
    got = [(line, col) for line, col, _ in errors]
    # The empty service: at its servers value or at its name.
    empty_at = {position(text, "[]"), position(text, "empty:")}
    assert len(errors) == len(expected) + 1, f"expected {len(expected) + 1} errors:\n{err}"
    assert got == sorted(got), f"errors not in file order:\n{err}"
    for (pos, word), (line, col, msg) in zip(expected, errors):
        assert (line, col) == pos and word in msg.lower(), (
            f"expected an error at {pos[0]}:{pos[1]} naming {word!r}, got {line}:{col}: {msg}"
            f"\nall:\n{err}"
        )
    assert (errors[-1][0], errors[-1][1]) in empty_at, err


def test_check_reports_errors_with_the_path_as_given(portier_bin, tmp_path):
    """FILE is exactly what -c was given: an absolute path stays absolute."""
    path = tmp_path / "abs.yaml"
    path.write_text(BASE.replace("workers: 2", "workers: many"))
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 1
    (line, col, msg), = error_lines(err, str(path))
    assert (line, col) == position(path.read_text(), "many")


def test_check_reports_a_yaml_syntax_error_with_its_position(portier_bin, tmp_path):
    text = BASE.replace("workers: 2\n", "workers: [2\n")
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 1, err
    errors = error_lines(err, "portier.yaml")
    assert errors, err
    # libyaml notices an unclosed flow sequence at or after where it opens, never before.
    line, col, msg = errors[0]
    assert line >= position(text, "[2")[0], err


def test_check_of_a_missing_file_exits_1_naming_it(portier_bin, tmp_path):
    path = tmp_path / "nope.yaml"
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 1
    assert err.startswith(f"{path}: "), err


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "---\n"])
def test_check_of_an_empty_file_is_all_defaults(portier_bin, tmp_path, text):
    """DESIGN: every key has a default, so a file with no keys is a valid config of defaults."""
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 0, err
    assert err.strip() == "portier.yaml: ok", err


def test_check_reports_missing_certificate_files(portier_bin, tmp_path):
    """-t also checks the files the config names (DESIGN: certificates readable)."""
    text = BASE.replace(
        "access_log: stdout\n",
        "access_log: stdout\ntls:\n  certificates:\n"
        f"    - cert: {tmp_path}/missing.crt\n      key: {tmp_path}/missing.key\n",
    ).replace('  - address: "127.0.0.1:28250"\n',
              '  - address: "127.0.0.1:28250"\n  - address: "127.0.0.1:28251"\n    tls: true\n')
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 1, f"a config naming a certificate that does not exist was accepted:\n{err}"
    errors = error_lines(err, "portier.yaml")
    assert position(text, f"{tmp_path}/missing.crt")[0] in [line for line, _, _ in errors], err


def make_cert(tmp_path, name):
    """A self-signed certificate and its key, made with the openssl command."""
    crt, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", f"/CN={name}", "-days", "1", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=30,
    )
    return crt, key


def tls_config(crt, key):
    return BASE.replace(
        "access_log: stdout\n",
        f"access_log: stdout\ntls:\n  certificates:\n    - cert: {crt}\n      key: {key}\n",
    )


def test_check_accepts_a_matching_certificate_and_key(portier_bin, tmp_path):
    crt, key = make_cert(tmp_path, "good")
    rc, out, err = check(portier_bin, tmp_path, tls_config(crt, key))
    assert rc == 0, err


def test_check_reports_a_key_that_belongs_to_another_certificate(portier_bin, tmp_path):
    crt, _ = make_cert(tmp_path, "one")
    _, other_key = make_cert(tmp_path, "two")
    text = tls_config(crt, other_key)
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 1, err
    errors = error_lines(err, "portier.yaml")
    assert [line for line, _, _ in errors] == [position(text, str(other_key))[0]], err
    assert "mismatch" in err or "does not match" in err


# ---------------------------------------------------------------------------------------------
# What -t accepts, a start accepts: every rule a start would refuse a config by is checked by -t
# too, with its position, and a start refuses with the same line.


def servers_config(n):
    """A service of n static servers, on one line each."""
    servers = "".join(f'      - "127.0.0.1:{30000 + i}"\n' for i in range(n))
    return ('listen:\n  - address: "127.0.0.1:28254"\nworkers: 1\ndefault_service: s\n'
            f"services:\n  s:\n    servers:\n{servers}")


START_SERVICE = 'default_service: s\nservices:\n  s:\n    servers: ["127.0.0.1:28258"]\n'

# (id, config, the token the error points at (its first occurrence), a word the message holds)
START_REFUSALS = [
    ("65-servers", servers_config(65), '"127.0.0.1:30064"', "64"),
    ("routes-differing-by-a-trailing-slash",
     'listen:\n  - address: "127.0.0.1:28254"\nroutes:\n  - {host: a.com, path: /api, service: s}\n'
     "  - {host: b.com, path: /api/, service: s}\n  - {host: a.com, path: /api/, service: s}\n"
     + START_SERVICE, "a.com, path: /api/", "/api/"),
    ("the-same-resolver-twice",
     'listen:\n  - address: "127.0.0.1:28254"\nresolvers: ["127.0.0.1:28257", "127.0.0.1:28257"]\n'
     + START_SERVICE + '  d:\n    dns: "d.example:80"\n', '"127.0.0.1:28257"]', "127.0.0.1:28257"),
    ("a-listener-inside-a-wildcard-one",
     'listen:\n  - address: "0.0.0.0:28254"\n  - address: "127.0.0.1:28254"\n' + START_SERVICE,
     '"127.0.0.1:28254"', "overlaps"),
    ("ipv4-wildcard-after-ipv6-wildcard",
     'listen:\n  - address: "[::]:28254"\n  - address: "0.0.0.0:28254"\n' + START_SERVICE,
     '"0.0.0.0:28254"', "overlaps"),
    ("an-access-log-path-too-long",
     'listen:\n  - address: "127.0.0.1:28254"\naccess_log: /tmp/' + "a" * 4100 + "\n"
     + START_SERVICE, "/tmp/aaa", "access_log"),
]


@pytest.mark.parametrize("text,token,word", [c[1:] for c in START_REFUSALS],
                         ids=[c[0] for c in START_REFUSALS])
def test_check_refuses_what_a_start_refuses_with_the_same_line(portier_bin, tmp_path, text, token,
                                                                word):
    path = tmp_path / "start.yaml"
    path.write_text(text)
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 1, f"-t accepted a config a start refuses:\n{err}"
    (line, col, msg), = error_lines(err, str(path))
    assert (line, col) == position(text, token), f"error at {line}:{col}, not at {token!r}: {msg}"
    assert word in msg, msg
    r = procs.run([str(portier_bin), "-c", str(path)], timeout=RUN_TIMEOUT, log_dir=str(tmp_path),
                  name="portier")
    assert r.returncode == 1, f"a start did not refuse (rc {r.returncode}):\n{r.stderr}"
    assert f"{path}:{line}:{col}: {msg}" in r.stderr.splitlines(), (
        f"a start should refuse with -t's line {path}:{line}:{col}: {msg}\n{r.stderr}")


def test_a_service_of_65_servers_is_refused_by_check_and_start_alike(portier_bin, tmp_path):
    """Regression: 65 servers passed -t, then a start failed with "service s: more than 64
    servers" and no FILE:LINE. BALANCER_MAX_SERVERS is 64; the error points at the 65th entry."""
    text = servers_config(65)
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 1, err
    (line, col, msg), = error_lines(err, str(path))
    assert (line, col) == position(text, '"127.0.0.1:30064"'), err
    assert "more than 64 servers" in msg, msg
    r = procs.run([str(portier_bin), "-c", str(path)], timeout=RUN_TIMEOUT, log_dir=str(tmp_path),
                  name="portier")
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[0] == f"{path}:{line}:{col}: {msg}", r.stderr
    # 64 is the limit, not past it.
    path.write_text(servers_config(64))
    rc, out, err = run_portier(portier_bin, ["-t", "-c", path])
    assert rc == 0, err


def test_a_tls_listener_with_a_good_certificate_passes_check(portier_bin, tmp_path):
    """TLS termination is built: a tls listener with a certificate and its key is a good config
    (it was refused while TLS was not served); the key is checked against its certificate."""
    crt, key = make_cert(tmp_path, "good")
    text = tls_config(crt, key).replace(
        '  - address: "127.0.0.1:28250"\n',
        '  - address: "127.0.0.1:28250"\n  - address: "127.0.0.1:28251"\n    tls: true\n')
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 0, err
    assert err.splitlines()[-1] == "portier.yaml: ok", err
    _, other_key = make_cert(tmp_path, "other")
    rc, out, err = check(portier_bin, tmp_path, text.replace(str(key), str(other_key)))
    assert rc == 1, err
    assert "does not match" in err, err


# ---------------------------------------------------------------------------------------------
# Sizes and shapes that must not keep -t busy: refused at once, with a position where it has one.

DEEP_INPUTS = [
    ("flow-sequences", "[" * (1024 * 1024 - 1), (1, 65)),
    ("flow-mappings", "{a: " * (256 * 1024 - 1), (1, 4 * 64 + 1)),
    ("block-mappings", "".join(" " * i + "a:\n" for i in range(1300)), (65, 65)),
    # Three mappings are open at the first '[': the 62nd is the 65th level.
    ("under-a-key", "services:\n  s:\n    servers: " + "[" * 100000, (3, 14 + 61)),
]


@pytest.mark.parametrize("text,at", [c[1:] for c in DEEP_INPUTS], ids=[c[0] for c in DEEP_INPUTS])
def test_yaml_nested_deeper_than_64_levels_is_refused_at_once(portier_bin, tmp_path, text, at):
    """Regression: 4 MB of '[' kept -t busy for minutes (libyaml slows down with every open
    level; 20,000 levels took 1.6 s). Nesting stops at
    64 levels, at the node that goes too deep, before any tree is built."""
    assert len(text) <= 1024 * 1024
    rc, out, err = check(portier_bin, tmp_path, text, name="deep.yaml")
    assert rc == 1, err
    (line, col, msg), = error_lines(err, "deep.yaml")
    assert (line, col) == at and "nested deeper than 64 levels" in msg, err


def test_64_levels_of_nesting_are_not_refused_for_their_depth(portier_bin, tmp_path):
    text = "workers: " + "[" * 63 + "]" * 63 + "\n"  # the top-level mapping and 63 lists
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 1, err
    (line, col, msg), = error_lines(err, "portier.yaml")
    assert "nested" not in msg and "workers" in msg, err


def test_a_file_over_1_mib_is_refused_at_once(portier_bin, tmp_path):
    """A config is at most 1 MiB (what a Kubernetes ConfigMap holds): 4 MB of '[' or 100 MB of
    comment are refused before any parsing."""
    for size in (1024 * 1024 + 1, 4 * 1024 * 1024):
        (tmp_path / "big.yaml").write_text("[" * size)
        rc, out, err = run_portier(portier_bin, ["-t", "-c", "big.yaml"], cwd=tmp_path)
        assert rc == 1, err
        assert err.startswith("big.yaml: ") and "1 MiB" in err, err
    with open(tmp_path / "huge.yaml", "w") as f:
        f.write("#" * (100 * 1024 * 1024))
    rc, out, err = run_portier(portier_bin, ["-t", "-c", "huge.yaml"], cwd=tmp_path)
    assert rc == 1 and err.startswith("huge.yaml: ") and "1 MiB" in err, err


BIG_CONFIGS = [
    ("29000-routes", 'services:\n  s:\n    servers: ["127.0.0.1:80"]\nroutes:\n'
     + "".join(f"  - {{host: h{i}.com, service: s}}\n" for i in range(29000))),
    ("24000-paths-of-one-host", 'services:\n  s:\n    servers: ["127.0.0.1:80"]\nroutes:\n'
     + "".join(f"  - {{host: h.com, path: /{i}, service: s}}\n" for i in range(24000))),
    ("44000-services", "services:\n"
     + "".join(f'  s{i}: {{dns: "a:1"}}\n' for i in range(44000))),
    ("13000-routes-to-20000-services", "services:\n"
     + "".join(f'  s{i}: {{dns: "a:1"}}\n' for i in range(20000)) + "routes:\n"
     + "".join(f"  - {{host: h{i}.com, service: s{i}}}\n" for i in range(13000))),
]


@pytest.mark.parametrize("text", [c[1] for c in BIG_CONFIGS], ids=[c[0] for c in BIG_CONFIGS])
def test_a_config_of_many_routes_or_services_is_checked(portier_bin, tmp_path, text):
    """Regression: duplicate routes and services were found by comparing each with every other
    (44,000 services: 14 s); now by sorting. The bound is RUN_TIMEOUT's: a hang, not a speed."""
    assert len(text) <= 1024 * 1024
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 0, err[:2000]


@pytest.mark.parametrize("text,token,word", [
    ("x:\n" + "".join(f"  - &a{i} 1\n" for i in range(101)), "&a100", "100 anchors"),
    ("a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n"
     + "".join(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)),
     "&a5", "aliases expand the document past"),
], ids=["101-anchors", "billion-laughs"])
def test_yaml_anchors_and_aliases_are_bounded(portier_bin, tmp_path, text, token, word):
    """libyaml's loader looks every alias up among all anchors (40,000 of each: 9 s), and the
    checks walk an aliased node once per alias; both are bounded before the tree is built."""
    rc, out, err = check(portier_bin, tmp_path, text)
    assert rc == 1, err
    (line, col, msg), = error_lines(err, "portier.yaml")
    assert word in msg, err
    if word == "100 anchors":
        assert (line, col) == position(text, token), err
    else:  # a5's aliases are where the count passes 1,048,576 (a5 alone repeats 1,111,111)
        assert line == position(text, token)[0], err


# ---------------------------------------------------------------------------------------------
# admin: served (docs/admin.md), so no warning any more


def test_check_takes_admin_without_a_warning_and_exits_0(portier_bin, tmp_path):
    rc, out, err = check(portier_bin, tmp_path, BASE)
    assert rc == 0, err
    assert err.strip() == "portier.yaml: ok", err


def test_a_start_serves_admin_and_says_where(portier_bin, start_portier, tmp_path):
    addr = ("127.0.0.1", 28255)
    text = minimal_config(addr) + 'admin: "127.0.0.1:28256"\n'
    p = start_portier(text, addr=addr, name="admin")
    p.proc.wait_for_output("admin on http://127.0.0.1:28256/")
    with socket.create_connection(("127.0.0.1", 28256), timeout=2) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.endswith(b"\r\n\r\nok\n"), data


def test_a_sigterm_the_moment_portier_listens_is_a_clean_stop(portier_bin, tmp_path):
    """The public listeners accept (in the kernel) before portier's signal handlers are in place;
    a SIGTERM in that window must still be a drain and exit 0, not the default action's death."""
    addr = ("127.0.0.1", 28252)
    cfg = tmp_path / "early.yaml"
    cfg.write_text(minimal_config(addr) + 'admin: "127.0.0.1:28256"\n')
    for i in range(5):
        p = procs.start([str(portier_bin), "-c", str(cfg)], wait_for=addr, log_dir=str(tmp_path),
                        name=f"early-{i}")
        r = procs.stop(p)
        assert r.returncode == 0, (r.returncode, r.stderr)


def test_an_admin_address_in_use_stops_the_start_with_a_message(portier_bin, tmp_path):
    """Another socket on the admin address: portier says so and exits 1 rather than serving
    without the health endpoints its probes need."""
    addr = ("127.0.0.1", 28254)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 28253))
    taken.listen(1)
    try:
        cfg = tmp_path / "busy.yaml"
        cfg.write_text(minimal_config(addr) + 'admin: "127.0.0.1:28253"\n')
        r = subprocess.run([str(portier_bin), "-c", str(cfg)], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT * 2)
    finally:
        taken.close()
    assert r.returncode == 1, r.stderr
    assert "admin 127.0.0.1:28253: Address already in use" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# -d: debug logging


def test_check_takes_d(portier_bin, tmp_path):
    (tmp_path / "portier.yaml").write_text(BASE.replace('admin: "127.0.0.1:28259"\n', ""))
    rc, out, err = run_portier(portier_bin, ["-d", "-t", "-c", "portier.yaml"], cwd=tmp_path)
    assert rc == 0, err
    assert err.strip() == "portier.yaml: ok", err
    rc, out, err = run_portier(portier_bin, ["-t", "-d", "-c", "nope.yaml"], cwd=tmp_path)
    assert rc == 1 and err.startswith("nope.yaml: "), err


@pytest.mark.parametrize("debug", [True, False], ids=["with-d", "without-d"])
def test_d_turns_on_debug_lines(portier_bin, tmp_path, debug):
    """With -d a closed client connection is logged at the debug level; without, nothing is."""
    addr = ("127.0.0.1", 28257)
    cfg = tmp_path / "d.yaml"
    cfg.write_text(minimal_config(addr))
    argv = [str(portier_bin)] + (["-d"] if debug else []) + ["-c", str(cfg)]
    p = procs.start(argv, wait_for=addr, log_dir=str(tmp_path), name="portier")
    try:
        with socket.create_connection(addr, timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass
        if debug:
            p.wait_for_output(" portier debug: ")
        else:
            time.sleep(0.3)
    finally:
        r = procs.stop(p)
    assert r.returncode == 0, r.stderr
    assert (" portier debug: " in r.stderr) == debug, r.stderr


# ---------------------------------------------------------------------------------------------
# -v and usage


def test_version_prints_portier_and_library_versions(portier_bin):
    rc, out, err = run_portier(portier_bin, ["-v"])
    assert rc == 0, err
    for pattern in (
        r"(?m)^portier\b.*\d+\.\d+",
        r"(?mi)^libevent\b.*\d+\.\d+",
        r"(?mi)^openssl\b.*\d+\.\d+",
        r"(?mi)^libyaml\b.*\d+\.\d+",
        r"(?mi)^http-parser\b.*\d+\.\d+\.\d+",
    ):
        assert re.search(pattern, out), f"{pattern!r} not in the -v output:\n{out}"


@pytest.mark.parametrize(
    "args",
    [[], ["-x"], ["-c"], ["-t"], ["-c", "a.yaml", "extra"], ["--bogus"]],
    ids=["no-args", "bad-flag", "c-without-file", "t-without-c", "extra-operand", "long-flag"],
)
def test_bad_command_line_prints_usage_and_exits_2(portier_bin, tmp_path, args):
    rc, out, err = run_portier(portier_bin, args, cwd=tmp_path)
    assert rc == 2, f"portier {args}: rc {rc}\n{err}"
    assert "usage" in err.lower(), f"no usage on stderr:\n{err}"
    assert "-c" in err


def test_usage_names_every_flag(portier_bin):
    rc, out, err = run_portier(portier_bin, ["-h"])
    assert rc == 0, err
    for flag in ("-c", "-t", "-v", "-d"):
        assert re.search(rf"(?<![\w-]){flag}\b", out), f"usage does not mention {flag}:\n{out}"
    assert re.search(r"(?m)^\s*-d\s+\S", out), f"usage does not say what -d does:\n{out}"


# ---------------------------------------------------------------------------------------------
# Startup failures


def minimal_config(addr):
    return (
        f'listen:\n  - address: "{addr[0]}:{addr[1]}"\nworkers: 2\ndefault_service: s\n'
        'services:\n  s:\n    servers: ["127.0.0.1:28258"]\n'
    )


def test_listen_address_in_use_exits_1_with_a_clear_message(portier_bin, tmp_path):
    addr = ("127.0.0.1", 28251)
    cfg = tmp_path / "inuse.yaml"
    cfg.write_text(minimal_config(addr))
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(1)
        r = procs.run([str(portier_bin), "-c", str(cfg)], timeout=RUN_TIMEOUT,
                      log_dir=str(tmp_path), name="portier")
    assert r.returncode == 1, f"rc {r.returncode}:\n{r.stderr}"
    assert "127.0.0.1:28251" in r.stderr and "in use" in r.stderr.lower(), r.stderr


def test_listen_address_held_by_another_portier_exits_1(portier_bin, start_portier, tmp_path):
    addr = ("127.0.0.1", 28252)
    start_portier(minimal_config(addr), addr=addr, name="first")
    cfg = tmp_path / "second.yaml"
    cfg.write_text(minimal_config(addr))
    p = procs.spawn([str(portier_bin), "-c", str(cfg)], log_dir=str(tmp_path), name="second")
    try:
        p.popen.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pass
    r = procs.stop(p)  # SIGTERM if it is still running: then it did not refuse the address
    assert not r.killed
    assert r.returncode == 1, (
        f"a second portier on {addr[0]}:{addr[1]} kept running (rc {r.returncode} after SIGTERM):"
        f"\n{r.stderr}"
    )
    assert "in use" in r.stderr.lower(), r.stderr


def test_unreadable_access_log_path_exits_1_with_a_message(portier_bin, tmp_path):
    addr = ("127.0.0.1", 28253)
    cfg = tmp_path / "log.yaml"
    cfg.write_text(minimal_config(addr) + f"access_log: {tmp_path}/no/such/dir/access.log\n")
    r = procs.run([str(portier_bin), "-c", str(cfg)], timeout=RUN_TIMEOUT, log_dir=str(tmp_path),
                  name="portier")
    assert r.returncode == 1, r.stderr
    assert "access.log" in r.stderr, r.stderr
