"""The cluster definitions in cluster/ are valid and secure by default (offline checks).

- `ray up` configs validate against the JSON schema shipped inside the installed ray package (and
  Ray's own config preparation), bind the dashboard/job server to 127.0.0.1, turn token auth on
  on every node, pin versions, and put the sweep's storage on a bucket.
- KubeRay manifests use ray.io/v1 field names, keep the head Service internal (no LoadBalancer,
  NodePort or Ingress), take the auth token from a Kubernetes Secret, give GPU workers GPU limits
  and tolerations, and the RayJob runs `python -m sweeps run` on a sweep config in this repo.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
RAY_UP_CONFIGS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
KUBERAY = {"raycluster": CLUSTER / "kuberay" / "raycluster.yaml", "rayjob": CLUSTER / "kuberay" / "rayjob.yaml"}
BUCKET_SCHEME = {"aws": "s3://", "gcp": "gs://"}
PUBLIC_SERVICE_TYPES = {"LoadBalancer", "NodePort"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _ray_schema() -> dict[str, Any]:
    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def _ray_start_commands(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def _flag_value(command: str, flag: str) -> str | None:
    """The value of --flag in a shell command, written `--flag=v` or `--flag v`."""
    tokens = shlex.split(command.replace(";", " ; "))
    for i, tok in enumerate(tokens):
        if tok == flag and i + 1 < len(tokens):
            return tokens[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def _sets_token_mode_before_ray_start(command: str) -> bool:
    start = command.index("ray start")
    return bool(re.search(r"\bRAY_AUTH_MODE=token\b", command[:start]))


# ------------------------------------------------------------------------------------------------
# ray up (AWS, GCP)


@pytest.fixture(params=sorted(RAY_UP_CONFIGS), ids=lambda name: name)
def ray_up(request) -> tuple[str, dict[str, Any]]:
    return request.param, _load(RAY_UP_CONFIGS[request.param])


def test_ray_up_config_validates_against_the_schema_in_the_ray_package(ray_up):
    _, config = ray_up
    jsonschema.validate(config, _ray_schema())


def test_ray_up_config_passes_rays_own_preparation_and_validation(ray_up):
    from ray.autoscaler._private.util import prepare_config, validate_config

    _, config = ray_up
    prepared = prepare_config(config)  # fills provider defaults; no cloud calls
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_ray_up_head_serves_the_dashboard_on_loopback_only(ray_up):
    _, config = ray_up
    starts = _ray_start_commands(config["head_start_ray_commands"])
    assert len(starts) == 1 and "--head" in starts[0]
    assert _flag_value(starts[0], "--dashboard-host") == "127.0.0.1"
    every_command = json.dumps(config)
    assert "0.0.0.0" not in every_command, "nothing in the config may bind to all interfaces"


def test_ray_up_turns_token_auth_on_for_every_node_and_ships_the_token(ray_up):
    _, config = ray_up
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = _ray_start_commands(config[key])
        assert starts, f"{key} has no `ray start`"
        for command in starts:
            assert _sets_token_mode_before_ray_start(command), f"{key}: RAY_AUTH_MODE=token missing"
    # The token generated locally (`ray get-auth-token --generate`) goes to Ray's default path.
    mounts = config["file_mounts"]
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"
    # Shells on the nodes (ray attach, ray exec) are clients too.
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in config["setup_commands"])


def test_the_project_pins_the_ray_version_the_cluster_files_run():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.findall(r'"ray\[[a-z,]+\]([^"]*)"', pyproject) == [f"=={ray.__version__}"], (
        "pyproject.toml must pin the Ray version that cluster/ installs"
    )


def test_ray_up_installs_pinned_versions_of_ray_torch_and_this_checkout(ray_up):
    _, config = ray_up
    setup = "\n".join(config["setup_commands"])
    pinned_ray = re.findall(r"ray\[[a-z,]+\]==([0-9.]+)", setup)
    assert pinned_ray == [ray.__version__], "the cluster must run the Ray version the client has"
    assert re.search(r"torch==[0-9]+\.[0-9]+\.[0-9]+", setup)
    assert config["file_mounts"].get("~/e2e-sae-sweeps") == ".", "the checkout you launch from"
    assert re.search(r"-e ~/e2e-sae-sweeps\b", setup)


def test_ray_up_has_a_cpu_head_and_an_autoscaling_gpu_worker_type(ray_up):
    provider, config = ray_up
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    gpu_types = [
        t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu_types, "no worker type declares a GPU"
    for t in gpu_types:
        assert t.get("min_workers", 0) == 0 < t["max_workers"] <= config["max_workers"]
        if provider == "gcp":
            assert t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_ray_up_points_the_sweep_storage_at_a_bucket(ray_up):
    provider, config = ray_up
    setup = "\n".join(config["setup_commands"])
    match = re.search(r"SWEEP_STORAGE_PATH=(\S+?)'", setup)
    assert match and match.group(1).startswith(BUCKET_SCHEME[provider])


# ------------------------------------------------------------------------------------------------
# KubeRay (ray.io/v1)

# Field names of the ray.io/v1 types we write (KubeRay 1.6); a typo here is silently ignored by
# the API server's pruning, so the test catches it instead.
RAYCLUSTER_SPEC = {
    "headGroupSpec",
    "workerGroupSpecs",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
    "gcsFaultToleranceOptions",
    "authOptions",
    "upgradeStrategy",
}
AUTH_OPTIONS = {"mode", "secretName", "enableK8sTokenAuth"}
AUTOSCALER_OPTIONS = {
    "resources",
    "image",
    "imagePullPolicy",
    "env",
    "envFrom",
    "volumeMounts",
    "securityContext",
    "idleTimeoutSeconds",
    "upscalingMode",
    "version",
}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template", "resources", "labels"}
WORKER_GROUP = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "suspend",
    "idleTimeoutSeconds",
    "resources",
    "labels",
}
RAYJOB_SPEC = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
    "schedule",
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in _docs(path) if d.get("kind") == kind]
    assert len(docs) == 1, f"{path.name}: expected one {kind}"
    assert docs[0]["apiVersion"] == "ray.io/v1"
    assert docs[0]["metadata"]["name"]
    return docs[0]


def _cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "raycluster.yaml", _one(KUBERAY["raycluster"], "RayCluster")["spec"]
    yield "rayjob.yaml", _one(KUBERAY["rayjob"], "RayJob")["spec"]["rayClusterSpec"]


CLUSTER_SPECS = list(_cluster_specs())
CLUSTER_SPEC_IDS = [name for name, _ in CLUSTER_SPECS]


def _unknown(fields: dict[str, Any], known: set[str]) -> set[str]:
    return set(fields) - known


def test_kuberay_manifests_use_ray_io_v1_field_names():
    job = _one(KUBERAY["rayjob"], "RayJob")["spec"]
    assert not _unknown(job, RAYJOB_SPEC)
    for name, spec in CLUSTER_SPECS:
        assert not _unknown(spec, RAYCLUSTER_SPEC), name
        assert not _unknown(spec.get("authOptions", {}), AUTH_OPTIONS), name
        assert not _unknown(spec.get("autoscalerOptions", {}), AUTOSCALER_OPTIONS), name
        assert not _unknown(spec["headGroupSpec"], HEAD_GROUP), name
        for group in spec["workerGroupSpecs"]:
            assert not _unknown(group, WORKER_GROUP), name


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("name,spec", CLUSTER_SPECS, ids=CLUSTER_SPEC_IDS)
def test_kuberay_cluster_has_a_head_and_gpu_workers_with_resources(name, spec):
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "trials belong on the GPU workers"
    images = set()
    for container in _containers(head):
        res = container["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
        images.add(container["image"])
    assert spec["workerGroupSpecs"], f"{name}: no worker group"
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert group["maxReplicas"] > 0
        pod = group["template"]["spec"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), (
            f"{name}/{group['groupName']}: no toleration for GPU node taints"
        )
        for container in _containers(group):
            res = container["resources"]
            assert int(res["limits"]["nvidia.com/gpu"]) >= 1
            assert (
                res["requests"].get("nvidia.com/gpu", res["limits"]["nvidia.com/gpu"])
                == res["limits"]["nvidia.com/gpu"]
            ), "GPU requests must equal limits"
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
            images.add(container["image"])
    assert len(images) == 1, f"{name}: head and workers must run one image, got {images}"
    (image,) = images
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (
        "pin the image to a tag built from a commit"
    )


@pytest.mark.parametrize("name,spec", CLUSTER_SPECS, ids=CLUSTER_SPEC_IDS)
def test_kuberay_head_is_not_exposed_outside_the_cluster(name, spec):
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") not in PUBLIC_SERVICE_TYPES
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") not in PUBLIC_SERVICE_TYPES
    assert head.get("enableIngress", False) is False
    assert "headServiceAnnotations" not in spec or not any("load-balancer" in k for k in spec["headServiceAnnotations"])


@pytest.mark.parametrize("path", sorted(KUBERAY.values()), ids=lambda p: p.name)
def test_kuberay_files_create_no_public_service_or_plaintext_token(path):
    for doc in _docs(path):
        if doc.get("kind") == "Service":
            assert doc["spec"].get("type", "ClusterIP") not in PUBLIC_SERVICE_TYPES
        assert doc.get("kind") not in {"Ingress", "Secret"}, "secrets are created with kubectl, not committed"
    text = path.read_text()
    assert not re.search(r"^\s*type:\s*(LoadBalancer|NodePort)\b", text, re.M)


@pytest.mark.parametrize("name,spec", CLUSTER_SPECS, ids=CLUSTER_SPEC_IDS)
def test_kuberay_token_auth_comes_from_a_kubernetes_secret(name, spec):
    # KubeRay sets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the Secret in every Ray container.
    auth = spec["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"], name


def _entrypoint() -> list[str]:
    return shlex.split(_one(KUBERAY["rayjob"], "RayJob")["spec"]["entrypoint"])


def test_rayjob_runs_the_sweep_cli_with_bucket_storage_and_cleans_up():
    job = _one(KUBERAY["rayjob"], "RayJob")["spec"]
    argv = _entrypoint()
    assert argv[:4] == ["python", "-m", "sweeps", "run"]
    assert argv[4].endswith(".yaml")
    overrides = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--set"]
    storage = [o.split("=", 1)[1] for o in overrides if o.startswith("storage_path=")]
    assert storage and storage[0].startswith(("s3://", "gs://"))
    assert ("rayClusterSpec" in job) != ("clusterSelector" in job)
    if "rayClusterSpec" in job:
        assert job["shutdownAfterJobFinishes"] is True
    # The relative config path resolves because the head runs jobs in the project directory.
    head = job["rayClusterSpec"]["headGroupSpec"]
    assert all(c.get("workingDir") for c in _containers(head))


def test_sweep_configs_named_by_the_manifests_exist_in_the_repo():
    referenced = {_entrypoint()[4]}
    readme = (CLUSTER / "README.md").read_text()
    referenced |= set(re.findall(r"\bsweeps/configs/[\w.-]+\.ya?ml\b", readme))
    missing = sorted(p for p in referenced if not (REPO / p).is_file())
    assert not missing, f"cluster/ refers to sweep configs that do not exist: {missing}"


def test_readme_refers_only_to_files_that_exist():
    readme = (CLUSTER / "README.md").read_text()
    paths = set(re.findall(r"\bcluster/[\w./-]+\.(?:yaml|md)\b|\bcluster/Dockerfile\b", readme))
    assert paths, "the README should name the cluster files"
    assert not sorted(p for p in paths if not (REPO / p).is_file())
