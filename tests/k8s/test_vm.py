"""vagrant/ and the shell scripts, offline: shellcheck, the provision steps that can run here, and
`vagrant validate` with Debian's vagrant (and its vagrant-libvirt plugin).

No VM is booted and no box is fetched: `vagrant validate` only loads the Vagrantfile and checks each
machine's configuration. VirtualBox is not in Debian, so its provider is checked with a stand-in
VBoxManage that answers nothing but `--version`; that is enough for Vagrant to check the
VirtualBox block's settings, and nothing else is asked of it (the test asserts so).
"""

import hashlib
import os
import re
import shutil

import pytest
import yaml

from k8shelp import IMAGE_NAMES, REPO, provision_env, run

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
