"""vagrant/ and the shell scripts, offline: shellcheck, the provision steps that can run here, and
`vagrant validate` with Debian's vagrant (and its vagrant-libvirt plugin).

No VM is booted and no box is fetched: `vagrant validate` only loads the Vagrantfile and checks each
machine's configuration. VirtualBox is not in Debian, so its provider is checked with a stand-in
VBoxManage that answers nothing but `--version`; that is enough for Vagrant to check the
VirtualBox block's settings, and nothing else is asked of it (the test asserts so).
"""

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

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
# Secret the apps' Ingress names, in the Ingress's namespace, before the Ingress is applied; portier
# reads it from the API (and watches it: a new certificate needs no restart).


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
    vagrant/check-host.sh), and a vagrant on PATH that logs each call and whether the certificate
    was there. It says it is 2.3.4 ($FAKE_VAGRANT_VERSION), beside a VBoxManage that says 7.0
    ($FAKE_VBOX_VERSION); `vagrant destroy` fails when $FAKE_DESTROY_FAILS is set."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "Makefile", repo)
    shutil.copy(REPO / "scripts/certs.sh", repo / "scripts")
    (repo / "vagrant").mkdir()
    shutil.copy(REPO / "vagrant/check-host.sh", repo / "vagrant")
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "vagrant.log"
    (bindir / "vagrant").write_text(
        "#!/bin/sh\n"
        'if [ -s certs/server.crt ]; then have=certs; else have=nocerts; fi\n'
        f'echo "$(basename "$PWD") $have $*" >> "{log}"\n'
        'if [ "$1" = --version ]; then echo "Vagrant ${FAKE_VAGRANT_VERSION:-2.3.4}"; fi\n'
        'if [ "$1" = destroy ] && [ -n "${FAKE_DESTROY_FAILS:-}" ]; then exit 1; fi\n'
    )
    (bindir / "VBoxManage").write_text(
        "#!/bin/sh\n"
        '[ "$1" = --version ] && echo "${FAKE_VBOX_VERSION:-7.0.14r161095}"\n'
    )
    (bindir / "uname").write_text('#!/bin/sh\necho x86_64\n')  # whatever runs the tests
    for tool in ("vagrant", "VBoxManage", "uname"):
        (bindir / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    for k in ("VAGRANT_DEFAULT_PROVIDER", "P2_SETTINGS_FILE", "P2_WORKERS", "P2_BOX"):
        env.pop(k, None)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    return repo, env, log


def vm_calls(log):
    """The vagrant calls in log that act on the VM: not the host check's `vagrant --version`."""
    calls = log.read_text().splitlines() if log.exists() else []
    return [c for c in calls if not c.endswith(" --version")]


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
    calls = vm_calls(log)
    assert calls[0] == "vagrant certs up"
    assert "vagrant certs rsync" in calls
    assert all(" certs " in c for c in calls), "vagrant ran before the certificate was made"


@pytest.fixture
def fake_k3s(tmp_path, kubectl):
    """A k3s whose kubectl keeps the one Secret applied in a file and answers as kubectl apply
    does (created, unchanged, configured); `create secret tls --dry-run=client` is Debian's kubectl
    itself, which checks that the key matches the certificate. Every call is logged; any call
    but these fails (a restart among them)."""
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
    name=$(sed -n 's/^  name: //p' "{state}.new")
    if [ ! -f "{state}" ]; then echo "secret/$name created"
    elif cmp -s "{state}" "{state}.new"; then echo "secret/$name unchanged"
    else echo "secret/$name configured"; fi
    mv "{state}.new" "{state}" ;;
"apply -f {REPO}/k8s/namespaces.yaml") printf 'namespace/%s unchanged\n' apps portier ;;
*"create secret tls"*) exec "{kubectl}" "$@" ;;
*) exit 1 ;;
esac
"""
    )
    (bindir / "k3s").chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    return env, state, log


def test_tls_secret_from_the_kept_files(fake_k3s, tmp_path, objs):
    """deploy_tls_secret makes, from vagrant/certs' files, the kubernetes.io/tls Secret the apps'
    Ingress names, in the Ingress's namespace (a Secret elsewhere it could not name), after the
    namespaces; run again with the same files it changes nothing; with other files it replaces
    the Secret and restarts nothing (portier watches the Secret)."""
    env, state, log = fake_k3s
    (ing,) = [o for k, o in objs.items() if k[0] == "Ingress"]
    ((ns, name),) = {(ing["metadata"]["namespace"], t["secretName"]) for t in ing["spec"]["tls"]}
    certs = tmp_path / "certs"
    run(["bash", str(REPO / "scripts/certs.sh"), str(certs)])
    env["P2_TLS_DIR"] = str(certs)
    step = "deploy_tls_secret"

    out = lib_sh(step, **env).stdout
    assert f"secret/{name} created" in out, out
    secret = yaml.safe_load(state.read_text())
    assert secret["kind"] == "Secret" and secret["type"] == "kubernetes.io/tls"
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == (ns, name)
    assert ("Namespace", "", ns) in objs
    for key, f in (("tls.crt", "server.crt"), ("tls.key", "server.key")):
        assert base64.b64decode(secret["data"][key]) == (certs / f).read_bytes()
    calls = log.read_text().splitlines()
    assert calls[0] == f"kubectl apply -f {REPO}/k8s/namespaces.yaml", calls
    # The two ends of one pipeline run at once: either may log first.
    assert "kubectl apply -f -" in calls[1:3], calls
    assert any(f"-n {ns} create secret tls {name} " in c for c in calls[1:3]), calls

    out = lib_sh(step, **env).stdout
    assert f"secret/{name} unchanged" in out and "certificate changed" not in out, out

    own_certificate(certs)
    out = lib_sh(step, **env).stdout
    assert f"secret/{name} configured" in out and "certificate changed" in out, out
    assert base64.b64decode(yaml.safe_load(state.read_text())["data"]["tls.crt"]) == (
        certs / "server.crt"
    ).read_bytes()
    assert "restart" not in log.read_text()


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
    # The Secret portier's DaemonSet once mounted is no longer made.
    assert "create secret tls portier-tls" not in (PROVISION / "lib.sh").read_text()


@pytest.fixture
def vagrant_env(tmp_path):
    """Vagrant kept away from the real home and the repository: its state goes to tmp_path, no
    version check goes out, and the token comes from the environment (no vagrant/.k3s-token)."""
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant not found (scripts/deps.sh installs Debian's vagrant)", pytrace=False)
    env = dict(os.environ)
    for k in ("VAGRANT_DEFAULT_PROVIDER", "P2_WORKERS", "P2_CPUS", "P2_MEMORY", "P2_BOX",
              "P2_BOX_VERSION", "P2_K3S_VERSION", "SUDO_USER"):
        env.pop(k, None)
    env.update(
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_NO_COLOR="1",
        # Were a box ever looked for, the search would end at once, on loopback.
        VAGRANT_SERVER_URL="http://127.0.0.1:9",
        P2_K3S_TOKEN="offline-test-token",
        P2_LOGIN="wil",
        # Its own settings file: never the one a VM of the developer's may have in vagrant/.
        P2_SETTINGS_FILE=str(tmp_path / "p2-settings"),
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


def test_deploy_restarts_only_what_a_rebuilt_image_changed(tmp_path):
    """make deploy imports every image, but restarts a workload only when its image's digest
    changed (rebuilt under the same tag): nothing when nothing changed, never portier for a config
    change alone (its hashed ConfigMap rolls it), just the one whose image is new otherwise."""
    bindir, images, log = tmp_path / "bin", tmp_path / "images", tmp_path / "k3s.log"
    store = tmp_path / "store"  # the fake containerd: one file a reference, holding its digest
    for d in (bindir, images, store):
        d.mkdir()
    names = ["app1", "app2", "app3", "portier"]
    for name in names:
        (images / f"{name}.tar").write_text(f"{name} v1\n")
        (images / f"{name}.ref").write_text(f"localhost/portier/{name}:0.1.0\n")
    (bindir / "k3s").write_text(f"""#!/bin/bash
