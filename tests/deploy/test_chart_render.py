"""The Helm chart rendered by helm (binary, or Helm's Go SDK): lint, then every manifest checked against the
Kubernetes JSON schemas of the oldest and newest supported versions, then what each value set must produce.
Skipped with the reason where neither helm nor helm-python-sdk is installed.
"""
from __future__ import annotations

import base64

import pytest

from tests.deploy.chart_tools import Helm

# The chart's kubeVersion floor (Chart.yaml) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", "1.37.0")

GPU_HPA = {
    "gpu": {"enabled": True, "count": 1},
    "model": {"id": "/data/rho-math-1b", "dtype": "bfloat16"},
    "persistence": {"enabled": True, "accessModes": ["ReadOnlyMany"], "size": "50Gi"},
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8, "targetCPUUtilizationPercentage": None,
                    "queueSize": {"enabled": True, "targetAverageValue": "3"}},
    "metrics": {"podAnnotations": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "server": {"maxBatchTotalTokens": 65536, "maxInputTokens": 1024, "maxTotalTokens": 2048, "prefixCaching": False},
    "nodeSelector": {"cloud.example.com/gpu": "h100"},
    "ingress": {"enabled": True, "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
                "hosts": [{"host": "math.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "math-tls", "hosts": ["math.example.com"]}]},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
EXISTING = {"auth": {"existingSecret": "team-key", "existingSecretKey": "token"},
            "persistence": {"enabled": True, "existingClaim": "shared-models"}, "model": {"id": "/data/m"}}
NO_AUTH = {"auth": {"enabled": False}, "podDisruptionBudget": {"minAvailable": 1}, "service": {"type": "LoadBalancer"}}
VALUE_SETS = {"default": None, "gpu-hpa": GPU_HPA, "existing-secret": EXISTING, "no-auth": NO_AUTH}


@pytest.fixture(scope="module")
def helm() -> Helm:
    found = Helm.find()
    if found is None:
        pytest.skip("neither a `helm` binary nor the helm-python-sdk package is installed: chart not rendered")
    return found


def by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    return kinds


def server_pod(objects: list[dict]) -> dict:
    (deployment,) = by_kind(objects)["Deployment"]
    return deployment["spec"]["template"]


def container_env(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def is_subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict_is_clean(helm, values):
    assert helm.lint(values) == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_manifests_validate_against_kubernetes_schemas(helm, values):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    objects = helm.manifests(values)
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: checked field by field in test_gpu_hpa_render
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError naming the field
    assert {"Deployment", "Service"} <= by_kind(objects).keys()


def test_default_render(helm):
    objects = helm.manifests()
    kinds = by_kind(objects)
    assert sorted(kinds) == ["Deployment", "Pod", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert container["image"] == "rho-serve:0.1.0-cpu"
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    # The restrictive security context of the issue: non-root, read-only root filesystem, no capabilities.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_termination_grace_outlasts_the_drain(helm):
    pod = server_pod(helm.manifests({"server": {"gracefulTerminationTimeout": 300, "preStopSleepSeconds": 10}}))
    env = container_env(pod)
    assert env["GRACEFUL_TERMINATION_TIMEOUT"] == "300"
    assert pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > 300 + 10


def test_api_key_is_a_mounted_secret_file(helm):
    objects = helm.manifests({"auth": {"apiKey": "s3cret-token"}})
    (secret,) = by_kind(objects)["Secret"]
    assert base64.b64decode(secret["data"]["api-key"]).decode() == "s3cret-token"
    pod = server_pod(objects)
    env = container_env(pod)
    assert "API_KEY" not in env, "the key must not sit in the pod spec"
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "api-key")
    assert env["API_KEY_FILE"] == f"{mount['mountPath']}/api-key"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "api-key")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_generated_api_key_is_random(helm):
    first, second = (by_kind(helm.manifests())["Secret"][0]["data"]["api-key"] for _ in range(2))
    assert len(base64.b64decode(first)) == 40 and first != second


def test_service_pdb_and_monitor_select_the_pods(helm):
    objects = helm.manifests(GPU_HPA)
    kinds = by_kind(objects)
    pod_labels = server_pod(objects)["metadata"]["labels"]
    (service,) = kinds["Service"]
    assert is_subset(service["spec"]["selector"], pod_labels)
    assert is_subset(kinds["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"], pod_labels)
    (monitor,) = kinds["ServiceMonitor"]
    assert is_subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
    (ingress,) = kinds["Ingress"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}


def test_gpu_hpa_render(helm):
    objects = helm.manifests(GPU_HPA)
    kinds = by_kind(objects)
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert container["image"] == "rho-serve:0.1.0-cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["spec"]["nodeSelector"] == GPU_HPA["nodeSelector"]
    assert pod["spec"]["tolerations"] == GPU_HPA["tolerations"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    env = container_env(pod)
    assert env["MODEL_ID"] == "/data/rho-math-1b" and env["DTYPE"] == "bfloat16"
    assert (env["MAX_BATCH_TOTAL_TOKENS"], env["MAX_INPUT_TOKENS"], env["PREFIX_CACHING"]) == ("65536", "1024", "0")
    assert {"name": "models", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    (claim,) = kinds["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "tgi_queue_size"}, "target": {"type": "AverageValue", "averageValue": "3"}}}]


def test_recreate_strategy_drops_the_rolling_update_settings(helm):
    (deployment,) = by_kind(helm.manifests({"strategy": {"type": "Recreate"}}))["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (deployment,) = by_kind(helm.manifests())["Deployment"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_default_hpa_scales_on_cpu(helm):
    (hpa,) = by_kind(helm.manifests({"autoscaling": {"enabled": True}}))["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"][0]["resource"] == {"name": "cpu",
                                                     "target": {"type": "Utilization", "averageUtilization": 80}}


def test_existing_secret_and_claim(helm):
    objects = helm.manifests(EXISTING)
    kinds = by_kind(objects)
    assert "Secret" not in kinds and "PersistentVolumeClaim" not in kinds
    pod = server_pod(objects)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == "team-key"
    assert volumes["api-key"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "shared-models"
    assert container_env(pod)["API_KEY_FILE"].endswith("/token")


def test_auth_disabled(helm):
    objects = helm.manifests(NO_AUTH)
    pod = server_pod(objects)
    assert "Secret" not in by_kind(objects)
    assert "API_KEY_FILE" not in container_env(pod)
    assert all(v["name"] != "api-key" for v in pod["spec"]["volumes"])
    (budget,) = by_kind(objects)["PodDisruptionBudget"]
    assert budget["spec"]["minAvailable"] == 1 and "maxUnavailable" not in budget["spec"]


def test_notes_tell_how_to_call_it(helm):
    notes = helm.render({"server": {"scoringRoute": "/v1/score"}})["rho-serve/templates/NOTES.txt"]
    assert "curl $ENDPOINT_URL/v1/score -X POST" in notes
    assert '"Authorization: Bearer $TOKEN"' in notes
    assert "get secret demo-rho-serve" in notes


@pytest.mark.parametrize("values, message", [
    ({"model": {"id": "/data/m"}}, "persistence.enabled is false"),
    ({"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}, "needs a metric"),
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "must not exceed"),
    ({"terminationGracePeriodSeconds": 60}, "must exceed server.preStopSleepSeconds"),
    ({"server": {"port": 80}}, "port"),
])
def test_configuration_mistakes_fail_with_a_clear_message(helm, values, message):
    assert message in helm.render_error(values)


def test_schema_validation_catches_a_misspelled_field(helm):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    (deployment,) = by_kind(helm.manifests())["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {"httpGet": {"path": "/health"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_the_server_reads_every_setting_the_chart_passes(helm, tmp_path):
    """The Deployment's env and args, fed to rho-serve's own parser: a misnamed variable would leave a default."""
    from router.cli import parse_args

    values = {**GPU_HPA, "server": {**GPU_HPA["server"], "port": 9090, "maxConcurrentRequests": 77,
                                    "maxBatchPrefillTokens": 2048, "scoringRoute": "/v1/score",
                                    "gracefulTerminationTimeout": 120, "corsAllowOrigin": "https://a.example",
                                    "extraArgs": ["--max-best-of", "4"]}}
    (container,) = server_pod(helm.manifests(values))["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    key_file = tmp_path / "api-key"
    key_file.write_text("k3y\n")
    env["API_KEY_FILE"] = str(key_file)  # the Secret's mount path exists only in the pod
    engine, router = parse_args(container["args"], env)
    assert (router.hostname, router.port, router.api_key, router.json_output) == ("0.0.0.0", 9090, "k3y", True)
    assert (router.max_concurrent_requests, router.scoring_route, router.max_best_of) == (77, "/v1/score", 4)
    assert (router.max_input_tokens, router.max_total_tokens) == (1024, 2048)
    assert (router.graceful_termination_timeout, router.cors_allow_origin) == (120, ("https://a.example",))
    assert (engine.model_id, engine.dtype, engine.enable_prefix_caching) == ("/data/rho-math-1b", "bfloat16", False)
    assert (engine.max_batch_total_tokens, engine.max_batch_prefill_tokens) == (65536, 2048)
    assert container["ports"][0]["containerPort"] == router.port
