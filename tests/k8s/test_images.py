"""The image archives that `make images` builds (here through the VM's own provision script).

skopeo reads each one as `k3s ctr images import` would get it; then each image's root is unpacked
(skopeo to an OCI layout, umoci to a directory, as a container runtime would) and its binary runs
in a chroot of that root alone: nothing else from this machine is reachable, so an image that needs
a library, a loader or a file it does not carry fails here. Everything listens on 127.0.0.14x.
"""

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from k8shelp import (
    IMAGE_NAMES,
    IMAGE_PREFIX,
    REPO,
    SERVICE_ACCOUNT_DIR,
    containers,
    http_get,
    run,
    stop,
    wait_for_port,
)

APP_PORT = 28480
UID = 10001
# Absolute: the processes below get an empty environment, as in the image (no PATH).
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def archive(name):
    return REPO / "build/images" / f"{name}.tar"


@pytest.fixture(scope="module")
def images(provisioned):
    for name in IMAGE_NAMES:
        assert archive(name).is_file(), f"{archive(name)} not built"
    return {name: archive(name) for name in IMAGE_NAMES}


@pytest.fixture(scope="module")
def roots(images, tmp_path_factory):
    """name -> the image's root filesystem, unpacked from the archive."""
    out = {}
    for name, tar in images.items():
        work = tmp_path_factory.mktemp(f"img-{name}")
        run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                f"docker-archive:{tar}",
                f"oci:{work}/oci:x",
            ]
        )
        run(["umoci", "unpack", "--image", f"{work}/oci:x", f"{work}/bundle"])
        out[name] = work / "bundle/rootfs"
    return out