set -euo pipefail
echo "$*" >> "{log}"
key() {{ echo "{store}/$(echo "$1" | tr '/:' '__')"; }}
case "$*" in
"ctr version") ;;
"ctr --namespace k8s.io images ls name=="*)
    ref=${{6#name==}}
    echo "REF TYPE DIGEST SIZE PLATFORMS LABELS"
    if [ -f "$(key "$ref")" ]; then
        echo "$ref application/x sha256:$(cat "$(key "$ref")") 1 linux/amd64 -"
    fi ;;
"ctr --namespace k8s.io images import "*)
    tar=$6; ref=$(cat "${{tar%.tar}}.ref")
    sha256sum < "$tar" | cut -c1-64 > "$(key "$ref")" ;;
"ctr --namespace k8s.io images label "*" io.cri-containerd.pinned=pinned") ;;
"kubectl -n "*" rollout restart "*) ;;
*) exit 1 ;;
esac
""")
    (bindir / "k3s").chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}", FAKE_IMAGES=str(images),
               P2_CHANGED_IMAGES=str(tmp_path / "changed"))
    step = "IMAGES_DIR=$FAKE_IMAGES; import_images; deploy_restart"

    def restarts():
        calls = log.read_text().splitlines() if log.exists() else []
        log.write_text("")
        return sorted(c.split()[-1] for c in calls if "rollout restart" in c)

    lib_sh(step, **env)  # the first import: every image is new
    assert restarts() == ["daemonset/portier", "deployment/app1", "deployment/app2",
                          "deployment/app3"]
    out = lib_sh(step, **env).stdout
    assert restarts() == [], "restarted with every image unchanged"
    assert out.count("its image is unchanged: no restart") == 4, out
    (images / "portier.tar").write_text("portier v2\n")
    lib_sh(step, **env)
    assert restarts() == ["daemonset/portier"]
    (images / "app2.tar").write_text("app2 v2\n")
    lib_sh(step, **env)
    assert restarts() == ["deployment/app2"]


# ---------------------------------------------------------------------------------------------
# The VM's settings: fixed by the first `vagrant up` (make up) in vagrant/.p2-settings, read by
# every later vagrant command there, forgotten by make down.

# Loads the Vagrantfile in the working directory as Vagrant does, and prints each machine's
# configuration as JSON: its libvirt domain name (vagrant-libvirt's own code makes it), its
# VirtualBox name, CPUs, memory, box, and each provisioner's environment. Nothing is booted, and
# neither libvirt nor VirtualBox is asked anything.
VAGRANT_DUMP = r"""
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: Dir.pwd)
out = env.machine_names.map do |name|
  m = env.machine(name, :libvirt)
  namer = VagrantPlugins::ProviderLibvirt::Action::SetNameOfDomain.new(nil, nil)
  {
    "name" => name.to_s,
    "libvirt_domain" => namer.build_domain_name(machine: m, root_path: env.root_path),
    "virtualbox_name" => m.config.vm.get_provider_config(:virtualbox).name,
    "cpus" => m.provider_config.cpus, "memory" => m.provider_config.memory,
    "box" => m.config.vm.box, "box_version" => m.config.vm.box_version.to_s,
    "provisioners" => m.config.vm.provisioners.map { |p| [p.name.to_s, p.config.env] }.to_h,
  }
