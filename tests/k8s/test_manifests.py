"""k8s/ as `kubectl kustomize` renders it: schema-valid, wired together, and what the issue asks.

Every check reads the rendered objects (what `kubectl apply -k k8s` would send), never the source
files, except where the source itself is the point (config/cluster.yaml, the Argo CD Application).
"""

import copy
import os
import re
from pathlib import Path

import pytest
import yaml

from k8shelp import (
    IMAGE_PREFIX,
    MOUNTED_CERT,
    MOUNTED_KEY,
    REPO,
    containers,
    duration_seconds,
    of_kind,
    pod_spec,
    run,
    with_certs,
)

EXPECTED = {
    ("Namespace", "", "apps"),
    ("Namespace", "", "portier"),
    ("Deployment", "apps", "app1"),
    ("Deployment", "apps", "app2"),
    ("Deployment", "apps", "app3"),
    ("Service", "apps", "app1"),
    ("Service", "apps", "app2"),
    ("Service", "apps", "app3"),
    ("DaemonSet", "portier", "portier"),
}


def workloads(rendered):
    return of_kind(rendered, "Deployment", "DaemonSet")


def configmap(objs):
    (cm,) = [o for k, o in objs.items() if k[0] == "ConfigMap"]
    return cm


def test_kubectl_is_debians_1_20(kubectl):
    out = run([kubectl, "version", "--client"]).stdout
    assert 'GitVersion:"v1.20.' in out, out
    if "KUBECTL" not in os.environ:
        assert "build/tools/kubernetes-client/" in kubectl


def test_renders_the_expected_objects(objs):
    names = set(objs)
    configmaps = [k for k in names if k[0] == "ConfigMap"]
    assert len(configmaps) == 1 and configmaps[0][1] == "portier", configmaps
    # kustomize appends a hash of the content, so that a config change rolls the DaemonSet.
    assert configmaps[0][2].startswith("portier-config-"), configmaps
    assert names - set(configmaps) == EXPECTED


def test_every_object_is_schema_valid(rendered, argocd_app, validate):
    results = validate(rendered + [argocd_app])
    assert len(results) == len(rendered) + 1
    bad = [r for r in results if r["errors"]]
    assert not bad, "\n".join(f"{r['kind']} {r['name']}: {r['errors']}" for r in bad)


