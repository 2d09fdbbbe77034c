"""Render the Kustomize trees under ``deploy/kubernetes`` and check the rendered objects.

Every check returns a list of problems (empty when the manifests follow the rule), so the same function
asserts the real manifests are clean and that a deliberately broken copy is caught. The rules are the ones
docs/deploy.md promises: probes, resources, the restricted Pod Security profile, NetworkPolicies that allow
only the designed flows, Secrets referenced and never inline, pinned images, and commands, settings and
paths that match the images built by deploy/docker/Dockerfile.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE_ROOT = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"
# The oldest Kubernetes minor we claim to support, and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version() + ".0")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
OUR_IMAGES = {"fedmedclip-aggregator": "aggregator", "fedmedclip-agent": "agent", "fedmedclip-api": "api"}
# Volume types the restricted Pod Security profile allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"
}  # fmt: skip
SECRET_ENV = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEYS|DATABASE_URL|PRIVATE", re.IGNORECASE)

Obj = dict[str, Any]


class RenderError(RuntimeError):
    """``kubectl kustomize`` refused a tree; the message carries kubectl's own explanation."""


def kubectl() -> str:
    """Path of kubectl. Missing kubectl is an error, never a skip: CI must render the manifests."""
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError(
            "kubectl is not on PATH: the Kubernetes manifest tests render deploy/kubernetes with "
            "`kubectl kustomize` and cannot run without it (install kubectl >= 1.27)"
        )
    return path


def kustomizations(root: Path = KUBE_ROOT) -> list[Path]:
    """Every folder under ``root`` holding a kustomization.yaml, sorted."""
    return sorted(path.parent for path in root.rglob("kustomization.yaml"))


def render(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- schemas -----------------------------------------------------------------------------------------------


def schema_problems(objects: list[Obj], versions: tuple[str, ...] = K8S_VERSIONS) -> list[str]:
    """Offline validation of every object against the strict (no unknown fields) Kubernetes schemas."""
    problems = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(part) for part in error.path)
                problems.append(f"{name_of(obj)} (Kubernetes {version}) at {where or '.'}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name_of(obj)}: no Kubernetes {version} schema for {obj['apiVersion']}")
    return problems