end
puts JSON.generate(out)
"""


def vagrant_dump(env, cwd=REPO / "vagrant"):
    """(machines as VAGRANT_DUMP gives them, stderr) for the Vagrantfile in cwd."""
    r = run(["ruby", "-e", VAGRANT_DUMP], cwd=cwd, env=env, timeout=120)
    return json.loads(r.stdout.splitlines()[-1]), r.stderr


def settings_of(path):
    lines = [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
    return dict(l.split("=", 1) for l in lines)


@pytest.fixture
def unusable_vbox(tmp_path):
    """A VBoxManage of a version no Vagrant supports, logging its calls: `vagrant up` stops at
    "The provider 'virtualbox' ... isn't usable", after reading the Vagrantfile and before any box
    or machine."""
    bindir = tmp_path / "vboxbin"
    bindir.mkdir()
    log = tmp_path / "vbox.log"
    (bindir / "VBoxManage").write_text(
        f'#!/bin/sh\necho "$*" >> "{log}"\n[ "$1" = --version ] && echo 99.0.0r1\nexit 0\n'
    )
    (bindir / "VBoxManage").chmod(0o755)
    return bindir, log


def test_first_vagrant_up_fixes_the_settings(vagrant_env, unusable_vbox):
    """`sudo P2_WORKERS=1 P2_CPUS=3 make up` names the VM after the user who ran sudo and writes
    its settings down; later commands without P2_WORKERS (make down, make deploy) still see the
    agent, and a different value in the environment is ignored, with a warning."""
    bindir, vbox_log = unusable_vbox
    settings = Path(vagrant_env["P2_SETTINGS_FILE"])
    env = dict(vagrant_env, PATH=f"{bindir}:{vagrant_env['PATH']}", USER="root",
               SUDO_USER="alice", P2_WORKERS="1", P2_CPUS="3")
    del env["P2_LOGIN"]
    r = run(["vagrant", "up"], cwd=REPO / "vagrant", env=env, check=False, timeout=120)
    assert r.returncode != 0 and "isn't usable" in r.stdout + r.stderr, r.stdout + r.stderr
    assert vbox_log.read_text().split() == ["--version"], "vagrant went past the version check"
    assert settings_of(settings) == {"P2_LOGIN": "alice", "P2_WORKERS": "1",
                                     "VAGRANT_DEFAULT_PROVIDER": "virtualbox", "P2_CPUS": "3"}

    later = {k: v for k, v in env.items() if k not in ("P2_WORKERS", "P2_CPUS", "SUDO_USER")}
    machines, err = vagrant_dump(later)  # make down, make deploy: no P2_WORKERS, plain $USER
    assert [m["name"] for m in machines] == ["aliceS", "aliceSW"]
    assert {m["cpus"] for m in machines} == {3}
    assert "ignored" not in err, err

    machines, err = vagrant_dump(dict(later, P2_WORKERS="0", P2_LOGIN="bob", P2_MEMORY="4096"))
    assert [m["name"] for m in machines] == ["aliceS", "aliceSW"]
    assert {m["memory"] for m in machines} == {2048}
    for name in ("P2_WORKERS=0", "P2_LOGIN=bob", "P2_MEMORY=4096"):
        assert f"{name} in the environment is ignored" in err, err
    assert err.count("P2_WORKERS=0 in the environment") == 1, err
    assert "make down" in err


def test_sudo_names_the_machines_after_the_user(vagrant_env):
    """Without P2_LOGIN, the login is the user who ran sudo, not root; no command but up writes
    the settings."""
    env = dict(vagrant_env, USER="root", SUDO_USER="alice")
    del env["P2_LOGIN"]
    machines, _ = vagrant_dump(env)
    assert [m["name"] for m in machines] == ["aliceS"]
    r = vagrant_validate(REPO / "vagrant", env, "--ignore-provider")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not Path(env["P2_SETTINGS_FILE"]).exists()


def test_settings_fix_the_provider(vagrant_env, fake_vboxmanage):
    """The provider in the settings is the one vagrant uses, whatever VAGRANT_DEFAULT_PROVIDER
    says later: with libvirt fixed, VirtualBox is not even asked its version."""
    bindir, log = fake_vboxmanage
    settings = Path(vagrant_env["P2_SETTINGS_FILE"])
    env = dict(vagrant_env, PATH=f"{bindir}:{vagrant_env['PATH']}")

    def validate(provider_in_file, **extra):
        settings.write_text(
            f"P2_LOGIN=wil\nP2_WORKERS=0\nVAGRANT_DEFAULT_PROVIDER={provider_in_file}\n")
        log.write_text("")
        r = vagrant_validate(REPO / "vagrant", dict(env, **extra))
        assert r.returncode == 0, r.stdout + r.stderr
        return log.read_text().split(), r.stderr

    asked, _ = validate("virtualbox")
    assert asked == ["--version"]  # the control: vagrant does ask VirtualBox
    asked, _ = validate("libvirt")
    assert asked == []
    asked, err = validate("libvirt", VAGRANT_DEFAULT_PROVIDER="virtualbox")
    assert asked == []
    assert "VAGRANT_DEFAULT_PROVIDER=virtualbox in the environment is ignored" in err


def test_vagrant_pins_the_box_and_k3s_and_names_the_domains(vagrant_env):
    """Every machine gets the pinned box version and k3s release (real version strings),
    overridable; the libvirt domain is named after the machine alone, like the VirtualBox VM
    (vagrant-libvirt's default would be "vagrant_wilS")."""
    text = (REPO / "vagrant/Vagrantfile").read_text()
    box_version = re.search(r'^DEFAULT_BOX_VERSION = "(.*)"$', text, re.M).group(1)
    k3s_version = re.search(r'^DEFAULT_K3S_VERSION = "(.*)"$', text, re.M).group(1)
    assert re.fullmatch(r"12\.\d{8}\.\d+", box_version), box_version  # debian/bookworm64's form
    assert re.fullmatch(r"v1\.3[12]\.\d+\+k3s\d+", k3s_version), k3s_version
    machines, _ = vagrant_dump(dict(vagrant_env, P2_WORKERS="2"))
    assert [m["name"] for m in machines] == ["wilS", "wilSW", "wilSW2"]
    for m in machines:
        assert m["libvirt_domain"] == m["name"] == m["virtualbox_name"]
        assert (m["box"], m["box_version"]) == ("debian/bookworm64", box_version)
        assert {e["P2_K3S_VERSION"] for e in m["provisioners"].values()} == {k3s_version}
    machines, _ = vagrant_dump(dict(vagrant_env, P2_K3S_VERSION="v1.32.1+k3s1",
                                    P2_BOX_VERSION="12.20240905.1"))
    assert machines[0]["box_version"] == "12.20240905.1"
    assert machines[0]["provisioners"]["server"]["P2_K3S_VERSION"] == "v1.32.1+k3s1"
    machines, _ = vagrant_dump(dict(vagrant_env, P2_BOX="example/other"))
    assert machines[0]["box_version"] == ""  # another box: no version forced on it


def test_make_down_forgets_the_settings(fake_vagrant):
    """make down deletes vagrant/.p2-settings once every machine is destroyed, and keeps it when
    vagrant destroy fails (the VM may still be there)."""
    repo, env, log = fake_vagrant
    settings = repo / "vagrant/.p2-settings"
    settings.write_text("P2_LOGIN=wil\nP2_WORKERS=1\nVAGRANT_DEFAULT_PROVIDER=virtualbox\n")
    r = run(["make", "--no-print-directory", "down"], cwd=repo,
            env=dict(env, FAKE_DESTROY_FAILS="1"), check=False)
    assert r.returncode != 0 and settings.exists()
    run(["make", "--no-print-directory", "down"], cwd=repo, env=env)
    assert not settings.exists()
    assert vm_calls(log)[-1].endswith("destroy -f")


def test_vm_settings_stay_on_the_host():
    r = run(["git", "check-ignore", "vagrant/.p2-settings"], cwd=REPO, check=False)
    assert r.stdout.split() == ["vagrant/.p2-settings"], "vagrant/.p2-settings is not ignored"
    assert '"/vagrant/.p2-settings"' in (REPO / "vagrant/Vagrantfile").read_text()


# ---------------------------------------------------------------------------------------------
# vagrant/check-host.sh: make up's first step, with stand-ins for vagrant, VBoxManage, uname, nproc
# and free on a PATH that holds nothing else.

CHECK_HOST = REPO / "vagrant/check-host.sh"


@pytest.fixture
def host(tmp_path):
    """A function (vagrant=..., vbox=..., plugins=..., arch=..., cpus=..., mib=..., **env) that
    runs check-host.sh on a host made of stand-ins (vbox=None: no VirtualBox), and returns
    (CompletedProcess, the vagrant and VBoxManage calls)."""
    bindir = tmp_path / "hostbin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "sort", "head", "tail", "sed", "grep", "awk", "cat"):
        os.symlink(shutil.which(tool), bindir / tool)
    log = tmp_path / "host.log"

    def fake(name, body):
        (bindir / name).write_text(f'#!/bin/bash\necho "{name} $*" >> "{log}"\n{body}\n')
        (bindir / name).chmod(0o755)

    def check(vagrant="2.3.4", vbox="7.0.14r161095", plugins=(), arch="x86_64", cpus=8,
              mib=16000, **env):
        for name in ("VBoxManage",):
            if (bindir / name).exists():
                (bindir / name).unlink()
        log.write_text("")
        listed = "".join(f"echo '{p}'; " for p in plugins) or ":"
        fake("vagrant", f'case "$1" in --version) echo "Vagrant {vagrant}" ;; '
                        f'plugin) {listed} ;; *) exit 1 ;; esac')
        if vbox is not None:
            fake("VBoxManage", f'[ "$1" = --version ] && echo "{vbox}"')
        fake("uname", f'[ "$1" = -m ] && echo {arch}')
        fake("nproc", f"echo {cpus}")
        fake("free", f'echo "              total        used        free"; '
                     f'echo "Mem:          {mib}        1000        {mib}"')
        full = {"PATH": str(bindir), "HOME": str(tmp_path),
                "P2_SETTINGS_FILE": str(tmp_path / "no-settings"), **env}
        r = run([str(CHECK_HOST)], env=full, check=False, timeout=60)
        calls = [c for c in log.read_text().splitlines()
                 if c.split()[0] in ("vagrant", "VBoxManage")]
        return r, calls

    return check


@pytest.mark.parametrize(
    "vagrant, vbox, needs",
    [
        ("2.3.4", "7.1.4r165100", "2.4.2"),  # Debian 12's vagrant and VirtualBox 7.1
        ("2.4.1", "7.1.0r164728", "2.4.2"),
        ("2.4.3", "7.2.0r169000", "2.4.9"),
        ("2.4.8", "7.2.4_Debianr170995", "2.4.9"),
    ],
)
def test_check_host_refuses_a_vagrant_too_old_for_virtualbox(host, vagrant, vbox, needs):
    """Vagrant refuses a VirtualBox newer than it knows ("The provider 'virtualbox' ... isn't
    usable"); check-host says so first, names the Vagrant needed and where to get it, and asks
    vagrant nothing but its version."""
    r, calls = host(vagrant=vagrant, vbox=vbox)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.replace("\n", " ")
    assert f"needs Vagrant {needs} or later" in err and f"this is Vagrant {vagrant}" in err, err
    assert "https://apt.releases.hashicorp.com" in err
    assert "https://releases.hashicorp.com/vagrant/" in err
    assert "isn't usable" in err
    assert calls == ["vagrant --version", "VBoxManage --version"], calls


@pytest.mark.parametrize(
    "vagrant, vbox",
    [("2.3.4", "7.0.14r161095"), ("2.3.4", "6.1.50r161033"), ("2.4.2", "7.1.4r165100"),
     ("2.4.9", "7.2.0r169000"), ("2.4.10", "7.2.4r170995")],
)
def test_check_host_passes_versions_that_fit(host, vagrant, vbox):
    r, calls = host(vagrant=vagrant, vbox=vbox)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Vagrant {vagrant}, VirtualBox {vbox}" in r.stdout
    assert calls == ["vagrant --version", "VBoxManage --version"], calls


def test_check_host_on_other_hosts(host, tmp_path):
    """The other ways a host does not fit, each said with what to do; and room only warned of."""
    r, _ = host(vbox="7.2.0r1", vagrant="2.4.9", arch="aarch64")
    assert r.returncode == 1 and "x86-64" in r.stderr and "aarch64" in r.stderr, r.stderr
    r, _ = host(vagrant="2.2.19")
    assert r.returncode == 1 and "older than 2.3.4" in r.stderr, r.stderr
    r, _ = host(vbox="6.0.24r139119")
    assert r.returncode == 1 and "too old" in r.stderr, r.stderr
    r, _ = host(vbox=None)
    assert r.returncode == 1 and "VAGRANT_DEFAULT_PROVIDER=libvirt" in r.stderr, r.stderr
    r, _ = host(vbox="7.3.0r1", vagrant="2.4.9")  # newer than the check knows: a warning
    assert r.returncode == 0 and "newer than this check knows" in r.stderr, r.stderr
    r, _ = host(cpus=1, mib=2048, P2_WORKERS="1")
    assert r.returncode == 0, r.stderr
    assert "this host has 1" in r.stderr and "5120 MiB" in r.stderr, r.stderr


def test_check_host_libvirt(host, tmp_path):
    """libvirt needs the vagrant-libvirt plugin and no VirtualBox at all; the provider comes from
    the settings file when there is one, whatever the environment says."""
    r, calls = host(vbox=None, plugins=["vagrant-libvirt (0.11.2, system)"],
                    VAGRANT_DEFAULT_PROVIDER="libvirt")
    assert r.returncode == 0 and "libvirt" in r.stdout, r.stdout + r.stderr
    assert calls == ["vagrant --version", "vagrant plugin list"], calls
    r, _ = host(vbox=None, plugins=[], VAGRANT_DEFAULT_PROVIDER="libvirt")
    assert r.returncode == 1 and "vagrant plugin install vagrant-libvirt" in r.stderr, r.stderr
    settings = tmp_path / "fixed"
    settings.write_text("P2_LOGIN=wil\nP2_WORKERS=0\nVAGRANT_DEFAULT_PROVIDER=libvirt\n")
    r, calls = host(vbox="7.1.4r165100", plugins=["vagrant-libvirt (0.11.2, system)"],
                    VAGRANT_DEFAULT_PROVIDER="virtualbox", P2_SETTINGS_FILE=str(settings))
    assert r.returncode == 0 and "VBoxManage --version" not in calls, (r.stderr, calls)


def test_make_up_checks_the_host_before_anything(fake_vagrant):
    """With Vagrant 2.3.4 and VirtualBox 7.1, make up stops at the check: no certificate made,
    vagrant asked nothing but its version."""
    repo, env, log = fake_vagrant
    r = run(["make", "--no-print-directory", "up"], cwd=repo,
            env=dict(env, FAKE_VBOX_VERSION="7.1.6r167084"), check=False)
    assert r.returncode != 0 and "Vagrant 2.4.2 or later" in r.stderr, r.stdout + r.stderr
    assert vm_calls(log) == [] and not (repo / "vagrant/certs").exists()


# ---------------------------------------------------------------------------------------------
# Provisioning: images pinned against the kubelet's garbage collection, an agent that waits for
# its portier, the ConfigMaps of earlier configs deleted.


def test_import_pins_every_image(tmp_path):
    """Every image import_images imports is labelled pinned, again after a re-import that
    replaced it (and its labels)."""
    bindir, images, labels = tmp_path / "bin", tmp_path / "images", tmp_path / "labels"
    for d in (bindir, images, labels):
        d.mkdir()
    for name in IMAGE_NAMES:
        (images / f"{name}.tar").write_text(name)
        (images / f"{name}.ref").write_text(f"localhost/portier/{name}:0.1.0\n")
    (bindir / "k3s").write_text(f"""#!/bin/bash
set -euo pipefail
key() {{ echo "{labels}/$(echo "$1" | tr '/:' '__')"; }}
case "$*" in
"ctr version") ;;
"ctr --namespace k8s.io images ls name=="*) echo "REF TYPE DIGEST" ;;
"ctr --namespace k8s.io images import "*)  # a new image record: no labels
    ref=$(cat "${{6%.tar}}.ref"); : > "$(key "$ref")" ;;
"ctr --namespace k8s.io images label "*)
    [ -f "$(key "$6")" ] || {{ echo "no image $6" >&2; exit 1; }}
    echo "$7" >> "$(key "$6")" ;;
*) exit 1 ;;
esac
""")
    (bindir / "k3s").chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}", FAKE_IMAGES=str(images),
               P2_CHANGED_IMAGES=str(tmp_path / "changed"))
    for _ in range(2):
        lib_sh("IMAGES_DIR=$FAKE_IMAGES; import_images", **env)
        pinned = {f.name: f.read_text().split() for f in labels.iterdir()}
        assert pinned == {f"localhost_portier_{n}_0.1.0": ["io.cri-containerd.pinned=pinned"]
                          for n in IMAGE_NAMES}, pinned
    for script in ("server.sh", "agent.sh", "images.sh"):
        assert "\nimport_images\n" in (PROVISION / script).read_text(), script