def start_in_chroot(root, argv, env, userspec=f"{UID}:{UID}", wrap=()):
    """argv run as userspec inside root, with exactly env; wrap goes before chroot (setpriv)."""
    cmd = [*wrap, CHROOT, f"--userspec={userspec}", str(root), *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_skopeo_inspect_reads_the_archive(images, name, version, objs):
    info = json.loads(run(["skopeo", "inspect", f"docker-archive:{images[name]}"]).stdout)
    assert info["Os"] == "linux" and info["Architecture"]
    assert info["Labels"]["org.opencontainers.image.version"] == version
    assert len(info["Layers"]) == 1
    config = json.loads(
        run(["skopeo", "inspect", "--config", f"docker-archive:{images[name]}"]).stdout
    )
    assert config["config"]["User"] == f"{UID}:{UID}"
    assert config["config"]["Entrypoint"] == [f"/{name}"]
    # The name k3s will know it by is the one the manifests ask for.
    with tarfile.open(images[name]) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    ref = f"{IMAGE_PREFIX}{name}:{version}"
    assert manifest[0]["RepoTags"] == [ref]
    wanted = {
        c["image"]
        for o in objs.values()
        if o["kind"] in ("Deployment", "DaemonSet")
        for c in containers(o)
    }
    assert ref in wanted
    assert (REPO / "build/images" / f"{name}.ref").read_text().strip() == ref


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_root_holds_the_binary_and_one_user(roots, name):
    root = roots[name]
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert found == sorted(["etc", "etc/group", "etc/passwd", name])
    users = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    assert len(users) == 1 and users[0][2] == users[0][3] == str(UID)
    groups = [line.split(":") for line in (root / "etc/group").read_text().splitlines()]
    assert len(groups) == 1 and groups[0][2] == str(UID)
    headers = run(["readelf", "--program-headers", str(root / name)]).stdout
    assert "INTERP" not in headers, "dynamically linked"
    caps = run(["getcap", str(root / name)]).stdout
    if name == "portier":
        assert "cap_net_bind_service" in caps and "=ep" in caps.replace("+", "="), caps
    else:
        assert caps.strip() == "", caps


def test_portier_checks_the_cluster_config_in_its_root(roots, objs, certs):
    """`portier -t` on the rendered ConfigMap, mounted where the DaemonSet mounts it, owned as the
    kubelet leaves it (root, group fsGroup, 0440), with what the pod has besides: the service
    account's token, CA and namespace where the kubelet mounts them, the API server's address in
    KUBERNETES_SERVICE_HOST and _PORT, and PORTIER_NODE_IP. Nothing else of this machine is
    reachable in the chroot."""
    root = roots["portier"]
    (cm,) = [o for k, o in objs.items() if k[0] == "ConfigMap"]
    etc = root / "etc/portier"
    sa = root / SERVICE_ACCOUNT_DIR.lstrip("/")
    etc.mkdir(parents=True)
    sa.mkdir(parents=True)
    files = {
        etc / "portier.yaml": cm["data"]["portier.yaml"].encode(),
        sa / "token": b"offline-test-token",
        sa / "ca.crt": (certs / "ca.crt").read_bytes(),
        sa / "namespace": b"portier",
    }
    for path, data in files.items():
        path.write_bytes(data)
        os.chown(path, 0, UID)
        path.chmod(0o440)
    env = {
        "KUBERNETES_SERVICE_HOST": "10.43.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "PORTIER_NODE_IP": "192.168.56.110",
    }
    try:
        r = run(
            [
                CHROOT,
                f"--userspec={UID}:{UID}",
                str(root),
                "/portier",
                "-t",
                "-c",
                "/etc/portier/portier.yaml",
            ],
            check=False,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        r = run([CHROOT, str(root), "/portier", "-v"], check=False, env={})
        assert r.returncode == 0 and r.stdout.startswith("portier "), r.stderr
    finally:
        shutil.rmtree(etc)
        shutil.rmtree(root / "var")


@pytest.mark.parametrize(
    "name,ip", [("app1", "127.0.0.141"), ("app2", "127.0.0.142"), ("app3", "127.0.0.143")]
)
def test_app_answers_in_its_root(roots, name, ip):
    env = {"LISTEN": f"{ip}:{APP_PORT}", "POD_NAME": f"{name}-chroot", "POD_IP": ip}
    proc = start_in_chroot(roots[name], [f"/{name}"], env)
    try:
        wait_for_port(ip, APP_PORT, proc)
        status, _, body = http_get(ip, APP_PORT, "/healthz", "x")
        assert status == 200
        status, _, body = http_get(ip, APP_PORT, "/api/info", "app.example")
        assert status == 200
        info = json.loads(body)
        assert info["app"] == name and info["pod"] == f"{name}-chroot" and info["ip"] == ip
    finally:
        rc = stop(proc)
    assert rc == 0, proc.stderr.read()


def portier_test_config(tmp_root, listen, app_addr):
    (tmp_root / "etc/portier").mkdir(exist_ok=True)
    (tmp_root / "etc/portier/test.yaml").write_text(
        f'listen:\n  - address: "{listen}"\n'
        "workers: 1\n"
        "routes:\n  - host: app1.com\n    service: app1\n"
        f'services:\n  app1:\n    servers: ["{app_addr}"]\n'
        "access_log: stdout\n"
    )


# As in the pod: only NET_BIND_SERVICE left in the bounding set (plus what chroot itself needs to
# get there: it is root until it switches to the image's user and execs).
POD_CAPS = [SETPRIV, "--bounding-set=-all,+net_bind_service,+sys_chroot,+setuid,+setgid"]


def test_portier_binds_port_80_as_its_user_and_proxies(roots):
    """The DaemonSet's setup, in miniature: portier runs as the image's unprivileged user with
    every capability dropped but NET_BIND_SERVICE, which the binary's file capability gives it,
    binds port 80 and proxies to app1 running from its own image."""
    app_ip, portier_ip = "127.0.0.144", "127.0.0.145"
    root = roots["portier"]
    portier_test_config(root, f"{portier_ip}:80", f"{app_ip}:{APP_PORT}")
    app = start_in_chroot(
        roots["app1"], ["/app1"], {"LISTEN": f"{app_ip}:{APP_PORT}", "POD_NAME": "app1-chroot"}
    )
    portier = None
    try:
        wait_for_port(app_ip, APP_PORT, app)
        portier = start_in_chroot(
            root, ["/portier", "-c", "/etc/portier/test.yaml"], {}, wrap=POD_CAPS
        )
        wait_for_port(portier_ip, 80, portier)
        status, _, body = http_get(portier_ip, 80, "/api/info", "app1.com")
        assert status == 200, body
        assert json.loads(body)["app"] == "app1"
        with open(f"/proc/{portier.pid}/status") as f:
            status_lines = dict(
                line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line
            )
        assert status_lines["Uid"].split()[0] == str(UID)
        assert int(status_lines["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE alone
    finally:
        rcs = [stop(p) for p in (portier, app) if p is not None]
        (root / "etc/portier/test.yaml").unlink()
        (root / "etc/portier").rmdir()
    assert rcs == [0] * len(rcs), [p.stderr.read() for p in (portier, app) if p is not None]


CAP_NET_BIND_SERVICE = 10
PR_CAPBSET_DROP, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 24, 8, 38


def runc_like(root, nnp):
    """The steps runc's init takes before it execs a container's entrypoint, as the kubelet's
    containerd asks for a non-root pod that adds NET_BIND_SERVICE: chroot, a bounding set of that
    capability alone, the image's user with the capability kept in the permitted set (runc keeps
    what the OCI spec lists there), then, when allowPrivilegeEscalation is false, no_new_privs."""
    libc = ctypes.CDLL(None, use_errno=True)
    libcap = ctypes.CDLL(ctypes.util.find_library("cap"), use_errno=True)
    libcap.cap_from_text.restype = ctypes.c_void_p
    libcap.cap_set_proc.argtypes = [ctypes.c_void_p]

    def check(rc, what):
        if rc != 0:
            raise OSError(ctypes.get_errno(), what)

    def launch():
        os.chroot(root)
        os.chdir("/")
        for cap in range(64):
            if cap != CAP_NET_BIND_SERVICE:
                libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last: ignored
        check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keepcaps")
        os.setgroups([])
        os.setgid(UID)
        os.setuid(UID)
        caps = libcap.cap_from_text(b"cap_net_bind_service=p")
        check(0 if caps else 1, "cap_from_text")
        check(libcap.cap_set_proc(caps), "cap_set_proc")
        if nnp:
            check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")

    return launch


@pytest.mark.parametrize("nnp", [True, False], ids=["no-new-privs", "privilege-escalation"])
def test_portier_binds_port_80_under_no_new_privs_as_the_runtime_starts_it(roots, nnp):
    """Why the DaemonSet can say allowPrivilegeEscalation: false. no_new_privs keeps an exec from
    gaining capabilities beyond the permitted set it had; the container runtime's init holds
    NET_BIND_SERVICE in that set, so the binary's file capability gains nothing new and port 80
    binds either way. (Started by chroot(8) switching to the user, as the next test does, the
    permitted set is empty, and no_new_privs makes the file capability count for nothing.)"""
    root = roots["portier"]
    portier_test_config(root, "127.0.0.146:80", f"127.0.0.144:{APP_PORT}")
    p = subprocess.Popen(["/portier", "-c", "/etc/portier/test.yaml"], env={},
                         preexec_fn=runc_like(str(root), nnp), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port("127.0.0.146", 80, p)
        with open(f"/proc/{p.pid}/status") as f:
            status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        assert status["Uid"].split()[0] == str(UID)
        assert status["NoNewPrivs"].strip() == ("1" if nnp else "0")
        assert int(status["CapEff"], 16) == 1 << CAP_NET_BIND_SERVICE
    finally:
        rc = stop(p)
        (root / "etc/portier/test.yaml").unlink()
        (root / "etc/portier").rmdir()
    assert rc == 0, p.stderr.read()


def test_without_the_capability_in_its_permitted_set_no_new_privs_stops_portier(roots):
    """The other side: launched by a process that does not hold NET_BIND_SERVICE (chroot(8)
    switching to the user drops it), no_new_privs voids the file capability and port 80 is
    refused. A runtime that starts containers that way needs allowPrivilegeEscalation: true."""
    root = roots["portier"]
    portier_test_config(root, "127.0.0.146:80", f"127.0.0.144:{APP_PORT}")
    try:
        r = run(
            [
                *POD_CAPS,
                "--no-new-privs",
                CHROOT,
                f"--userspec={UID}:{UID}",
                str(root),
                "/portier",
                "-c",
                "/etc/portier/test.yaml",
            ],
            check=False,
            env={},
            timeout=10,
        )
    finally:
        (root / "etc/portier/test.yaml").unlink()
        (root / "etc/portier").rmdir()
    assert r.returncode != 0
    assert "127.0.0.146:80" in r.stderr or "ermission" in r.stderr, r.stderr


def test_archives_are_reproducible(images, tmp_path, version):
    """The same binaries give byte-identical archives, so a second `vagrant provision` imports
    nothing new (and `make deploy` without changes rolls pods onto the very same images)."""
    bindir = REPO / "build/static"
    run(["k8s/build-images.sh", str(bindir), str(tmp_path), version], cwd=REPO)
    for name, tar in images.items():
        a = hashlib.sha256(tar.read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / f"{name}.tar").read_bytes()).hexdigest()
        assert a == b, name


def test_build_images_refuses_latest(tmp_path):
    r = run(
        ["k8s/build-images.sh", str(REPO / "build/static"), str(tmp_path), "latest"],
        cwd=REPO,
        check=False,
    )
    assert r.returncode != 0 and "latest" in r.stderr
    assert not list(tmp_path.iterdir())


def test_build_images_refuses_a_dynamic_binary(tmp_path, portier_bin):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(portier_bin, bindir / "portier")
    r = run(
        ["k8s/build-images.sh", str(bindir), str(tmp_path / "out"), "0.0.0"], cwd=REPO, check=False
    )
    assert r.returncode != 0 and "dynamically linked" in r.stderr