def test_schema_check_catches_mistakes(objs, argocd_app, validate):
    """The check above is not vacuous: a typo'd field, a wrong type, a missing required field and
    a value outside an enum are each reported, in core objects and in the Argo CD Application."""
    dep = objs[("Deployment", "apps", "app2")]
    broken = []
    for mutate in (
        lambda d: d["spec"].update(replicaz=3),
        lambda d: d["spec"].update(replicas="three"),
        lambda d: d["spec"].pop("selector"),
        lambda d: containers(d)[0].update(imagePullPolicy="Sometimes"),
        lambda d: containers(d)[0]["lifecycle"]["preStop"]["sleep"].update(secondz=5),
        lambda d: containers(d)[0]["ports"][0].update(containerport=8080),
    ):
        d = copy.deepcopy(dep)
        mutate(d)
        broken.append(d)
    app = copy.deepcopy(argocd_app)
    app["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    broken.append(app)
    results = validate(broken)
    missed = [i for i, r in enumerate(results) if not r["errors"]]
    assert not missed, f"mutations {missed} passed validation: {results}"
    assert "unknown field spec.replicaz" in results[0]["errors"]


def test_every_service_selects_one_pod_template(rendered):
    for svc in of_kind(rendered, "Service"):
        sel = svc["spec"]["selector"]
        ns = svc["metadata"]["namespace"]
        matches = [
            w
            for w in workloads(rendered)
            if w["metadata"]["namespace"] == ns
            and sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert (
            len(matches) == 1
        ), f"Service {ns}/{svc['metadata']['name']} selects {len(matches)} workloads"


def test_every_workload_selector_matches_its_template(rendered):
    for w in workloads(rendered):
        sel = w["spec"]["selector"]["matchLabels"]
        assert sel.items() <= w["spec"]["template"]["metadata"]["labels"].items(), w["metadata"][
            "name"
        ]


def test_service_ports_agree_with_container_ports(rendered):
    """A headless Service has no virtual IP: clients connect to the pods at the Service's port
    number, so it must equal the container port its targetPort names."""
    for svc in of_kind(rendered, "Service"):
        ns = svc["metadata"]["namespace"]
        (w,) = [
            w
            for w in workloads(rendered)
            if w["metadata"]["namespace"] == ns
            and svc["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        cports = {p["name"]: p["containerPort"] for c in containers(w) for p in c["ports"]}
        for p in svc["spec"]["ports"]:
            target = p["targetPort"]
            assert target in cports, f"{svc['metadata']['name']}: no container port named {target}"
            assert (
                cports[target] == p["port"]
            ), f"{svc['metadata']['name']}: port {p['port']} != {cports[target]}"
            assert p["name"] == target


def test_probes_use_declared_ports(rendered):
    for w in workloads(rendered):
        for c in containers(w):
            if w["metadata"]["name"] == "portier":
                continue  # declares no ports (test_portier_daemonset says why)
            names = {p["name"] for p in c["ports"]}
            numbers = {p["containerPort"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, f"{c['name']} has no {probe}"
                action = c[probe].get("httpGet") or c[probe].get("tcpSocket")
                assert (
                    action["port"] in names | numbers
                ), f"{c['name']} {probe} port {action['port']}"


def test_services_are_headless(rendered):
    for svc in of_kind(rendered, "Service"):
        assert svc["spec"].get("clusterIP") == "None", svc["metadata"]["name"]


def test_replicas(objs):
    assert objs[("Deployment", "apps", "app1")]["spec"]["replicas"] == 1
    assert objs[("Deployment", "apps", "app2")]["spec"]["replicas"] == 3
    assert objs[("Deployment", "apps", "app3")]["spec"]["replicas"] == 1


def test_images_are_tagged_with_the_version_never_latest(rendered, version):
    assert version and version != "latest"
    for w in workloads(rendered):
        for c in containers(w) + pod_spec(w).get("initContainers", []):
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert "/" not in tag and tag, f"{image}: no tag"
            assert tag != "latest", image
            assert tag == version, f"{image}: tag is not the project version {version}"
            assert name == IMAGE_PREFIX + c["name"], image
            assert c["imagePullPolicy"] == "Never", image


def test_configmap_passes_portier_check(objs, portier_bin, certs, tmp_path):
    """`portier -t` on the ConfigMap, with a certificate where the Secret's would be (the chroot
    check in test_images.py uses the very paths)."""
    cm = configmap(objs)
    assert set(cm["data"]) == {"portier.yaml"}
    path = tmp_path / "portier.yaml"
    text = with_certs(cm["data"]["portier.yaml"], certs / "server.crt", certs / "server.key")
    path.write_text(text)
    r = run([str(portier_bin), "-t", "-c", str(path)], check=False)
    assert r.returncode == 0, r.stderr


def test_config_cluster_yaml_is_the_configmap(objs, portier_bin, certs, tmp_path):
    """kustomize reads no file outside k8s/, so config/cluster.yaml is a link to the file it
    reads; both name the same bytes, and `portier -t` accepts it under its documented name (a
    copy, whose certificate is not the Secret's mount)."""
    link = REPO / "config/cluster.yaml"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "k8s/portier/cluster.yaml").resolve()
    assert configmap(objs)["data"]["portier.yaml"] == link.read_text()
    (tmp_path / "config").mkdir()
    (tmp_path / "config/cluster.yaml").write_text(
        with_certs(link.read_text(), certs / "server.crt", certs / "server.key")
    )
    r = run([str(portier_bin), "-t", "-c", "config/cluster.yaml"], cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr


def test_config_routes_to_the_headless_services(cluster_config, objs):
    routes = {r["host"]: r["service"] for r in cluster_config["routes"]}
    assert routes == {"app1.com": "app1", "app2.com": "app2"}
    assert cluster_config["default_service"] == "app3"
    for name, svc_cfg in cluster_config["services"].items():
        host, _, port = svc_cfg["dns"].rpartition(":")
        svc_name, ns, rest = host.split(".", 2)
        assert rest == "svc.cluster.local", host
        assert svc_name == name
        svc = objs[("Service", ns, svc_name)]
        assert svc["spec"]["clusterIP"] == "None"
        assert int(port) in [p["port"] for p in svc["spec"]["ports"]], svc_cfg
    assert (
        cluster_config.get("resolvers", []) == []
    ), "in the pod, resolv.conf names the cluster DNS"


def test_portier_daemonset(objs, cluster_config):
    ds = objs[("DaemonSet", "portier", "portier")]
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    (c,) = spec["containers"]
    # Rolled by surge: the new pod takes the old one's sockets over (portier -x), so no hostPort
    # may keep it off the node (on the host's network every declared port is one).
    assert "ports" not in c, "a declared port is a hostPort: the surge pod could not schedule"
    rolling = ds["spec"]["updateStrategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}, rolling
    args = c["args"]
    assert args[args.index("-x") + 1].startswith("@"), args  # abstract: no shared volume
    # portier listens on 80 and 443, HTTPS on 443 only.
    listen = {
        int(l["address"].rpartition(":")[2]): l.get("tls", False) for l in cluster_config["listen"]
    }
    assert listen == {80: False, 443: True}
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert sc["readOnlyRootFilesystem"] is True
    # no_new_privs: the file capability still works as the runtime starts it (test_images.py).
    assert sc["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    # The probes reach the admin listener on the node's loopback, where the config binds it.
    admin_host, _, admin_port = cluster_config["admin"].rpartition(":")
    assert admin_host == "127.0.0.1"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["host"] == admin_host and get["path"] == path, get
        assert get["port"] == int(admin_port), get
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == admin_port
    grace = duration_seconds(cluster_config["timeouts"]["shutdown_grace"])
    assert spec["terminationGracePeriodSeconds"] > grace
    assert c["resources"]["requests"] and c["resources"]["limits"]


def portier_volume(objs):
    """The DaemonSet's one mount and its volume's projected sources: (mount, projected)."""
    spec = pod_spec(objs[("DaemonSet", "portier", "portier")])
    (c,) = spec["containers"]
    (mount,) = c["volumeMounts"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert set(vols) == {mount["name"]}
    return mount, vols[mount["name"]]["projected"]


def test_portier_mounts_the_generated_configmap(objs):
    """One projected volume at /etc/portier (a second mount inside a read-only ConfigMap mount
    would need a mountpoint the runtime cannot make), holding the ConfigMap under its generated
    name: kubectl 1.20's kustomize renames it there only through k8s/kustomizeconfig.yaml."""
    ds = objs[("DaemonSet", "portier", "portier")]
    (c,) = containers(ds)
    mount, projected = portier_volume(objs)
    assert mount["readOnly"] is True
    (cm_source,) = [s["configMap"] for s in projected["sources"] if "configMap" in s]
    assert cm_source["name"] == configmap(objs)["metadata"]["name"]
    assert "items" not in cm_source, "every key of the ConfigMap, as the config names it"
    config_path = c["args"][c["args"].index("-c") + 1]
    assert Path(config_path).parent == Path(mount["mountPath"])
    assert Path(config_path).name in configmap(objs)["data"]


def test_portier_certificate_is_the_mounted_secret(objs, cluster_config):
    """The cluster config's one certificate is the kubernetes.io/tls Secret portier-tls, mounted
    where the config reads it, readable by portier's user and by nobody else."""
    spec = pod_spec(objs[("DaemonSet", "portier", "portier")])
    mount, projected = portier_volume(objs)
    (secret,) = [s["secret"] for s in projected["sources"] if "secret" in s]
    assert secret["name"] == "portier-tls"
    assert not secret.get("optional", False), "without its certificate, portier must not start"
    # A kubernetes.io/tls Secret's keys, at the paths the config names.
    files = {str(Path(mount["mountPath"]) / i["path"]): i for i in secret["items"]}
    assert {p: i["key"] for p, i in files.items()} == {
        MOUNTED_CERT: "tls.crt",
        MOUNTED_KEY: "tls.key",
    }
    assert cluster_config["tls"]["certificates"] == [{"cert": MOUNTED_CERT, "key": MOUNTED_KEY}]
    # The files belong to root and to fsGroup (the kubelet makes them so): group-readable, and
    # that group is portier's own.
    sc = spec["securityContext"]
    assert sc["fsGroup"] == sc["runAsGroup"]
    for path, item in files.items():
        mode = item.get("mode", projected.get("defaultMode", 0o644))
        assert mode & 0o040, f"{path}: mode {mode:o}, not readable by fsGroup"
        assert mode & 0o227 == 0, f"{path}: mode {mode:o}, writable or readable by others"


def k8s_files():
    """Every file under k8s/ that is tracked or about to be (new and not ignored)."""
    out = run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "k8s"], cwd=REPO
    ).stdout
    return [REPO / p for p in out.split() if (REPO / p).is_file()]


def test_no_private_key_under_k8s(rendered):
    """The Secret is made where the cluster runs (vagrant/provision), never committed: no PEM key,
    no base64 of one, no Secret object in any file under k8s/, and none rendered."""
    files = k8s_files()
    assert REPO / "k8s/portier/daemonset.yaml" in files
    for f in files:
        data = f.read_bytes()
        assert b"PRIVATE KEY-----" not in data, f
        assert b"LS0tLS1CRUdJTi" not in data, f"{f}: base64 of a PEM block"
        if f.suffix in (".yaml", ".yml"):
            kinds = [d.get("kind") for d in yaml.safe_load_all(data) if isinstance(d, dict)]
            assert "Secret" not in kinds, f
    assert not of_kind(rendered, "Secret")


def test_apps_pods(rendered):
    for d in of_kind(rendered, "Deployment"):
        name = d["metadata"]["name"]
        spec = pod_spec(d)
        (c,) = spec["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/healthz", name
        assert c["resources"]["requests"] and c["resources"]["limits"], name
        assert spec["securityContext"]["runAsNonRoot"] is True
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        # The pause before SIGTERM that lets the pod's DNS record go first, well within the grace.
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert 0 < pause < spec["terminationGracePeriodSeconds"], name


def test_every_namespaced_object_is_in_a_rendered_namespace(rendered):
    namespaces = {o["metadata"]["name"] for o in of_kind(rendered, "Namespace")}
    for o in rendered:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") in namespaces, o["metadata"]["name"]


def test_argocd_application(argocd_app):
    spec = argocd_app["spec"]
    assert (
        argocd_app["kind"] == "Application" and argocd_app["apiVersion"] == "argoproj.io/v1alpha1"
    )
    assert spec["source"]["path"] == "k8s"
    assert (REPO / spec["source"]["path"] / "kustomization.yaml").is_file()
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert spec["destination"]["server"] == "https://kubernetes.default.svc"
    # Not applied by k8s/ itself: Argo CD managing its own Application would be a loop.
    kustomization = (REPO / "k8s/kustomization.yaml").read_text()
    assert "argocd" not in kustomization


@pytest.mark.parametrize("name", ["portier", "app1", "app2", "app3"])
def test_image_user_matches_pod_user(objs, name):
    """The pods run as the user the image's /etc/passwd defines (k8s/build-images.sh: 10001)."""
    key = ("DaemonSet", "portier", "portier") if name == "portier" else ("Deployment", "apps", name)
    sc = pod_spec(objs[key])["securityContext"]
    script = (REPO / "k8s/build-images.sh").read_text()
    assert f"uid={sc['runAsUser']}\n" in script and f"gid={sc['runAsGroup']}\n" in script


def cpu_cores(quantity) -> float:
    """A Kubernetes CPU quantity ("1", "1.5", "500m", 2) in cores."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_portier_workers_fit_its_cpu_limit(objs, cluster_config):
    """portier starts one event-loop thread per worker, `auto` one per CPU of the node (2 on the
    VM): more workers than the DaemonSet's CPU limit only share that limit's time, throttled."""
    (c,) = pod_spec(objs[("DaemonSet", "portier", "portier")])["containers"]
    limit = cpu_cores(c["resources"]["limits"]["cpu"])
    workers = cluster_config["workers"]
    assert workers != "auto", "workers: auto counts the node's CPUs, not the pod's CPU limit"
    assert 1 <= int(workers) <= max(1, int(limit)), (workers, limit)


def test_documents_the_configs_name_exist():
    """Every *.md the configs, manifests, VM scripts and docs point at is in the repository (a
    DESIGN.md that never was, say)."""
    dirs = ["config", "k8s", "vagrant", "scripts", "docs"]
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *dirs],
                cwd=REPO).stdout.split()
    missing = []
    for f in (REPO / name for name in sorted(set(files))):
        if not f.is_file() or f.suffix in (".png", ".tar"):
            continue
        for name in re.findall(r"[\w./-]*\w\.md\b", f.read_text(errors="replace")):
            if not any((base / name).is_file() for base in (REPO, f.parent, REPO / "docs")):
                missing.append(f"{f.relative_to(REPO)}: {name}")
    assert len(files) > 10 and missing == []