@pytest.fixture
def fake_node(tmp_path):
    """An agent node's k3s crictl and curl: portier's container appears after $RUNNING_AFTER calls,
    /readyz answers 200 after $READY_AFTER calls (never when negative). Returns (env, log)."""
    bindir, state, log = tmp_path / "nodebin", tmp_path / "state", tmp_path / "node.log"
    bindir.mkdir()
    state.mkdir()
    counter = f"""n=$(cat "{state}/$1" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{state}/$1"
"""
    (bindir / "k3s").write_text(f"""#!/bin/bash
echo "k3s $*" >> "{log}"
tick() {{ {counter} }}
case "$*" in
"crictl ps --name ^portier\\$ --state running -q")
    tick ps; [ "$n" -gt "${{RUNNING_AFTER:-0}}" ] && echo 0123456789ab ;;
"crictl pods") echo "POD ID  NAME" ;;
*) exit 1 ;;
esac
""")
    (bindir / "curl").write_text(f"""#!/bin/bash
echo "curl $*" >> "{log}"
tick() {{ {counter} }}
tick curl
[ "${{READY_AFTER:-0}}" -ge 0 ] && [ "$n" -gt "${{READY_AFTER:-0}}" ] || exit 22
""")
    for tool in ("k3s", "curl"):
        (bindir / tool).chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}", P2_NODE_NAME="wilsw", P2_WAIT_INTERVAL="0",
               P2_WAIT_TRIES="20")
    return env, log


