"""The Kubernetes manifests: valid per the Kubernetes schemas, secrets by reference only, applied by kubectl.

Validation uses kubernetes-validate (a dev dependency that ships the schemas: no cluster, no network). If
it is missing the test fails with how to install it; it never skips.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.components.deployers import DeploymentError, ToolUnavailableError
from stacks.components.deployers.kubernetes import RUN_AS, KubernetesDeployer, secret_key_ref
from stacks.components.deployers.state import read_state
from stacks.config import parse_stack
from stacks.loader import load_stack

SECRET_ENV = {
    "SERVING_AUTH_TOKEN": "tok-never-in-a-manifest",
    "AWS_ACCESS_KEY_ID": "AKIA-never-in-a-manifest",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-never-in-a-manifest",
    "MLFLOW_USERNAME": "user-never-in-a-manifest",
    "MLFLOW_PASSWORD": "pass-never-in-a-manifest",
}


def _validate(manifest: dict[str, Any]) -> None:
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - the failure message is the point
        pytest.fail(
            "kubernetes-validate is missing: it is a dev dependency, run `uv sync` (or `make install`)"
        )
    version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest['kind']} is invalid for Kubernetes {version} at {where}: {exc.message}")


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> KubernetesDeployer:
    for var, value in SECRET_ENV.items():
        monkeypatch.setenv(var, value)
    return KubernetesDeployer(load_stack("production"), kubectl="/nonexistent/kubectl")


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_every_manifest_is_valid(minimal: Callable[..., dict[str, Any]], service_type: str) -> None:
    doc = minimal(
        model_deployer={
            "name": "k8s",
            "flavor": "kubernetes",
            "configuration": {"image": "registry.example/flywheel:1", "service_type": service_type},
        }
    )
    manifests = KubernetesDeployer(parse_stack(doc, "k.yaml")).manifests("flight-delay", "1")
    assert [m["kind"] for m in manifests] == ["ConfigMap", "Deployment", "Service"]
    for manifest in manifests:
        _validate(manifest)
    assert _by_kind(manifests)["Service"]["spec"]["type"] == service_type


def test_production_manifests_are_valid(production: KubernetesDeployer) -> None:
    for manifest in production.manifests("flight-delay", "12"):
        _validate(manifest)


def test_deployment_follows_the_stack(production: KubernetesDeployer) -> None:
    manifests = _by_kind(production.manifests("flight-delay", "12"))
    deployment = manifests["Deployment"]
    assert deployment["metadata"]["name"] == "flywheel-flight-delay"
    assert deployment["metadata"]["namespace"] == "flywheel"
    assert deployment["metadata"]["annotations"]["flywheel.io/model-version"] == "12"
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == RUN_AS
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/flywheel-ml/flywheel:latest"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "serving.app:create_app" in container["command"] and "--factory" in container["command"]
    args = container["args"]
    flags = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    assert flags["--http"] == "serving.server_protocol:ServerProtocol"
    assert flags["--timeout-keep-alive"] == "75" and flags["--limit-concurrency"] == "500"  # production's
    assert flags["--timeout-graceful-shutdown"] == "20" and flags["--backlog"] == "2048"
    assert pod["terminationGracePeriodSeconds"] == 40  # the graceful timeout, then the app's shutdown
    env = {e["name"]: e for e in container["env"]}
    assert env["OMP_NUM_THREADS"]["value"] == "1"
    assert env["FLYWHEEL_MODEL"]["value"] == "flight-delay"
    assert env["FLYWHEEL_STACK"]["value"] == "/etc/flywheel/stack.yaml"
    service = manifests["Service"]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_secrets_are_secret_key_refs_never_values(production: KubernetesDeployer) -> None:
    manifests = production.manifests("flight-delay", "12")
    (container,) = _by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVING_AUTH_TOKEN"] == {
        "name": "SERVING_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "serving", "key": "auth_token"}},
    }
    for var in SECRET_ENV:
        assert "value" not in env[var] and "secretKeyRef" in env[var]["valueFrom"]
    dumped = yaml.safe_dump_all(manifests)
    for value in SECRET_ENV.values():
        assert value not in dumped
    assert not any(m["kind"] == "Secret" for m in manifests)  # the operator creates Secrets, we never do


def test_the_stack_travels_as_a_config_map_with_references(production: KubernetesDeployer) -> None:
    manifests = _by_kind(production.manifests("flight-delay", "12"))
    text = manifests["ConfigMap"]["data"]["stack.yaml"]
    assert "{{serving.auth_token}}" in text
    again = parse_stack(yaml.safe_load(text), "configmap")
    assert again.to_dict() == load_stack("production").to_dict()
    checksum = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"][
        "flywheel.io/stack-checksum"
    ]
    assert len(checksum) == 64


def test_secret_key_ref_mapping() -> None:
    assert secret_key_ref("{{serving.auth_token}}") == ("serving", "auth_token")
    assert secret_key_ref("{{My_Store.access_key}}") == ("my-store", "access_key")
    assert secret_key_ref("${FLYWHEEL_TOKEN}") == ("flywheel-env", "FLYWHEEL_TOKEN")


def test_without_kubectl_the_manifests_are_written_and_the_way_to_apply_said(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    d = KubernetesDeployer(load_stack("production"))
    with pytest.raises(ToolUnavailableError, match="kubectl is not on PATH") as caught:
        d.deploy("flight-delay", "12")
    folder = home / "deploy" / "production" / "flight-delay"
    assert caught.value.commands[0] == f"kubectl apply --request-timeout=60s -f {folder}"
    assert {p.name for p in folder.iterdir()} == {
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "create-secrets.sh",
    }
    for path in folder.glob("*.yaml"):
        _validate(yaml.safe_load(path.read_text()))
    script = (folder / "create-secrets.sh").read_text()
    expected = "kubectl create secret generic serving --namespace flywheel"
    assert f'{expected} --from-literal=auth_token="$SERVING_AUTH_TOKEN"' in script
    assert read_state("production", "flight-delay") is None


# ---------------------------------------------------------------- with a stand-in kubectl


def _fake_kubectl(folder: Path, *, apply_fails: bool = False) -> Path:
    log = folder / "kubectl-calls.log"
    deployment = json.dumps({"spec": {"replicas": 3}, "status": {"readyReplicas": 3}})
    script = folder / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {shlex.quote(str(log))}\n'
        'case "$1" in\n'
        + (
            "  apply) echo 'The connection to the server localhost:8080 was refused' >&2; exit 1 ;;\n"
            if apply_fails
            else "  apply) echo configured ;;\n"
        )
        + f"  get) echo {shlex.quote(deployment)} ;;\n"
        "  delete) echo 'deployment.apps \"x\" deleted' ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_deploy_status_stop_with_a_stand_in_kubectl(home: Path, tmp_path: Path) -> None:
    d = KubernetesDeployer(load_stack("production"), kubectl=str(_fake_kubectl(tmp_path)))
    info = d.deploy("flight-delay", "12")
    assert info.handle == "flywheel/flywheel-flight-delay"
    assert info.url == "http://flywheel-flight-delay.flywheel.svc.cluster.local:8080"
    calls = (tmp_path / "kubectl-calls.log").read_text().splitlines()
    assert calls[0] == f"apply --request-timeout=60s -f {home / 'deploy' / 'production' / 'flight-delay'}"
    assert calls[1].startswith(
        "rollout status deployment/flywheel-flight-delay --namespace flywheel --timeout="
    )
    seen = d.status("flight-delay")
    assert seen is not None and seen.running and seen.healthy and seen.detail == "3/3 replicas ready"
    assert d.stop("flight-delay") is True
    last = (tmp_path / "kubectl-calls.log").read_text().splitlines()[-1].split()
    assert last[:4] == [
        "delete",
        "deployment/flywheel-flight-delay",
        "service/flywheel-flight-delay",
        "configmap/flywheel-flight-delay-stack",
    ]
    assert read_state("production", "flight-delay") is None


def test_a_failed_apply_names_the_error_and_the_manifests(home: Path, tmp_path: Path) -> None:
    d = KubernetesDeployer(load_stack("production"), kubectl=str(_fake_kubectl(tmp_path, apply_fails=True)))
    with pytest.raises(
        DeploymentError,
        match=r"(?s)kubectl apply .* failed \(exit 1\).*connection.*refused.*manifests are under",
    ):
        d.deploy("flight-delay", "12")
    assert read_state("production", "flight-delay") is None


def test_two_models_get_their_own_objects_and_manifests(home: Path, tmp_path: Path) -> None:
    """Deploying a second model applies its own folder: the first model's objects are not in it."""
    d = KubernetesDeployer(load_stack("production"), kubectl=str(_fake_kubectl(tmp_path)))
    first = d.deploy("flight-delay", "12")
    second = d.deploy("diamond-price", "3")
    assert second.deployment == "flywheel-diamond-price" != first.deployment
    assert second.url == "http://flywheel-diamond-price.flywheel.svc.cluster.local:8080"
    calls = (tmp_path / "kubectl-calls.log").read_text().splitlines()
    applied = [c.split(" -f ")[1] for c in calls if c.startswith("apply ")]
    assert applied == [str(home / "deploy" / "production" / m) for m in ("flight-delay", "diamond-price")]
    names = {
        yaml.safe_load((home / "deploy" / "production" / "diamond-price" / f"{kind}.yaml").read_text())[
            "metadata"
        ]["name"]
        for kind in ("deployment", "service")
    }
    assert names == {"flywheel-diamond-price"}
    recorded, problems = d.statuses()
    assert [i.model_name for i in recorded] == ["diamond-price", "flight-delay"] and problems == []
    assert d.stop("diamond-price") is True
    deletes = [c for c in (tmp_path / "kubectl-calls.log").read_text().splitlines() if c.startswith("delete")]
    assert len(deletes) == 1 and "deployment/flywheel-diamond-price" in deletes[0]
    assert "flight-delay" not in deletes[0]
    assert read_state("production", "flight-delay") is not None
    assert d.logs("flight-delay", 20) == ""  # the stand-in prints nothing for `logs`
    assert (
        "logs deployment/flywheel-flight-delay --namespace flywheel --tail=20"
        in (tmp_path / "kubectl-calls.log").read_text()
    )


def test_odd_model_names_make_distinct_valid_object_names() -> None:
    names = {
        KubernetesDeployer.app_name(m) for m in ("Flight_Delay", "flight-delay", "flight delay", "x" * 90)
    }
    assert len(names) == 4
    for name in names:
        assert len(name) <= 49 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
