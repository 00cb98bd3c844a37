"""Fixtures for the offline checks of the cluster side: k8s/, the images, vagrant/.

Nothing here boots a VM or reaches a cluster. The manifests are rendered by Debian's kubectl
(kubernetes-client 1.20, unpacked into build/tools by scripts/deps.sh); the schemas come from the
npm package kubernetes-models, installed into tests/k8s/node_modules by `npm ci` from the committed
package-lock.json; the images are built by vagrant/provision/server.sh itself with P2_OFFLINE=1,
the VM's own steps up to the k3s install, so what is checked here is what the VM would get.
"""

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8shelp import HERE, REPO, index, provision_env, run  # noqa: E402

DEBIAN_KUBECTL = REPO / "build/tools/kubernetes-client/usr/bin/kubectl"


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Debian's kubectl; $KUBECTL overrides."""
    path = os.environ.get("KUBECTL") or str(DEBIAN_KUBECTL)
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} not found: scripts/deps.sh unpacks Debian's kubernetes-client there",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def portier_bin() -> Path:
    """portier as `make` built it (dynamically linked; the images' static one is checked apart)."""
    path = Path(os.environ.get("PORTIER_BUILD") or REPO / "build") / "portier"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found (run make, or set PORTIER_BUILD)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def version(portier_bin) -> str:
    """The project's version, as `portier -v` prints it on its first line."""
    first = run([str(portier_bin), "-v"]).stdout.splitlines()[0]
    m = re.fullmatch(r"portier (\S+)", first.strip())
    assert m, f"portier -v said {first!r}"
    return m.group(1)


def render(kubectl: str) -> str:
    return run([kubectl, "kustomize", str(REPO / "k8s")]).stdout


@pytest.fixture(scope="session")
def rendered_text(kubectl) -> str:
    return render(kubectl)


@pytest.fixture(scope="session")
def rendered(rendered_text) -> List[dict]:
    """Every object `kubectl kustomize k8s` renders."""
    return [d for d in yaml.safe_load_all(rendered_text) if d]


@pytest.fixture(scope="session")
def objs(rendered) -> Dict[tuple, dict]:
    return index(rendered)


@pytest.fixture(scope="session")
def argocd_app() -> dict:
    return yaml.safe_load((REPO / "k8s/argocd/application.yaml").read_text())


@pytest.fixture(scope="session")
def cluster_config(objs) -> dict:
    """portier's config as the rendered ConfigMap carries it, parsed."""
    (cm,) = [
        o for k, o in objs.items() if k[0] == "ConfigMap" and k[2].startswith("portier-config")
    ]
    return yaml.safe_load(cm["data"]["portier.yaml"])


@pytest.fixture(scope="session")
def validate() -> Callable[[List[dict]], List[dict]]:
    """A function: objects -> [{kind, name, errors}], by tests/k8s/validate.js under Node.js.

    `npm ci` runs first when node_modules does not match package-lock.json (a stamp remembers).
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found (scripts/deps.sh installs it)", pytrace=False)
    lock = (HERE / "package-lock.json").read_bytes()
    stamp = HERE / "node_modules/.portier-lock-sha256"
    want = hashlib.sha256(lock).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != want:
        run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, timeout=600)
        stamp.write_text(want + "\n")

    def _validate(objects: List[dict]) -> List[dict]:
        r = run(["node", str(HERE / "validate.js")], input=json.dumps(objects), cwd=HERE)
        return json.loads(r.stdout)

    return _validate


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    """A directory holding ca.crt, ca.key, server.crt and server.key as scripts/certs.sh makes them
    (the pair vagrant/provision puts into the Secret apps-tls, which the apps' Ingress names)."""
    d = tmp_path_factory.mktemp("certs")
    run(["bash", str(REPO / "scripts/certs.sh"), str(d)])
    return d


@pytest.fixture(scope="session")
def provisioned(kubectl) -> Path:
    """Runs vagrant/provision/server.sh here with P2_OFFLINE=1: packages (all present), `make
    images`, the manifests it would apply written to build/k8s-rendered.yaml, then it stops
    before installing k3s. Returns the repository it built in."""
    if os.geteuid() != 0:
        pytest.skip("the images need root to build (umoci keeps owners; setcap) and to chroot into")
    env = provision_env(kubectl)
    run(["bash", str(REPO / "vagrant/provision/server.sh")], env=env, timeout=600)
    return REPO