def test_agent_waits_for_its_portier(fake_node):
    """The agent's provisioning ends once portier's pod runs on it and its /readyz (on the admin
    address of the cluster config) answers; it fails, saying where to look, when that never
    happens."""
    env, log = fake_node
    out = lib_sh("wait_for_local_portier", RUNNING_AFTER="3", READY_AFTER="2", **env).stdout
    assert "portier runs on wilsw and is ready" in out, out
    calls = log.read_text().splitlines()
    assert sum("crictl ps" in c for c in calls) == 6, calls  # 3 not yet, then 3 until ready
    curls = [c for c in calls if c.startswith("curl ")]
    assert len(curls) == 3, curls
    assert all(c.endswith(" http://127.0.0.1:9180/readyz") for c in curls), curls
    r = run(["bash", "-euo", "pipefail", "-c", f'. "{PROVISION}/lib.sh"; wait_for_local_portier'],
            env=dict(os.environ, P2_REPO=str(REPO), READY_AFTER="-1", **env), check=False)
    assert r.returncode != 0, r.stdout
    assert "not running and ready on wilsw after 20 tries" in r.stderr, r.stderr
    agent = (PROVISION / "agent.sh").read_text()
    assert agent.index("\nimport_images\n") < agent.index("\nwait_for_local_portier\n")


