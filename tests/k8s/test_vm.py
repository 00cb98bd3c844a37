"""vagrant/ and the shell scripts, offline: shellcheck, the provision steps that can run here, and
`vagrant validate` with Debian's vagrant (and its vagrant-libvirt plugin).

No VM is booted and no box is fetched: `vagrant validate` only loads the Vagrantfile and checks each
machine's configuration. VirtualBox is not in Debian, so its provider is checked with a stand-in
VBoxManage that answers nothing but `--version`; that is enough for Vagrant to check the
VirtualBox block's settings, and nothing else is asked of it (the test asserts so).
"""

import base64
import hashlib
import os
import re
import shutil

import pytest
import yaml

from k8shelp import IMAGE_NAMES, MAKE_VARS, REPO, provision_env, run

PROVISION = REPO / "vagrant/provision"


def shell_scripts():
    """Every .sh the repository has or is about to have (tracked, or new and not ignored)."""
    out = run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.sh"], cwd=REPO
    ).stdout
    return sorted(p for p in out.split() if (REPO / p).exists())


def test_shellcheck_every_script():
    scripts = shell_scripts()
    assert "k8s/build-images.sh" in scripts and "vagrant/provision/server.sh" in scripts
    r = run(["shellcheck", "--external-sources", *scripts], cwd=REPO, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", ["server.sh", "agent.sh", "images.sh", "deploy.sh"])
def test_provision_scripts_are_strict_bash(script):
    text = (PROVISION / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(PROVISION / script, os.X_OK)
    # Vagrant uploads and runs a copy of the script; what it sources comes from the synced repo.
    assert '. "${P2_REPO:-/vagrant}/vagrant/provision/lib.sh"' in text


def test_offline_provision_renders_what_the_tests_check(provisioned, rendered_text):
    """server.sh with P2_OFFLINE=1 built the images the image tests check and rendered exactly
    the manifests the manifest tests check."""
    assert (provisioned / "build/k8s-rendered.yaml").read_text() == rendered_text
    for name in IMAGE_NAMES:
        assert (provisioned / "build/images" / f"{name}.tar").is_file()


def test_offline_provision_twice_changes_nothing(provisioned, kubectl):
    """A second run (as a second `vagrant provision` would) succeeds and leaves byte-identical
    image archives and manifests."""

    def snapshot():
        files = [provisioned / "build/images" / f"{n}.tar" for n in IMAGE_NAMES]
        files.append(provisioned / "build/k8s-rendered.yaml")
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    before = snapshot()
    run(["bash", str(PROVISION / "server.sh")], env=provision_env(kubectl), timeout=600)
    assert snapshot() == before


def lib_sh(script, **env):
    """Runs bash snippet script after sourcing lib.sh (which has no side effects of its own)."""
    full = dict(os.environ, P2_REPO=str(REPO), **env)
    return run(["bash", "-euo", "pipefail", "-c", f'. "{PROVISION}/lib.sh"; {script}'], env=full)


NODE = dict(
    P2_NODE_NAME="wils",
    P2_NODE_IP="192.168.56.110",
    P2_SERVER_IP="192.168.56.110",
    P2_K3S_TOKEN="t0k3n",
)


def test_k3s_server_config():
    """The file k3s reads at start: valid YAML, Traefik off, node and flannel on the private
    network, a kubeconfig the vagrant user can read."""
    cfg = yaml.safe_load(lib_sh("k3s_server_config eth1", **NODE).stdout)
    assert cfg == {
        "node-name": "wils",
        "node-ip": "192.168.56.110",
        "advertise-address": "192.168.56.110",
        "flannel-iface": "eth1",
        "tls-san": ["192.168.56.110"],
        "disable": ["traefik"],
        "write-kubeconfig-mode": "0644",
        "token": "t0k3n",
    }


def test_k3s_agent_config():
    env = dict(NODE, P2_NODE_NAME="wilsw", P2_NODE_IP="192.168.56.111")
    cfg = yaml.safe_load(lib_sh("k3s_agent_config eth1 https://192.168.56.110:6443", **env).stdout)
    assert cfg == {
        "server": "https://192.168.56.110:6443",
        "token": "t0k3n",
        "node-name": "wilsw",
        "node-ip": "192.168.56.111",
        "flannel-iface": "eth1",
    }


def test_write_if_changed_writes_once(tmp_path):
    """The k3s config is rewritten (and k3s restarted) only when its content changes."""
    f = tmp_path / "etc/config.yaml"
    step = f"if echo {{}} | write_if_changed {f} 0600; then echo wrote; else echo same; fi"
    script = "; ".join(step.format(content) for content in ("a", "a", "b"))
    assert lib_sh(script).stdout.split() == ["wrote", "same", "wrote"]
    assert f.read_text() == "b\n" and (f.stat().st_mode & 0o777) == 0o600


def test_private_iface_finds_the_interface_of_the_node_ip():
    assert lib_sh("private_iface", P2_NODE_IP="127.0.0.1").stdout.strip() == "lo"
    r = run(
        ["bash", "-c", f'. "{PROVISION}/lib.sh"; private_iface'],
        env=dict(os.environ, P2_NODE_IP="192.0.2.254"),
        check=False,
    )
    assert r.returncode != 0 and "192.0.2.254" in r.stderr


def test_server_k3s_settings():
    """What a reader of the scripts checks first: images into the namespace the kubelet reads, the
    manifests applied with -k, every workload waited for."""
    lib = (PROVISION / "lib.sh").read_text()
    assert "k3s ctr --namespace k8s.io images import" in lib
    assert 'apply -k "$P2_REPO/k8s"' in lib
    assert "rollout status" in lib and "daemonset/portier" in lib
    assert "192.168.56.110" in (REPO / "vagrant/Vagrantfile").read_text()


# ---------------------------------------------------------------------------------------------
# HTTPS on the VM: the certificate is made once on the host, kept in vagrant/certs, and becomes the
# Secret portier-tls before the DaemonSet that mounts it is applied.


def digests(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def own_certificate(d):
    """A self-signed certificate and key of one's own in place of d/server.crt and server.key."""
    args = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30"
    args += " -subj /CN=app2.com -addext subjectAltName=DNS:app2.com"
    run(["openssl", *args.split(), "-keyout", str(d / "server.key"), "-out", str(d / "server.crt")])


@pytest.fixture
def fake_vagrant(tmp_path):
    """A copy of what `make up`, `make deploy` and `make down` use (the Makefile, scripts/certs.sh,
    vagrant/), and a vagrant on PATH that logs each call and whether the certificate was there."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "Makefile", repo)
    shutil.copy(REPO / "scripts/certs.sh", repo / "scripts")
    (repo / "vagrant").mkdir()
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "vagrant.log"
    (bindir / "vagrant").write_text(
        "#!/bin/sh\n"
        'if [ -s certs/server.crt ]; then have=certs; else have=nocerts; fi\n'
        f'echo "$(basename "$PWD") $have $*" >> "{log}"\n'
    )
    (bindir / "vagrant").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    return repo, env, log


def test_make_up_makes_the_vm_certificate_once(fake_vagrant):
    """make up makes vagrant/certs before Vagrant boots anything; make up, deploy and down again
    leave it as it is; a certificate of one's own put there is kept too."""
    repo, env, log = fake_vagrant
    certs = repo / "vagrant/certs"

    def make(target):
        return run(["make", "--no-print-directory", target], cwd=repo, env=env).stdout

    out = make("up")
    assert "made vagrant/certs/ca.crt" in out and "made vagrant/certs/server.crt" in out, out
    made = digests(certs)
    assert set(made) == {"ca.crt", "ca.key", "server.crt", "server.key"}
    assert (certs / "server.key").stat().st_mode & 0o777 == 0o600
    run(["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.crt")])
    for target in ("up", "deploy", "down", "up"):
        out = make(target)
        assert "made" not in out, out
        assert digests(certs) == made, f"make {target} remade the certificates"
    own_certificate(certs)
    own = digests(certs)
    out = make("deploy")
    assert "server.crt kept" in out, out
    assert digests(certs) == own
    calls = log.read_text().splitlines()
    assert calls[0] == "vagrant certs up"
    assert "vagrant certs rsync" in calls
    assert all(" certs " in c for c in calls), "vagrant ran before the certificate was made"


@pytest.fixture
def fake_k3s(tmp_path, kubectl):
    """A k3s whose kubectl keeps the one Secret applied in a file and answers as kubectl apply
    does (created, unchanged, configured); `create secret tls --dry-run=client` is Debian's kubectl
    itself, which checks that the key matches the certificate. Every call is logged."""
    bindir = tmp_path / "k3sbin"
    bindir.mkdir()
    state, log = tmp_path / "secret.yaml", tmp_path / "k3s.log"
    (bindir / "k3s").write_text(
        f"""#!/bin/bash
set -euo pipefail
echo "$*" >> "{log}"
[ "$1" = kubectl ] && shift || exit 1
case "$*" in
"apply -f -")
    cat > "{state}.new"
    if [ ! -f "{state}" ]; then echo "secret/portier-tls created"
    elif cmp -s "{state}" "{state}.new"; then echo "secret/portier-tls unchanged"
    else echo "secret/portier-tls configured"; fi
    mv "{state}.new" "{state}" ;;
"apply -f {REPO}/k8s/namespaces.yaml") echo "namespace/portier unchanged" ;;
*"create secret tls"*) exec "{kubectl}" "$@" ;;
"-n portier rollout restart daemonset/portier") echo "daemonset.apps/portier restarted" ;;
*) exit 1 ;;
esac
"""
    )
    (bindir / "k3s").chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    return env, state, log


def test_tls_secret_from_the_kept_files(fake_k3s, tmp_path):
    """deploy_tls_secret makes the kubernetes.io/tls Secret from vagrant/certs' files, after the
    namespace; run again with the same files it changes nothing; with other files it replaces
    the Secret and portier restarts onto it."""
    env, state, log = fake_k3s
    certs = tmp_path / "certs"
    run(["bash", str(REPO / "scripts/certs.sh"), str(certs)])
    env["P2_TLS_DIR"] = str(certs)
    step = "deploy_tls_secret; deploy_tls_roll; echo changed=$TLS_SECRET_CHANGED"

    out = lib_sh(step, **env).stdout
    assert "secret/portier-tls created" in out and "changed=0" in out, out
    secret = yaml.safe_load(state.read_text())
    assert secret["kind"] == "Secret" and secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "portier-tls"
    assert secret["metadata"]["namespace"] == "portier"
    for key, f in (("tls.crt", "server.crt"), ("tls.key", "server.key")):
        assert base64.b64decode(secret["data"][key]) == (certs / f).read_bytes()
    calls = log.read_text().splitlines()
    assert calls[0] == f"kubectl apply -f {REPO}/k8s/namespaces.yaml", calls
    # The two ends of one pipeline run at once: either may log first.
    assert "kubectl apply -f -" in calls[1:3], calls
    assert any("create secret tls portier-tls" in c for c in calls[1:3]), calls

    out = lib_sh(step, **env).stdout
    assert "secret/portier-tls unchanged" in out and "changed=0" in out, out
    assert "restart" not in log.read_text()

    own_certificate(certs)
    out = lib_sh(step, **env).stdout
    assert "secret/portier-tls configured" in out and "changed=1" in out, out
    assert base64.b64decode(yaml.safe_load(state.read_text())["data"]["tls.crt"]) == (
        certs / "server.crt"
    ).read_bytes()
    last = log.read_text().splitlines()[-1]
    assert last == "kubectl -n portier rollout restart daemonset/portier"


def test_tls_secret_needs_both_files(fake_k3s, tmp_path):
    """Without the files, provisioning stops at once and says how to make them; nothing else ran."""
    env, state, log = fake_k3s
    env["P2_TLS_DIR"] = str(tmp_path / "empty")
    r = run(
        ["bash", "-euo", "pipefail", "-c", f'. "{PROVISION}/lib.sh"; deploy_tls_secret'],
        env=dict(os.environ, P2_REPO=str(REPO), **env),
        check=False,
    )
    assert r.returncode != 0 and "server.crt" in r.stderr and "make up" in r.stderr, r.stderr
    assert not log.exists() and not state.exists()


def test_vm_certificate_stays_on_the_host():
    """vagrant/certs is never committed; the CA's key is not sent into the VM; the server checks
    for the certificate before its long steps and makes the Secret before applying k8s/."""
    kept = ["vagrant/certs/ca.key", "vagrant/certs/server.key"]
    r = run(["git", "check-ignore", *kept], cwd=REPO, check=False)
    assert r.stdout.split() == kept, "vagrant/certs/ is not ignored by git"
    assert '"/vagrant/certs/ca.key"' in (REPO / "vagrant/Vagrantfile").read_text()
    server = (PROVISION / "server.sh").read_text()
    assert server.index("need_tls_files") < server.index("install_packages\n")
    for script in ("server.sh", "deploy.sh"):
        text = (PROVISION / script).read_text()
        assert text.index("deploy_tls_secret\n") < text.index("deploy_apply\n"), script


@pytest.fixture
def vagrant_env(tmp_path):
    """Vagrant kept away from the real home and the repository: its state goes to tmp_path, no
    version check goes out, and the token comes from the environment (no vagrant/.k3s-token)."""
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant not found (scripts/deps.sh installs Debian's vagrant)", pytrace=False)
    env = dict(os.environ)
    env.pop("VAGRANT_DEFAULT_PROVIDER", None)
    env.update(
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_NO_COLOR="1",
        P2_K3S_TOKEN="offline-test-token",
        P2_LOGIN="wil",
    )
    return env


def vagrant_validate(cwd, env, *args):
    return run(["vagrant", "validate", *args], cwd=cwd, env=env, check=False, timeout=120)


def test_vagrant_validate_libvirt(vagrant_env):
    """Both machines (P2_WORKERS=1): the server and an agent."""
    env = dict(vagrant_env, VAGRANT_DEFAULT_PROVIDER="libvirt", P2_WORKERS="1")
    r = vagrant_validate(REPO / "vagrant", env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


@pytest.fixture
def fake_vboxmanage(tmp_path):
    """A VBoxManage that answers `--version` with a supported release and logs every call."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "vboxmanage.log"
    script = bindir / "VBoxManage"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'if [ "$1" = --version ]; then echo 7.0.14r161095; exit 0; fi\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    return bindir, log


def test_vagrant_validate_virtualbox(vagrant_env, fake_vboxmanage):
    bindir, log = fake_vboxmanage
    env = dict(
        vagrant_env,
        PATH=f"{bindir}:{vagrant_env['PATH']}",
        VAGRANT_DEFAULT_PROVIDER="virtualbox",
        P2_WORKERS="1",
    )
    r = vagrant_validate(REPO / "vagrant", env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(log.read_text().split("\n")) <= {"--version", ""}, log.read_text()


def test_vagrant_validate_names_the_machines(vagrant_env):
    """<login>S for the server, <login>SW for the first worker."""
    env = dict(vagrant_env, P2_WORKERS="1")
    r = vagrant_validate(REPO / "vagrant", env, "--ignore-provider")
    assert r.returncode == 0, r.stdout + r.stderr
    machines = re.findall(r"==> (\S+): Ignoring provider config", r.stdout)
    assert machines == ["wilS", "wilSW"], r.stdout


def test_vagrant_validate_catches_mistakes(vagrant_env, fake_vboxmanage, tmp_path):
    """Negative control: a misspelt provider setting fails validation, for both providers."""
    copy = tmp_path / "vagrant"
    shutil.copytree(REPO / "vagrant", copy, ignore=shutil.ignore_patterns(".vagrant", ".k3s-token"))
    text = (copy / "Vagrantfile").read_text()
    (copy / "Vagrantfile").write_text(
        text.replace("vb.memory =", "vb.memroy =").replace("lv.memory =", "lv.memroy =")
    )
    bindir, _ = fake_vboxmanage
    for provider in ("virtualbox", "libvirt"):
        env = dict(
            vagrant_env, PATH=f"{bindir}:{vagrant_env['PATH']}", VAGRANT_DEFAULT_PROVIDER=provider
        )
        r = vagrant_validate(copy, env)
        assert r.returncode != 0 and "memroy" in r.stdout + r.stderr, (provider, r.stdout, r.stderr)


def test_vagrant_rejects_a_bad_worker_count(vagrant_env):
    env = dict(vagrant_env, P2_WORKERS="many")
    r = vagrant_validate(REPO / "vagrant", env, "--ignore-provider")
    assert r.returncode != 0 and "P2_WORKERS" in r.stdout + r.stderr
