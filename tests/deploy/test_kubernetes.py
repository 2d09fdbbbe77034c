"""The Kubernetes manifests under deploy/kubernetes: every tree renders with `kubectl kustomize`, every object
validates offline against the Kubernetes schemas, and the policy rules of docs/deploy.md hold. A missing
kubectl fails these tests (it is a CI requirement), it never skips them."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy import kube
from tests.deploy.kube import EXTERNAL, Obj

TREES = ("central", "overlays/central-postgres", "overlays/site-gpu", "site")
CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "schemas": kube.schema_problems,
    "probes": kube.probe_problems,
    "resources": kube.resource_problems,
    "security": kube.security_problems,
    "namespaces": kube.namespace_problems,
    "secrets": kube.secret_problems,
    "images": kube.image_problems,
    "settings": kube.settings_problems,
    "references": kube.reference_problems,
    "networkpolicies": kube.network_problems,
}


@functools.cache
def rendered(tree: str) -> list[Obj]:
    return kube.render(kube.KUBE_ROOT / tree)


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(objects: list[Obj], name: str) -> Obj:
    spec = one(objects, "Deployment", name)["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def env(item: Obj) -> dict[str, Obj]:
    return {entry["name"]: entry for entry in item.get("env", [])}


def test_every_tree_under_deploy_kubernetes_is_tested() -> None:
    found = {str(path.relative_to(kube.KUBE_ROOT)) for path in kube.kustomizations()}
    assert found == set(TREES), "add the new tree to TREES so that CI renders and checks it"


def test_missing_kubectl_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="kubectl is not on PATH"):
        kube.render(kube.KUBE_ROOT / "central")


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("tree", TREES)
def test_rendered_manifests_pass(tree: str, check: str) -> None:
    objects = rendered(tree)
    assert objects, f"{tree} renders nothing"
    assert CHECKS[check](objects) == []


# --- what each tree must contain ---------------------------------------------------------------------------


def test_central_runs_the_aggregator_active_standby_behind_one_service() -> None:
    objects = rendered("central")
    deployment = one(objects, "Deployment", "aggregator")
    assert deployment["spec"]["replicas"] == 2
    # A rolling update would wait forever for a new pod that cannot lead while the old leader lives.
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    aggregator = container(objects, "aggregator")
    variables = env(aggregator)
    # The readiness probe must ask this pod, not the Service (which would report the leader for a standby).
    assert variables["FEDMEDCLIP_AGGREGATOR_ADMIN_TARGET"]["value"] == "127.0.0.1:50051"
    assert (
        variables["FEDMEDCLIP_AGGREGATOR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "fedmedclip-aggregator"
    )
    service = one(objects, "Service", "aggregator")
    assert service["spec"]["type"] == "LoadBalancer"
    assert [port["port"] for port in service["spec"]["ports"]] == [50051]


def test_central_api_scales_and_survives_drains() -> None:
    objects = rendered("central")
    hpa = one(objects, "HorizontalPodAutoscaler", "inference-api")
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = one(objects, "PodDisruptionBudget", "inference-api")
    assert pdb["spec"]["minAvailable"] == 1
    strategy = one(objects, "Deployment", "inference-api")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_central_uses_an_external_database_and_the_trial_overlay_an_in_cluster_one() -> None:
    assert not [obj for obj in rendered("central") if obj["kind"] == "StatefulSet"]
    objects = rendered("overlays/central-postgres")
    one(objects, "StatefulSet", "postgres")
    variables = env(container(objects, "aggregator"))
    names = list(variables)
    assert names.index("POSTGRES_PASSWORD") < names.index("FEDMEDCLIP_AGGREGATOR_DATABASE_URL")
    assert variables["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "fedmedclip-postgres",
        "key": "password",
    }
    url = variables["FEDMEDCLIP_AGGREGATOR_DATABASE_URL"]["value"]
    assert url == "postgresql+psycopg://fedmedclip:$(POSTGRES_PASSWORD)@postgres:5432/fedmedclip"
    assert [port["port"] for port in one(objects, "Service", "postgres")["spec"]["ports"]] == [5432]


def test_site_api_shares_the_agents_bundle_volume_read_only_on_its_node() -> None:
    objects = rendered("site")
    agent = one(objects, "Deployment", "agent")["spec"]["template"]["spec"]
    api = one(objects, "Deployment", "inference-api")["spec"]["template"]["spec"]

    def bundles(spec: Obj) -> tuple[str, bool]:
        volume = next(v for v in spec["volumes"] if v["name"] == "bundles")
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "bundles")
        assert mount["mountPath"] == "/var/lib/fedmedclip/bundles"  # bundle_root of both services
        return volume["persistentVolumeClaim"]["claimName"], bool(mount.get("readOnly"))

    assert bundles(agent) == ("fedmedclip-bundles", False)
    assert bundles(api) == ("fedmedclip-bundles", True)
    term = api["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "agent"}
    assert one(objects, "Deployment", "agent")["spec"]["replicas"] == 1


def test_gpu_overlay_gives_only_the_agent_a_gpu_and_the_cuda_image() -> None:
    base, gpu = container(rendered("site"), "agent"), container(rendered("overlays/site-gpu"), "agent")
    assert "nvidia.com/gpu" not in base["resources"]["limits"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env(gpu)["FEDMEDCLIP_AGENT_DEVICE"]["value"] == "cuda"
    assert gpu["image"].endswith("-cuda")
    assert "nvidia.com/gpu" not in container(rendered("overlays/site-gpu"), "inference-api")["resources"]["limits"]


FLOWS = [
    # (tree, source, target, port, allowed)
    ("overlays/central-postgres", EXTERNAL, "aggregator", 50051, True),  # sites dial out to the aggregator
    ("overlays/central-postgres", EXTERNAL, "inference-api", 8000, True),  # clinicians
    ("overlays/central-postgres", "aggregator", "postgres", 5432, True),
    ("overlays/central-postgres", "aggregator", EXTERNAL, 5432, True),  # the external database
    ("overlays/central-postgres", "aggregator", "aggregator", 50051, True),  # the admin CLI to the leader
    ("overlays/central-postgres", EXTERNAL, "postgres", 5432, False),
    ("overlays/central-postgres", "inference-api", "postgres", 5432, False),
    ("overlays/central-postgres", "inference-api", EXTERNAL, 443, False),
    ("overlays/central-postgres", "inference-api", "aggregator", 50051, False),
    ("overlays/central-postgres", EXTERNAL, "aggregator", 9464, False),  # metrics: monitoring namespace only
    ("overlays/central-postgres", "aggregator", EXTERNAL, 443, False),
    ("overlays/central-postgres", "postgres", EXTERNAL, 443, False),
    ("site", "agent", EXTERNAL, 50051, True),  # the site dials out
    ("site", EXTERNAL, "inference-api", 8000, True),
    ("site", EXTERNAL, "agent", 8000, False),  # nothing dials into a site's agent
    ("site", "agent", EXTERNAL, 443, False),
    ("site", "agent", "inference-api", 8000, False),
    ("site", "inference-api", EXTERNAL, 50051, False),
]


@pytest.mark.parametrize(("tree", "source", "target", "port", "allowed"), FLOWS)
def test_networkpolicies_allow_only_the_designed_flows(
    tree: str, source: str, target: str, port: int, allowed: bool
) -> None:
    assert kube.allows(rendered(tree), source, target, port) is allowed


def test_docs_name_every_referenced_secret_and_tree() -> None:
    docs = (kube.REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    for tree in TREES:
        assert f"deploy/kubernetes/{tree}" in docs
        for workload in kube.workloads(rendered(tree)):
            spec = workload.pod_spec
            names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
            for item in spec["containers"]:
                names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in item.get("env", []) if "valueFrom" in e}
            for name in names:
                assert name in docs, f"docs/deploy.md does not say how to create Secret {name}"


# --- a broken manifest fails ---------------------------------------------------------------------------------

ADMIN_TOKEN_REF = (
    "valueFrom:\n"
    "                secretKeyRef:\n"
    "                  name: fedmedclip-aggregator\n"
    "                  key: admin-token"
)
BREAKAGES = [
    # (file, text, replacement, check, expected problem)
    (
        "central/aggregator.yaml",
        "imagePullPolicy: IfNotPresent",
        "imagePulPolicy: IfNotPresent",
        "schemas",
        "imagePulPolicy",
    ),
    ("central/api.yaml", "minReplicas: 2", "minReplicas: two", "schemas", "minReplicas"),
    ("site/agent.yaml", "          readinessProbe:\n", "          readinessProbeX:\n", "probes", "no readinessProbe"),
    ("central/api.yaml", "path: /readyz", "path: /ready", "probes", "does not serve"),
    (
        "central/aggregator.yaml",
        "      containers:",
        "      hostNetwork: true\n      containers:",
        "security",
        "hostNetwork",
    ),
    (
        "site/agent.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        "security",
        "readOnlyRootFilesystem",
    ),
    ("central/aggregator.yaml", 'drop: ["ALL"]', 'drop: ["NET_RAW"]', "security", "drop ALL"),
    ("central/aggregator.yaml", "memory: 2Gi", "memory: 256Mi", "resources", "exceeds its limit"),
    ("central/namespace.yaml", "enforce: restricted", "enforce: baseline", "namespaces", "restricted"),
    (
        "central/kustomization.yaml",
        '    newTag: "0.1.0"\n  - name: fedmedclip-api',
        "    newTag: latest\n  - name: fedmedclip-api",
        "images",
        "not pinned",
    ),
    ("site/agent.yaml", '"--config"', '"--configuration"', "images", "differs from the agent CMD"),
    ("site/agent.yaml", "FEDMEDCLIP_AGENT_TORCH_THREADS", "FEDMEDCLIP_AGENT_TORCH_THREAD", "settings", "not a setting"),
    ("central/aggregator.yaml", "path: aggregator.key}", "path: server.key}", "settings", "not on a mounted volume"),
    ("central/api.yaml", "targetPort: https", "targetPort: http", "references", "not a container port"),
    (
        "site/networkpolicies.yaml",
        "  name: default-deny\nspec:\n  podSelector: {}",
        "  name: default-deny\nspec:\n  podSelector: {matchLabels: {a: b}}",
        "networkpolicies",
        "no default-deny",
    ),
    (
        "central/aggregator.yaml",
        ADMIN_TOKEN_REF,
        "value: a-long-random-admin-token-inline-here",
        "secrets",
        "ADMIN_TOKEN is inline",
    ),
]


def broken_copy(tmp_path: Path, file: str, text: str, replacement: str) -> Path:
    root = tmp_path / "kubernetes"
    shutil.copytree(kube.KUBE_ROOT, root)
    path = root / file
    source = path.read_text(encoding="utf-8")
    assert text in source, f"{file} no longer contains {text!r}: update this breakage"
    path.write_text(source.replace(text, replacement, 1), encoding="utf-8")
    return root


@pytest.mark.parametrize(("file", "text", "replacement", "check", "expected"), BREAKAGES, ids=[c[4] for c in BREAKAGES])
def test_a_broken_manifest_fails(
    tmp_path: Path, file: str, text: str, replacement: str, check: str, expected: str
) -> None:
    root = broken_copy(tmp_path, file, text, replacement)
    tree = root / file.split("/")[0]
    problems = CHECKS[check](kube.render(tree))
    assert any(expected in problem for problem in problems), problems


def test_an_inline_secret_fails(tmp_path: Path) -> None:
    root = broken_copy(
        tmp_path,
        "central/kustomization.yaml",
        "  - networkpolicies.yaml\n",
        "  - networkpolicies.yaml\n  - secret.yaml\n",
    )
    (root / "central" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: fedmedclip-aggregator\nstringData:\n  admin-token: x\n",
        encoding="utf-8",
    )
    assert any("a Secret is part of the manifests" in p for p in kube.secret_problems(kube.render(root / "central")))


def test_a_kustomization_that_does_not_render_fails(tmp_path: Path) -> None:
    root = broken_copy(tmp_path, "central/kustomization.yaml", "  - api.yaml\n", "  - api.yml\n")
    with pytest.raises(kube.RenderError, match=r"api\.yml"):
        kube.render(root / "central")


def test_the_postgres_overlay_refuses_a_reordered_base(tmp_path: Path) -> None:
    # The overlay's JSON patch replaces env[0]; its `test` op stops the render if that is no longer the URL.
    root = broken_copy(
        tmp_path,
        "central/aggregator.yaml",
        "          env:\n",
        "          env:\n            - name: FEDMEDCLIP_AGGREGATOR_LOG_LEVEL\n              value: INFO\n",
    )
    with pytest.raises(kube.RenderError):
        kube.render(root / "overlays" / "central-postgres")


# --- the rendered environment starts each service ---------------------------------------------------------

# Stand-ins for the values operators put in the referenced Secrets (docs/deploy.md), shaped as the services
# require: a strong admin token, a hash list for the API, a PostgreSQL URL.
SECRET_SAMPLES = {
    ("fedmedclip-aggregator", "database-url"): "postgresql+psycopg://fedmedclip:pw@db.example.org:5432/fedmedclip",
    ("fedmedclip-aggregator", "admin-token"): "Zk3pQ9vX2mB7nR4tW8yL1cF6hJ0sD5gA",
    ("fedmedclip-api", "api-keys"): json.dumps([{"name": "ward-a", "sha256": "ab" * 32, "sites": ["*"]}]),
    ("fedmedclip-site-token", "token"): "site-token-sample-4f9c2a7e1b3d",
    ("fedmedclip-postgres", "password"): "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}


def container_env(objects: list[Obj], item: Obj) -> dict[str, str]:
    """The environment the kubelet gives ``item``: ConfigMaps, Secrets (samples) and $(VAR) expansion."""
    config_maps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in objects if obj["kind"] == "ConfigMap"}
    values: dict[str, str] = {}
    for source in item.get("envFrom", []):
        values.update(config_maps[source["configMapRef"]["name"]])
    for entry in item.get("env", []):
        if "value" in entry:
            values[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values.get(m.group(1), m.group(0)), entry["value"]
            )
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) in SECRET_SAMPLES, f"add a sample for Secret {ref['name']} {ref['key']}"
            values[entry["name"]] = SECRET_SAMPLES[(ref["name"], ref["key"])]
    return values


def use_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith("FEDMEDCLIP_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def mounted(item: Obj, path: Path) -> bool:
    return any(path.is_relative_to(mount["mountPath"]) for mount in item.get("volumeMounts", []))


@pytest.mark.parametrize("tree", ["central", "overlays/central-postgres"])
def test_the_aggregator_settings_load_from_the_rendered_environment(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import make_url

    from aggregator_service.settings import AggregatorSettings

    objects = rendered(tree)
    item = container(objects, "aggregator")
    use_env(monkeypatch, container_env(objects, item))
    command = item["command"]
    host, port = command[command.index("--host") + 1], int(command[command.index("--port") + 1])
    settings = AggregatorSettings.load(host=host, port=port)  # what `serve --host --port` does
    assert settings.uses_tls and not settings.insecure_loopback
    assert settings.tls_cert_file is not None and mounted(item, settings.tls_cert_file)
    assert make_url(settings.database_url).drivername == "postgresql+psycopg"
    url = make_url(settings.database_url)
    if tree == "central":  # the external database, exactly as the Secret holds it
        assert settings.database_url == SECRET_SAMPLES[("fedmedclip-aggregator", "database-url")]
    else:  # the in-cluster Service, with the password the StatefulSet was initialised with
        assert (url.host, url.port, url.password) == (
            "postgres",
            5432,
            SECRET_SAMPLES[("fedmedclip-postgres", "password")],
        )
    assert settings.client_target() == f"127.0.0.1:{port}"
    assert settings.metrics_port in {p["containerPort"] for p in item["ports"]}


@pytest.mark.parametrize("tree", ["site", "overlays/site-gpu"])
def test_the_agent_settings_load_from_the_rendered_environment(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hospital_agent.settings import load_settings

    objects = rendered(tree)
    item = container(objects, "agent")
    use_env(monkeypatch, container_env(objects, item))
    # The Dockerfile bakes deploy/compose/agent.yaml in as the /etc/fedmedclip/agent.yaml the command names.
    assert item["command"][-1] == "/etc/fedmedclip/agent.yaml"
    settings = load_settings(kube.REPO / "deploy" / "compose" / "agent.yaml")
    assert settings.require_token() == SECRET_SAMPLES[("fedmedclip-site-token", "token")]
    assert settings.tls.ca_file is not None and mounted(item, settings.tls.ca_file)
    for path in (settings.data.root, settings.state_dir, settings.bundle_root, settings.effective_cache_dir):
        assert mounted(item, path), f"{path} is not on a volume: the root filesystem is read-only"
    assert settings.device == ("cuda" if tree.endswith("gpu") else "auto")


@pytest.mark.parametrize("tree", ["central", "site"])
def test_the_api_settings_load_from_the_rendered_environment(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hospital_agent.settings import load_settings as load_agent_settings
    from inference_api.settings import load_settings

    objects = rendered(tree)
    item = container(objects, "inference-api")
    use_env(monkeypatch, container_env(objects, item))
    settings = load_settings()
    assert settings.tls and settings.api_keys and not settings.allow_unauthenticated
    assert mounted(item, settings.bundle_root)
    assert settings.weights is not None and mounted(item, Path(settings.weights))
    if tree == "site":  # the API serves the folder the agent writes its bundles to
        use_env(monkeypatch, container_env(objects, container(objects, "agent")))
        agent = load_agent_settings(kube.REPO / "deploy" / "compose" / "agent.yaml")
        assert agent.bundle_root == settings.bundle_root


def documented_overlay(name: str) -> str:
    """The ```yaml block of docs/deploy.md that starts with ``# NAME/kustomization.yaml``."""
    docs = (kube.REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)
    found = [block for block in blocks if block.startswith(f"# {name}/kustomization.yaml")]
    assert len(found) == 1, f"docs/deploy.md has no example {name}/kustomization.yaml"
    return found[0]


@pytest.mark.parametrize("name", ["my-central", "my-site"])
def test_the_overlays_in_the_docs_render_and_pass(tmp_path: Path, name: str) -> None:
    broken_copy(tmp_path, "site/kustomization.yaml", "", "")  # an unmodified copy at tmp_path/kubernetes
    overlay = tmp_path / name
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(documented_overlay(name), encoding="utf-8")
    objects = kube.render(overlay)
    assert {check: run(objects) for check, run in CHECKS.items()} == {check: [] for check in CHECKS}
    images = sorted(item["image"] for w in kube.workloads(objects) for item in w.containers())
    assert all(image.startswith("registry.example.org/") for image in images), images
    if name == "my-site":
        values = container_env(objects, container(objects, "agent"))
        assert values["FEDMEDCLIP_AGENT_SITE"] == "st-mary"
        assert values["FEDMEDCLIP_AGENT_AGGREGATOR"] == "fl.consortium.example:50051"