# --- workloads ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    obj: Obj

    @property
    def name(self) -> str:
        return name_of(self.obj)

    @property
    def pod_spec(self) -> Obj:
        spec = self.obj["spec"]
        if self.obj["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        return dict(spec["template"]["spec"])

    @property
    def pod_labels(self) -> dict[str, str]:
        template = self.obj["spec"]["template"]
        return dict(template.get("metadata", {}).get("labels", {}))

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", "default"))

    def containers(self) -> list[Obj]:
        spec = self.pod_spec
        return list(spec.get("initContainers", [])) + list(spec["containers"])

    def container_ports(self) -> dict[str, int]:
        return {
            port["name"]: int(port["containerPort"])
            for container in self.pod_spec["containers"]
            for port in container.get("ports", [])
            if "name" in port
        }


def workloads(objects: list[Obj]) -> list[Workload]:
    return [Workload(obj) for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def probe_problems(objects: list[Obj]) -> list[str]:
    """Startup, liveness and readiness probes on every long-running container, each probing something real."""
    checks = _healthcheck_names()
    ops_paths = _api_ops_paths()
    problems = []
    for workload in workloads(objects):
        ports = workload.container_ports()
        for container in workload.pod_spec["containers"]:
            where = f"{workload.name} container {container['name']}"
            service = OUR_IMAGES.get(_image_name(container["image"]))
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is None:
                    problems.append(f"{where}: no {kind}")
                    continue
                if "exec" in probe:
                    command = probe["exec"]["command"]
                    if command[0] == "fedmedclip-healthcheck" and command[1:] != [service]:
                        problems.append(f"{where}: {kind} runs {command}, but the image is the {service} image")
                    elif command[0] == "fedmedclip-healthcheck" and command[1] not in checks:
                        problems.append(f"{where}: {kind}: fedmedclip-healthcheck has no check {command[1]!r}")
                    elif command[0] not in {"fedmedclip-healthcheck", "pg_isready"}:
                        problems.append(f"{where}: {kind} runs {command[0]!r}, not a known health command")
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler not in probe:
                        continue
                    port = probe[handler]["port"]
                    if isinstance(port, str) and port not in ports:
                        problems.append(f"{where}: {kind} probes port {port!r}, which no container declares")
                    if handler == "httpGet" and service == "api" and probe[handler]["path"] not in ops_paths:
                        problems.append(f"{where}: {kind} GETs {probe[handler]['path']}, which the API does not serve")
            readiness = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
            if service == "api" and readiness != "/readyz":
                problems.append(f"{where}: readiness must be /readyz (backbone loaded, a verified bundle)")
            if service == "aggregator":
                command = container.get("readinessProbe", {}).get("exec", {}).get("command")
                if command != ["fedmedclip-healthcheck", "aggregator"]:
                    problems.append(f"{where}: readiness must be the gRPC health check (only the leader is Ready)")
                if "exec" in container.get("livenessProbe", {}):
                    problems.append(f"{where}: liveness must not require SERVING, or the standby is restarted")
    return problems


def resource_problems(objects: list[Obj]) -> list[str]:
    """CPU and memory requests and limits on every container, requests within limits."""
    problems = []
    for workload in workloads(objects):
        for container in workload.containers():
            where = f"{workload.name} container {container['name']}"
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        problems.append(f"{where}: no {section}.{resource}")
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                if request is not None and limit is not None and _quantity(request) > _quantity(limit):
                    problems.append(f"{where}: {resource} request {request} exceeds its limit {limit}")
    return problems


def security_problems(objects: list[Obj]) -> list[str]:
    """The restricted Pod Security profile, plus a read-only root filesystem with /tmp writable."""
    problems = []
    for workload in workloads(objects):
        spec = workload.pod_spec
        pod = spec.get("securityContext", {})
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                problems.append(f"{workload.name}: {field} is set")
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                problems.append(f"{workload.name}: volume {volume['name']} is {sorted(kinds)}, not allowed")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{workload.name}: pod seccompProfile is not RuntimeDefault")
        if pod.get("runAsUser") == 0:
            problems.append(f"{workload.name}: pod runs as root")
        for container in workload.containers():
            where = f"{workload.name} container {container['name']}"
            context = container.get("securityContext", {})
            if context.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if context.get("runAsUser", pod.get("runAsUser")) in (0, None):
                problems.append(f"{where}: no non-zero runAsUser (the image user must be explicit)")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            capabilities = context.get("capabilities", {})
            if capabilities.get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities do not drop ALL")
            if capabilities.get("add"):
                problems.append(f"{where}: capabilities add {capabilities['add']}")
            if "seccompProfile" in context and context["seccompProfile"].get("type") != "RuntimeDefault":
                problems.append(f"{where}: container seccompProfile overrides RuntimeDefault")
            mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
            if "/tmp" not in mounts:
                problems.append(f"{where}: no writable /tmp (the root filesystem is read-only)")
    return problems


def namespace_problems(objects: list[Obj]) -> list[str]:
    """Each namespace the tree creates enforces the restricted profile."""
    problems = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            labels = obj["metadata"].get("labels", {})
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                problems.append(f"{name_of(obj)}: does not enforce the restricted Pod Security profile")
    return problems


def secret_problems(objects: list[Obj]) -> list[str]:
    """No Secret objects, no secret-looking values in env or ConfigMaps: Secrets are referenced only."""
    problems = []
    for obj in objects:
        if obj["kind"] == "Secret":
            problems.append(f"{name_of(obj)}: a Secret is part of the manifests (create it out of band)")
        if obj["kind"] == "ConfigMap":
            for key in obj.get("data", {}):
                if SECRET_ENV.search(key):
                    problems.append(f"{name_of(obj)}: key {key} looks secret; put it in a referenced Secret")
    for workload in workloads(objects):
        for container in workload.containers():
            env = container.get("env", [])
            from_secret = {item["name"] for item in env if "secretKeyRef" in item.get("valueFrom", {})}
            for item in env:
                if "value" not in item or not SECRET_ENV.search(item["name"]):
                    continue
                # A value may only assemble secrets by reference, $(VAR), from variables that come from Secrets.
                literal = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", "", item["value"])
                referenced = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", item["value"]))
                credentials = re.search(r"://[^/@]*:[^/@]+@", literal)
                if not referenced or not referenced <= from_secret or credentials:
                    problems.append(
                        f"{workload.name} container {container['name']}: {item['name']} is inline; use secretKeyRef"
                    )
    return problems


def image_problems(objects: list[Obj]) -> list[str]:
    """Pinned tags (never latest, never none), an explicit IfNotPresent/Always pull policy, real commands."""
    commands = _dockerfile_commands()
    problems = []
    for workload in workloads(objects):
        for container in workload.containers():
            where = f"{workload.name} container {container['name']}"
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "@sha256:" not in image and tag in ("", "latest"):
                problems.append(f"{where}: image {image} is not pinned to a version tag or digest")
            if container.get("imagePullPolicy") not in ("IfNotPresent", "Always"):
                problems.append(f"{where}: imagePullPolicy {container.get('imagePullPolicy')!r} not explicit")
            target = OUR_IMAGES.get(_image_name(image))
            if target is not None and container.get("command") != commands[target]:
                problems.append(f"{where}: command {container.get('command')} differs from the {target} CMD")
    return problems


def settings_problems(objects: list[Obj]) -> list[str]:
    """Every FEDMEDCLIP_* variable names a real setting of that service; file paths lie on mounted volumes."""
    known = _settings_names()
    config_maps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in objects if obj["kind"] == "ConfigMap"}
    problems = []
    for workload in workloads(objects):
        spec = workload.pod_spec
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for container in workload.containers():
            where = f"{workload.name} container {container['name']}"
            env = {item["name"]: item.get("value") for item in container.get("env", [])}
            for source in container.get("envFrom", []):
                reference = source.get("configMapRef", {}).get("name")
                if reference is not None and reference not in config_maps:
                    problems.append(f"{where}: envFrom ConfigMap {reference} is not in the manifests")
                env.update(config_maps.get(reference or "", {}))
            for name, value in env.items():
                prefix = next((p for p in known if name.startswith(p)), None)
                if prefix is None:
                    continue
                if name not in known[prefix]:
                    problems.append(f"{where}: {name} is not a setting of {prefix.rstrip('_')}")
                if isinstance(value, str) and value.startswith("/") and not _on_volume(container, volumes, value):
                    problems.append(f"{where}: {name}={value} is not on a mounted volume")
    return problems


def reference_problems(objects: list[Obj]) -> list[str]:
    """Services, the HPA and the PDB point at pods and ports that exist."""
    problems = []
    loads = workloads(objects)
    by_name = {(w.obj["kind"], w.obj["metadata"]["name"]): w for w in loads}
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Service", "PodDisruptionBudget"):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector) if kind == "PodDisruptionBudget" else selector
            matched = [w for w in loads if _matches(selector, w.pod_labels) and w.namespace == _ns(obj)]
            if not matched:
                problems.append(f"{name_of(obj)}: its selector {selector} matches no pods")
            for port in obj["spec"].get("ports", []) if kind == "Service" else []:
                target = port.get("targetPort", port["port"])
                if isinstance(target, str) and not any(target in w.container_ports() for w in matched):
                    problems.append(f"{name_of(obj)}: targetPort {target!r} is not a container port")
        if kind == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            if (ref["kind"], ref["name"]) not in by_name:
                problems.append(f"{name_of(obj)}: scales {ref['kind']}/{ref['name']}, which does not exist")
    return problems


# --- NetworkPolicies -------------------------------------------------------------------------------------------

EXTERNAL = "external"  # a client outside the cluster (a hospital, a clinician's browser)


def network_problems(objects: list[Obj]) -> list[str]:
    """A default deny in each namespace with pods, and every workload selected by a policy of its own."""
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    problems = []
    for namespace in sorted({w.namespace for w in workloads(objects)}):
        denies = [
            p
            for p in policies
            if _ns(p) == namespace
            and p["spec"]["podSelector"] == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        if not denies:
            problems.append(f"namespace {namespace}: no default-deny NetworkPolicy for ingress and egress")
    for workload in workloads(objects):
        own = [
            p
            for p in policies
            if _ns(p) == workload.namespace
            and p["spec"]["podSelector"]
            and _matches(p["spec"]["podSelector"].get("matchLabels", {}), workload.pod_labels)
        ]
        if not own:
            problems.append(f"{workload.name}: no NetworkPolicy selects its pods")
        ports = set(workload.container_ports()) | set(workload.container_ports().values())
        for policy in own:
            for rule in policy["spec"].get("ingress", []):
                for port in rule.get("ports", []):
                    if port["port"] not in ports:
                        problems.append(f"{name_of(policy)}: ingress port {port['port']!r} is not a port of its pods")
    return problems


def allows(objects: list[Obj], source: str, target: str, port: int) -> bool:
    """Whether the NetworkPolicies let ``source`` open ``target:port`` (TCP). Each end is a pod's
    ``app.kubernetes.io/name`` or :data:`EXTERNAL`; both the source's egress and the target's ingress count."""
    pods = {w.pod_labels.get("app.kubernetes.io/name"): w for w in workloads(objects)}
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    source_pod, target_pod = pods.get(source), pods.get(target)
    if source != EXTERNAL and source_pod is None:
        raise KeyError(source)
    if target != EXTERNAL and target_pod is None:
        raise KeyError(target)
    egress_ok = source_pod is None or _policy_allows(policies, source_pod, "Egress", target_pod, port)
    ingress_ok = target_pod is None or _policy_allows(policies, target_pod, "Ingress", source_pod, port)
    return egress_ok and ingress_ok


def _policy_allows(policies: list[Obj], pod: Workload, direction: str, peer: Workload | None, port: int) -> bool:
    selecting = [
        p
        for p in policies
        if _ns(p) == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"].get("matchLabels", {}), pod.pod_labels)
    ]
    if not selecting:
        return True  # not isolated in this direction
    port_owner = pod if direction == "Ingress" else peer
    for policy in selecting:
        for rule in policy["spec"].get(direction.lower(), []) or []:
            peers = rule.get("from" if direction == "Ingress" else "to")
            if peers and not any(_peer_matches(item, peer, _ns(policy)) for item in peers):
                continue
            if not rule.get("ports") or any(_port_matches(item, port, port_owner) for item in rule["ports"]):
                return True
    return False


def _peer_matches(item: Obj, peer: Workload | None, policy_ns: str) -> bool:
    if peer is None:  # outside the cluster: only an ipBlock can name it
        block = item.get("ipBlock")
        return block is not None and ipaddress.ip_network(block["cidr"]).prefixlen == 0
    if "ipBlock" in item:
        return False  # pod IPs are not assumed to fall in any block
    pods = item.get("podSelector")
    namespaces = item.get("namespaceSelector")
    if namespaces is None and peer.namespace != policy_ns:
        return False
    if namespaces is not None and namespaces != {}:
        return False  # no test pod lives in a labelled namespace
    return pods is None or _matches(pods.get("matchLabels", {}), peer.pod_labels)


def _port_matches(item: Obj, port: int, owner: Workload | None) -> bool:
    if item.get("protocol", "TCP") != "TCP":
        return False
    wanted = item.get("port")
    if wanted is None or wanted == port:
        return True
    return isinstance(wanted, str) and owner is not None and owner.container_ports().get(wanted) == port


# --- helpers ---------------------------------------------------------------------------------------------


def _ns(obj: Obj) -> str:
    return str(obj["metadata"].get("namespace", "default"))


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _image_name(image: str) -> str:
    return image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]


def _quantity(value: str | int | float) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _on_volume(container: Obj, volumes: dict[str, Obj], path: str) -> bool:
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if path.rstrip("/") + "/" == root:
            return True
        if not path.startswith(root):
            continue
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is not None and "items" in secret:
            return path[len(root) :] in {item["path"] for item in secret["items"]}
        return True
    return False


def _dockerfile_commands() -> dict[str, list[str]]:
    """CMD of each service target in deploy/docker/Dockerfile."""
    commands: dict[str, list[str]] = {}
    target = None
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            target = match.group(1)
        elif line.startswith("CMD ") and target is not None:
            commands[target] = json.loads(line[4:])
    return commands


def _healthcheck_names() -> set[str]:
    """The checks deploy/docker/healthcheck.py (installed as fedmedclip-healthcheck) implements."""
    match = re.search(r"^CHECKS = \{(.*)\}$", HEALTHCHECK.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "deploy/docker/healthcheck.py has no CHECKS table"
    return set(re.findall(r'"([a-z]+)":', match.group(1)))


def _api_ops_paths() -> set[str]:
    from inference_api.routes.ops import router

    return {str(getattr(route, "path", "")) for route in router.routes}


def _settings_names() -> dict[str, set[str]]:
    """Environment variable names each service's settings class accepts, nested keys joined with ``__``."""
    from aggregator_service.settings import ENV_PREFIX as AGGREGATOR
    from aggregator_service.settings import AggregatorSettings
    from hospital_agent.settings import ENV_PREFIX as AGENT
    from hospital_agent.settings import AgentSettings
    from inference_api.settings import ENV_PREFIX as API
    from inference_api.settings import ApiSettings

    def names(prefix: str, model: Any) -> Iterator[str]:
        for field, info in model.model_fields.items():
            yield f"{prefix}{field.upper()}"
            nested = _model_in(info.annotation)
            if nested is not None:
                yield from names(f"{prefix}{field.upper()}__", nested)

    return {
        AGGREGATOR: set(names(AGGREGATOR, AggregatorSettings)),
        AGENT: set(names(AGENT, AgentSettings)) | {"FEDMEDCLIP_AGENT_CONFIG"},
        API: set(names(API, ApiSettings)) | {"FEDMEDCLIP_API_HEALTH_PORT"},
    }


def _model_in(annotation: Any) -> Any:
    from pydantic import BaseModel

    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