@pytest.fixture
def fake_cluster(tmp_path):
    """A k3s kubectl over a namespace portier made of files: the DaemonSet's and the pods' JSON, and
    one file per ConfigMap. Every call is logged."""
    bindir, state, log = tmp_path / "clusterbin", tmp_path / "cluster", tmp_path / "cluster.log"
    bindir.mkdir()
    (state / "configmaps").mkdir(parents=True)
    (bindir / "k3s").write_text(f"""#!/bin/bash
set -euo pipefail
echo "$*" >> "{log}"
case "$*" in
"kubectl -n portier get daemonset/portier -o json") cat "{state}/daemonset.json" ;;
"kubectl -n portier get pods -o json") cat "{state}/pods.json" ;;
"kubectl -n portier get configmaps -o name")
    for f in "{state}"/configmaps/*; do [ -e "$f" ] && echo "configmap/$(basename "$f")"; done; : ;;
"kubectl -n portier delete configmap "*)
    shift 5
    for cm in "$@"; do rm "{state}/configmaps/$cm"; echo "configmap \\"$cm\\" deleted"; done ;;
*) exit 1 ;;
esac
""")
    (bindir / "k3s").chmod(0o755)
    return dict(PATH=f"{bindir}:{os.environ['PATH']}"), state, log


def daemonset_json(config_map):
    return json.dumps({"kind": "DaemonSet", "spec": {"template": {"spec": {"volumes": [
        {"name": "config", "projected": {"sources": [{"configMap": {"name": config_map}}]}}]}}}})


