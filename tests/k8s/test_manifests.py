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
    REPO,
    containers,
    duration_seconds,
    of_kind,
    pod_spec,
    run,
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
    ("ServiceAccount", "portier", "portier"),
    ("ClusterRole", "", "portier"),
    ("ClusterRoleBinding", "", "portier"),
    ("IngressClass", "", "portier"),
    ("Ingress", "apps", "p2"),
}
# Kinds that belong to no namespace.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"}
# What portier may do with the API (k8s/portier/rbac.yaml), as (API group, resource, verb), and
# nothing more: read what it routes by, write the status of the Ingresses it serves.
READ = ("get", "list", "watch")
GRANTS = {
    *(("networking.k8s.io", r, v) for r in ("ingresses", "ingressclasses") for v in READ),
    *(("", r, v) for r in ("services", "secrets") for v in READ),
    *(("discovery.k8s.io", "endpointslices", v) for v in READ),
    ("networking.k8s.io", "ingresses/status", "update"),
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
    a value outside an enum are each reported, in core objects, in the Ingress, IngressClass and
    RBAC objects, and in the Argo CD Application."""
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
    for key, mutate in (
        (("Ingress", "apps", "p2"), lambda o: o["spec"]["rules"][0]["http"]["paths"][0].update(
            pathtype="Prefix")),
        (("Ingress", "apps", "p2"), lambda o: o["spec"]["rules"][0]["http"]["paths"][0].update(
            pathType="Prefixed")),
        (("Ingress", "apps", "p2"), lambda o: o["spec"]["defaultBackend"]["service"]["port"].update(
            number="8080")),
        (("Ingress", "apps", "p2"), lambda o: o["spec"]["tls"][0].update(secret="apps-tls")),
        (("IngressClass", "", "portier"), lambda o: o["spec"].update(controler="x")),
        (("ClusterRole", "", "portier"), lambda o: o["rules"][0].update(verb=["get"])),
        (("ClusterRole", "", "portier"), lambda o: o["rules"][0].pop("verbs")),
        (("ClusterRoleBinding", "", "portier"), lambda o: o.pop("roleRef")),
        (("ServiceAccount", "portier", "portier"), lambda o: o.update(automount=False)),
    ):
        o = copy.deepcopy(objs[key])
        mutate(o)
        broken.append(o)
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
    """The Ingress names each Service port by number; portier connects to the pods at the port
    their EndpointSlices carry, the container port the targetPort names. The same number for both
    keeps 8080 meaning one thing (and app1.apps.svc.cluster.local:8080 still reaches a pod from
    inside the cluster, a headless Service having no virtual IP)."""
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


def test_configmap_passes_portier_check(objs, portier_bin, tmp_path):
    """`portier -t` on the ConfigMap as it is: it names no file (the certificates come from the
    Ingresses' Secrets, the token and CA from the pod; the chroot check in test_images.py gives
    it those)."""
    cm = configmap(objs)
    assert set(cm["data"]) == {"portier.yaml"}
    path = tmp_path / "portier.yaml"
    path.write_text(cm["data"]["portier.yaml"])
    r = run([str(portier_bin), "-t", "-c", str(path)], check=False)
    assert r.returncode == 0, r.stderr


def test_config_cluster_yaml_is_the_configmap(objs, portier_bin):
    """kustomize reads no file outside k8s/, so config/cluster.yaml is a link to the file it
    reads; both name the same bytes, and `portier -t` accepts it under its documented name, as
    README says to check it."""
    link = REPO / "config/cluster.yaml"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "k8s/portier/cluster.yaml").resolve()
    assert configmap(objs)["data"]["portier.yaml"] == link.read_text()
    r = run([str(portier_bin), "-t", "-c", "config/cluster.yaml"], cwd=REPO, check=False)
    assert r.returncode == 0, r.stderr


def test_config_routes_by_the_ingresses(cluster_config):
    """The cluster config routes by the Ingresses of one class, in every namespace, and by nothing
    of its own: no route, default service, service, certificate file or resolver that would stand
    beside (or against) what the Ingresses say. HTTPS on 443 without a certificate of its own."""
    assert cluster_config["kubernetes"] == {"ingress_class": "portier", "namespaces": []}
    for key in ("routes", "default_service", "services", "tls", "resolvers"):
        assert key not in cluster_config, f"{key}: the Ingresses say this now"
    listen = {l["address"]: l.get("tls", False) for l in cluster_config["listen"]}
    assert listen == {"0.0.0.0:80": False, "0.0.0.0:443": True}, listen


def test_portier_daemonset(objs, cluster_config):
    ds = objs[("DaemonSet", "portier", "portier")]
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is True
    # Nothing portier routes by needs the cluster DNS; kept for a `dns:` service in the config.
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
    """One projected volume at /etc/portier holding the ConfigMap under its generated name:
    kubectl 1.20's kustomize renames it there only through k8s/kustomizeconfig.yaml."""
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


def secret_volumes(spec):
    """The Secrets a pod spec mounts: secret volumes and the secret sources of projected ones."""
    out = []
    for v in spec.get("volumes", []):
        if "secret" in v:
            out.append(v["secret"].get("secretName"))
        for s in v.get("projected", {}).get("sources", []):
            if "secret" in s:
                out.append(s["secret"].get("name"))
    return out


def test_portier_mounts_no_secret(objs):
    """The certificates come from the Ingresses' Secrets through the API: the DaemonSet mounts no
    Secret (the service account's token is the kubelet's own volume, not in the manifest); its
    one volume is the ConfigMap, readable by portier's user (through fsGroup) and nobody else."""
    spec = pod_spec(objs[("DaemonSet", "portier", "portier")])
    assert secret_volumes(spec) == []
    mount, projected = portier_volume(objs)
    assert [list(s) for s in projected["sources"]] == [["configMap"]], projected["sources"]
    # The file belongs to root and to fsGroup (the kubelet makes it so): group-readable, and that
    # group is portier's own.
    sc = spec["securityContext"]
    assert sc["fsGroup"] == sc["runAsGroup"]
    mode = projected.get("defaultMode", 0o644)
    assert mode & 0o040, f"mode {mode:o}, not readable by fsGroup"
    assert mode & 0o227 == 0, f"mode {mode:o}, writable or readable by others"


def test_portier_node_ip_comes_from_the_downward_api(objs):
    """PORTIER_NODE_IP, the address portier writes into the status of the Ingresses it serves, is
    the node's (status.hostIP: with the host's network, where portier listens), never a literal."""
    ds = objs[("DaemonSet", "portier", "portier")]
    assert pod_spec(ds)["hostNetwork"] is True
    (c,) = containers(ds)
    env = {e["name"]: e for e in c.get("env", [])}
    assert "PORTIER_NODE_IP" in env, env
    var = env["PORTIER_NODE_IP"]
    assert "value" not in var, var
    assert set(var["valueFrom"]) == {"fieldRef"}, var
    assert var["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP", var


def test_portier_talks_to_the_api_as_its_service_account(objs):
    """The pod runs as the ServiceAccount portier, whose token and CA the kubelet mounts (portier
    reads them); no other workload gets a token, and the service links stay off (the kubelet
    sets KUBERNETES_SERVICE_HOST and _PORT regardless)."""
    for key, o in objs.items():
        if key[0] not in ("Deployment", "DaemonSet"):
            continue
        spec = pod_spec(o)
        assert spec["enableServiceLinks"] is False, key
        if key == ("DaemonSet", "portier", "portier"):
            assert spec["serviceAccountName"] == "portier"
            assert ("ServiceAccount", key[1], "portier") in objs
            assert spec["automountServiceAccountToken"] is True
            (c,) = spec["containers"]
            names = {e["name"] for e in c.get("env", [])}
            assert not names & {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}, names
        else:
            assert spec["automountServiceAccountToken"] is False, key
            assert spec.get("serviceAccountName", "default") == "default", key


def rbac_grants(role):
    """(API group, resource, verb) for every grant of a role's rules."""
    out = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, URLs
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    out.add((g, r, v))
    return out


def test_cluster_role_grants_exactly_what_portier_needs(rendered, objs):
    """get, list and watch on Ingresses, IngressClasses, Services, Secrets and EndpointSlices,
    update on ingresses/status, and nothing else: no wildcard, no create, patch or delete, no
    other resource; and no other role in k8s/ that could add to it."""
    role = objs[("ClusterRole", "", "portier")]
    assert "aggregationRule" not in role
    grants = rbac_grants(role)
    assert not [g for g in grants if "*" in g], "a wildcard grants what is not listed"
    assert grants == GRANTS, (sorted(grants - GRANTS), sorted(GRANTS - grants))
    roles = of_kind(rendered, "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in roles) == [
        ("ClusterRole", "portier"),
        ("ClusterRoleBinding", "portier"),
    ]


def test_binding_ties_the_role_to_the_daemonsets_service_account(objs):
    binding = objs[("ClusterRoleBinding", "", "portier")]
    ref = binding["roleRef"]
    assert ref == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "portier",
    }
    assert ("ClusterRole", "", ref["name"]) in objs
    ds = objs[("DaemonSet", "portier", "portier")]
    want = {
        "kind": "ServiceAccount",
        "name": pod_spec(ds)["serviceAccountName"],
        "namespace": ds["metadata"]["namespace"],
    }
    assert binding["subjects"] == [want], binding["subjects"]
    assert ("ServiceAccount", want["namespace"], want["name"]) in objs


def service_port(objs, ns, backend):
    """The port of the Service an Ingress backend names (by number or by name), or fails."""
    svc = objs.get(("Service", ns, backend["service"]["name"]))
    assert svc, f"no Service {ns}/{backend['service']['name']}"
    want = backend["service"]["port"]
    ports = [
        p for p in svc["spec"]["ports"]
        if ("number" in want and p["port"] == want["number"])
        or ("name" in want and p.get("name") == want["name"])
    ]
    assert len(ports) == 1, f"Service {ns}/{svc['metadata']['name']} has no port {want}"
    return ports[0]


def test_ingress_routes_the_exercise(objs):
    """app1.com to app1, app2.com to app2, any other Host to app3, every path, each to a
    Service of the Ingress's namespace that has the port the backend names, whose pods serve it."""
    ing = objs[("Ingress", "apps", "p2")]
    ns = ing["metadata"]["namespace"]
    routes = {}
    for rule in ing["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        assert (path["path"], path["pathType"]) == ("/", "Prefix"), path
        routes[rule["host"]] = path["backend"]
    routes[None] = ing["spec"]["defaultBackend"]
    assert {h: (b["service"]["name"], b["service"]["port"]) for h, b in routes.items()} == {
        "app1.com": ("app1", {"number": 8080}),
        "app2.com": ("app2", {"number": 8080}),
        None: ("app3", {"number": 8080}),
    }
    for backend in routes.values():
        port = service_port(objs, ns, backend)
        (dep,) = [
            o for k, o in objs.items()
            if k[:2] == ("Deployment", ns)
            and objs[("Service", ns, backend["service"]["name"])]["spec"]["selector"].items()
            <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        cports = {p["name"] for c in containers(dep) for p in c["ports"]}
        assert port["targetPort"] in cports, (backend, cports)


def test_ingress_class_is_portiers(rendered, objs, cluster_config):
    """One IngressClass, portier's: its name is the config's ingress_class and the Ingress's
    ingressClassName, and it is the default class (an Ingress without one is portier's)."""
    (cls,) = of_kind(rendered, "IngressClass")
    name = cls["metadata"]["name"]
    assert name == cluster_config["kubernetes"]["ingress_class"]
    for ing in of_kind(rendered, "Ingress"):
        assert ing["spec"]["ingressClassName"] == name, ing["metadata"]["name"]
        assert "kubernetes.io/ingress.class" not in ing["metadata"].get("annotations", {})
    assert cls["spec"] == {"controller": "portier.dev/ingress-controller"}
    annotations = cls["metadata"]["annotations"]
    assert annotations["ingressclass.kubernetes.io/is-default-class"] == "true"


def san_names(cert: Path):
    out = run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"]).stdout
    return set(re.findall(r"DNS:([^,\s]+)", out))


def covers(names, host):
    return host in names or ("." in host and "*." + host.split(".", 1)[1] in names)


def test_ingress_tls_covers_its_hosts_with_the_vm_certificate(objs, certs):
    """HTTPS for every Host the Ingress routes by name and for app3.com (the default backend's);
    one Secret, whose certificate (scripts/certs.sh's, which vagrant/provision puts into it)
    names them all. That provisioning makes this very Secret: test_vm.py."""
    ing = objs[("Ingress", "apps", "p2")]
    (tls,) = ing["spec"]["tls"]
    assert tls["secretName"] == "apps-tls"
    hosts = set(tls["hosts"])
    assert {r["host"] for r in ing["spec"]["rules"]} | {"app3.com"} <= hosts, hosts
    names = san_names(certs / "server.crt")
    missing = [h for h in sorted(hosts) if not covers(names, h)]
    assert missing == [], f"the certificate names {sorted(names)}"


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
        # The pause before SIGTERM that lets the pod leave portier's rotation first (its endpoint
        # turns not ready in the EndpointSlice portier watches), well within the grace.
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert 0 < pause < spec["terminationGracePeriodSeconds"], name


def test_every_namespaced_object_is_in_a_rendered_namespace(rendered):
    namespaces = {o["metadata"]["name"] for o in of_kind(rendered, "Namespace")}
    for o in rendered:
        what = f"{o['kind']} {o['metadata']['name']}"
        if o["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in o["metadata"], what
        else:
            assert o["metadata"].get("namespace") in namespaces, what


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