def pods_json(*config_maps):
    return json.dumps({"kind": "List", "items": [
        {"spec": {"volumes": [{"projected": {"sources": [{"configMap": {"name": cm}}]}}]}}
        for cm in config_maps]})


def test_deploy_prunes_the_unused_configs(fake_cluster):
    """After a rollout, the portier-config-<hash> ConfigMaps that neither the DaemonSet nor a pod
    (one still draining) mounts are deleted, and nothing else; nothing at all when the DaemonSet
    cannot be read or names no config."""
    env, state, log = fake_cluster
    cms = state / "configmaps"
    for name in ("portier-config-aaaa1111", "portier-config-bbbb2222", "portier-config-cccc3333",
                 "kube-root-ca.crt", "other-config"):
        (cms / name).write_text("")
    (state / "daemonset.json").write_text(daemonset_json("portier-config-cccc3333"))
    (state / "pods.json").write_text(
        pods_json("portier-config-cccc3333", "portier-config-bbbb2222"))

    out = lib_sh("deploy_prune_configs", **env).stdout
    assert sorted(p.name for p in cms.iterdir()) == [
        "kube-root-ca.crt", "other-config", "portier-config-bbbb2222", "portier-config-cccc3333"]
    assert "portier-config-aaaa1111" in out
    (state / "pods.json").write_text(pods_json("portier-config-cccc3333"))  # the old pod is gone
    lib_sh("deploy_prune_configs", **env)
    assert sorted(p.name for p in cms.iterdir()) == [
        "kube-root-ca.crt", "other-config", "portier-config-cccc3333"]
    out = lib_sh("deploy_prune_configs", **env).stdout
    assert "none unused" in out and "delete" not in log.read_text().splitlines()[-1]

    (state / "daemonset.json").write_text(json.dumps({"kind": "DaemonSet", "spec": {}}))
    (cms / "portier-config-dddd4444").write_text("")
    lib_sh("deploy_prune_configs", **env)  # a DaemonSet naming no config: leave all alone
    (state / "daemonset.json").unlink()  # cannot be read: the same
    lib_sh("deploy_prune_configs", **env)
    assert (cms / "portier-config-dddd4444").exists() and (cms / "portier-config-cccc3333").exists()


def test_deploy_prunes_after_the_rollout():
    """What goes comes after the rollout (deploy_wait): the unused ConfigMaps, the Secret the
    DaemonSet mounted before; and the check that portier serves the Ingress comes before."""
    for script in ("server.sh", "deploy.sh"):
        text = (PROVISION / script).read_text()
        wait = text.index("\ndeploy_wait\n")
        assert wait < text.index("\ndeploy_wait_ingress\n"), script
        assert wait < text.index("\ndeploy_prune_configs\n"), script
        assert wait < text.index("\ndeploy_prune_old_secret\n"), script
        assert text.index("\ndeploy_wait_ingress\n") < text.index("\ndeploy_hints\n"), script


def test_provision_steps_are_defined():
    """Every step the provision scripts call (a line that is a bare word) is a function of
    lib.sh: a step removed there and left here would stop provisioning halfway, on the VM."""
    lib = (PROVISION / "lib.sh").read_text()
    defined = set(re.findall(r"^([a-z_][a-z0-9_]*)\(\) \{$", lib, re.M))
    keywords = {"fi", "done", "esac", "then", "else", "do"}
    for script in ("server.sh", "agent.sh", "images.sh", "deploy.sh"):
        text = (PROVISION / script).read_text()
        steps = set(re.findall(r"^([a-z_][a-z0-9_]*)$", text, re.M)) - keywords
        assert steps, script
        assert steps <= defined, (script, sorted(steps - defined))


def test_vm_builds_with_every_library_portier_links():
    """The VM builds the images itself: every pkg-config module the Makefile links (PKGS) has its
    Debian package, as scripts/deps.sh maps it, in lib.sh's BUILD_PACKAGES (jansson, say)."""
    make = (REPO / "Makefile").read_text()
    modules = re.search(r"^PKGS\s*:=(.*)$", make, re.M).group(1).split()
    deps = (REPO / "scripts/deps.sh").read_text()
    block = re.search(r"^pkg_modules=\((.*?)^\)", deps, re.M | re.S).group(1)
    package_of = dict(re.findall(r'^\s*"([^":]+):([^"]+)"$', block, re.M))
    lib = (PROVISION / "lib.sh").read_text()
    build = re.search(r"^BUILD_PACKAGES=\(([^)]*)\)", lib, re.M).group(1).split()
    assert "jansson" in modules and modules, modules
    missing = [(m, package_of.get(m)) for m in modules if package_of.get(m) not in build]
    assert missing == [], missing


@pytest.fixture
def fake_ingress(tmp_path):
    """A k3s kubectl that answers `get ingress` with the Ingress's status addresses: none for
    the first $EMPTY_FOR calls (never any when negative), then 192.168.56.110. Logs every call."""
    bindir, state, log = tmp_path / "ingbin", tmp_path / "ingstate", tmp_path / "ing.log"
    bindir.mkdir()
    (bindir / "k3s").write_text(f"""#!/bin/bash
set -euo pipefail
echo "$*" >> "{log}"
n=$(cat "{state}" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{state}"
case "$*" in
"kubectl -n apps get ingress p2 -o jsonpath={{.status.loadBalancer.ingress[*].ip}}")
    [ "${{EMPTY_FOR:-0}}" -ge 0 ] && [ "$n" -gt "${{EMPTY_FOR:-0}}" ] && printf 192.168.56.110
    exit 0 ;;
*) exit 1 ;;
esac
""")
    (bindir / "k3s").chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}", P2_WAIT_INTERVAL="0", P2_WAIT_TRIES="10")
    return env, log


def test_deploy_waits_until_portier_serves_the_ingress(fake_ingress, objs):
    """After the rollout, provisioning waits until the apps' Ingress has an address in its status
    (portier took it as its own and wrote it, as the ClusterRole lets it), and fails saying where
    to look when that never happens: a portier that reads the API but does not serve the Ingress
    is ready all the same."""
    env, log = fake_ingress
    assert ("Ingress", "apps", "p2") in objs  # the one lib.sh waits for
    out = lib_sh("deploy_wait_ingress", EMPTY_FOR="3", **env).stdout
    assert "portier serves the Ingress apps/p2 at 192.168.56.110" in out, out
    assert len(log.read_text().splitlines()) == 4
    log.unlink()
    r = run(["bash", "-euo", "pipefail", "-c", f'. "{PROVISION}/lib.sh"; deploy_wait_ingress'],
            env=dict(os.environ, P2_REPO=str(REPO), EMPTY_FOR="-1", **env), check=False)
    assert r.returncode != 0, r.stdout
    assert "no address in its status after 10 tries" in r.stderr, r.stderr
    assert "logs daemonset/portier" in r.stderr and "auth can-i" in r.stderr, r.stderr
    assert len(log.read_text().splitlines()) == 10


def test_deploy_deletes_the_secret_portier_mounted_before(tmp_path):
    """An earlier provision made the Secret portier-tls for the DaemonSet to mount; once the
    rollout is done it is deleted (no unused copy of the key is left), quietly when it is not
    there, and a failure to delete it is told but fails nothing."""
    bindir, log = tmp_path / "bin", tmp_path / "k3s.log"
    bindir.mkdir()
    (bindir / "k3s").write_text(f"""#!/bin/bash
echo "$*" >> "{log}"
case "$*" in
"kubectl -n portier delete secret portier-tls --ignore-not-found")
    [ -n "${{DELETE_FAILS:-}}" ] && exit 1
    [ -n "${{PRESENT:-}}" ] && echo 'secret "portier-tls" deleted'
    exit 0 ;;
*) exit 1 ;;
esac
""")
    (bindir / "k3s").chmod(0o755)
    env = dict(PATH=f"{bindir}:{os.environ['PATH']}")
    out = lib_sh("deploy_prune_old_secret; echo done", PRESENT="1", **env).stdout
    assert 'secret "portier-tls" deleted' in out and "done" in out, out
    out = lib_sh("deploy_prune_old_secret; echo done", **env).stdout
    assert out.strip() == "done", out
    out = lib_sh("deploy_prune_old_secret; echo done", DELETE_FAILS="1", **env).stdout
    assert "warning: could not delete" in out and out.rstrip().endswith("done"), out
    assert log.read_text().splitlines() == [
        "kubectl -n portier delete secret portier-tls --ignore-not-found"] * 3
