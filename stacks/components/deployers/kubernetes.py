"""The ``kubernetes`` flavor: per model a Deployment, a Service and the stack as a ConfigMap, via kubectl.

Each model gets its own three objects, named ``flywheel-<model>`` (a DNS-safe label; a name that is not
one already gets a hash of it), so deploying or deleting one model's service never touches another's, and
each is reached at its own in-cluster DNS name on the stack's port. The manifests are plain dictionaries
rendered from the stack (``manifests``), written as YAML under ``flywheel_home()/deploy/<stack>/<model>/``
and applied with ``kubectl apply -f`` when kubectl is on PATH;
without it ``deploy`` writes them and raises ``ToolUnavailableError`` saying how to apply them. Rendering
is pure, so tests validate every manifest against the Kubernetes schemas (kubernetes-validate).

Secrets never appear in a manifest: each reference the service needs becomes an environment variable
filled by ``valueFrom.secretKeyRef`` from a Kubernetes Secret that the cluster's operator creates
(``{{serving.auth_token}}`` -> Secret ``serving``, key ``auth_token``; ``${VAR}`` -> Secret
``flywheel-env``, key ``VAR``). The stack itself travels as a ConfigMap (it holds references only), so an
image serves any stack without being rebuilt, and a checksum of it on the pod template rolls the pods
when the stack changes. A new champion needs no rollout: the pods hot-swap when the alias moves.

Pods run one uvicorn worker each (scale with ``replicas``), as a non-root user on a read-only root file
system, with ``OMP_NUM_THREADS=1``, readiness on ``/ready`` (no traffic before the model is loaded) and
liveness on ``/health``. uvicorn gets the stack's server limits as flags, and the pod's termination grace
period covers the graceful shutdown timeout and the app's own shutdown.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stacks import secrets
from stacks.components.deployers.base import (
    APP_FACTORY,
    DeploymentError,
    ModelDeployer,
    ServiceInfo,
    ToolUnavailableError,
    dns_name,
    now_iso,
    service_secret_refs,
)
from stacks.components.deployers.server_options import shutdown_wait_s, uvicorn_flags
from stacks.components.deployers.state import clear_state, model_slug, require_model_name, write_state
from stacks.config import KubernetesDeployerConfig, Stack
from stacks.paths import flywheel_home

__all__ = ["ENV_SECRET", "RUN_AS", "KubernetesDeployer", "secret_key_ref"]

RUN_AS = 10001
"""The image's non-root user and group (see Dockerfile)."""

ENV_SECRET = "flywheel-env"
"""The Kubernetes Secret holding the values of ``${VAR}`` references (key: the variable's name)."""

STACK_DIR = "/etc/flywheel"
HOME_DIR = "/var/lib/flywheel"


def secret_key_ref(ref: str) -> tuple[str, str]:
    """(Secret name, key) in the cluster for a stack reference: ZenML's ``{{name.key}}`` maps one to one."""
    text = ref.strip()
    m = re.match(r"^\{\{\s*([^.\s{}]+)\.([^\s{}]+)\s*\}\}$", text)
    if m:
        return dns_name(m.group(1)), re.sub(r"[^-._a-zA-Z0-9]", "_", m.group(2))
    return ENV_SECRET, secrets.env_var_for(text)


class KubernetesDeployer(ModelDeployer):
    """Renders and applies the manifests of each model's service on a stack.

    ``kubectl`` is the CLI to use (default: the one on PATH, None when there is none; tests pass a
    stand-in); ``ready_timeout_s`` bounds ``kubectl rollout status``.
    """

    flavor = "kubernetes"

    def __init__(
        self,
        stack: Stack,
        *,
        kubectl: str | None = None,
        ready_timeout_s: float | None = None,
    ) -> None:
        super().__init__(stack)
        config = self.component.configuration
        assert isinstance(config, KubernetesDeployerConfig)
        self.config = config
        self.kubectl = kubectl or shutil.which("kubectl")
        self.ready_timeout_s = ready_timeout_s or config.ready_timeout_s

    # ------------------------------------------------------------------ rendering

    def manifests_dir(self, model_name: str) -> Path:
        return flywheel_home() / "deploy" / self.stack.name / model_slug(model_name)

    @staticmethod
    def app_name(model_name: str) -> str:
        """``flywheel-<model slug>``: at most 49 characters, leaving room for the "-stack" suffix."""
        return dns_name("flywheel", model_slug(model_name), max_len=50)

    def url(self, model_name: str) -> str:
        """The in-cluster URL of the Service."""
        return (
            f"http://{self.app_name(model_name)}.{self.config.namespace}.svc.cluster.local:{self.config.port}"
        )

    def labels(self, model_name: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "flywheel-serving",
            "app.kubernetes.io/instance": self.app_name(model_name),
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/managed-by": "flywheel",
            "flywheel.io/stack": dns_name(self.stack.name),
            "flywheel.io/model": dns_name(model_name),
        }

    def stack_yaml(self) -> str:
        """The stack as the pods read it: the native file form, references kept (no secret values)."""
        return yaml.safe_dump(self.stack.to_dict(), sort_keys=False)

    def env(self, model_name: str) -> list[dict[str, Any]]:
        plain = {
            "FLYWHEEL_STACK": f"{STACK_DIR}/stack.yaml",
            "FLYWHEEL_HOME": HOME_DIR,
            "FLYWHEEL_MODEL": model_name,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "WHYLOGS_NO_ANALYTICS": "True",
        }
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
        for var, ref in service_secret_refs(self.stack):
            name, key = secret_key_ref(ref)
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
        return env

    def manifests(self, model_name: str, version: str) -> list[dict[str, Any]]:
        """ConfigMap (the stack), Deployment and Service, as dictionaries in apply order."""
        name = self.app_name(model_name)
        ns = self.config.namespace
        labels = self.labels(model_name)
        selector = {"app.kubernetes.io/instance": name}
        stack_text = self.stack_yaml()
        checksum = hashlib.sha256(stack_text.encode()).hexdigest()
        resources = {"cpu": self.config.cpu, "memory": self.config.memory}
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-stack", "namespace": ns, "labels": labels},
            "data": {"stack.yaml": stack_text},
        }
        container = {
            "name": "server",
            "image": self.config.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", "uvicorn", APP_FACTORY, "--factory"],
            "args": [
                "--host",
                "0.0.0.0",
                "--port",
                str(self.config.port),
                "--workers",
                "1",
                *uvicorn_flags(self.config.server),
            ],
            "ports": [{"name": "http", "containerPort": self.config.port, "protocol": "TCP"}],
            "env": self.env(model_name),
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": "http"},
                "initialDelaySeconds": 5,
                "periodSeconds": 5,
                "timeoutSeconds": 3,
                "failureThreshold": 3,
            },
            "livenessProbe": {
                "httpGet": {"path": "/health", "port": "http"},
                "initialDelaySeconds": 15,
                "periodSeconds": 10,
                "timeoutSeconds": 3,
                "failureThreshold": 3,
            },
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "stack", "mountPath": STACK_DIR, "readOnly": True},
                {"name": "home", "mountPath": HOME_DIR},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "annotations": {
                    "flywheel.io/model-name": model_name,
                    "flywheel.io/model-version": str(version),
                    "flywheel.io/rendered-at": now_iso(),
                },
            },
            "spec": {
                "replicas": self.config.replicas,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"flywheel.io/stack-checksum": checksum},
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        # in-flight requests, then the app's shutdown, before the kubelet's SIGKILL
                        "terminationGracePeriodSeconds": shutdown_wait_s(self.config.server),
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": RUN_AS,
                            "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": [
                            {"name": "stack", "configMap": {"name": f"{name}-stack"}},
                            {"name": "home", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            },
        }
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "type": self.config.service_type,
                "selector": selector,
                "ports": [
                    {"name": "http", "port": self.config.port, "targetPort": "http", "protocol": "TCP"}
                ],
            },
        }
        return [config_map, deployment, service]

    def secret_commands(self) -> list[str]:
        """How an operator creates the Secrets the pods read (values come from their shell, not from us)."""
        by_secret: dict[str, list[tuple[str, str]]] = {}
        for var, ref in service_secret_refs(self.stack):
            name, key = secret_key_ref(ref)
            by_secret.setdefault(name, []).append((key, var))
        commands = []
        for name, pairs in sorted(by_secret.items()):
            literals = " ".join(f'--from-literal={key}="${var}"' for key, var in pairs)
            commands.append(
                f"kubectl create secret generic {name} --namespace {self.config.namespace} {literals} "
                "--dry-run=client -o yaml | kubectl apply -f -"
            )
        return commands

    def write_manifests(self, model_name: str, version: str) -> list[Path]:
        """Write one YAML file per manifest (and a script creating the Secrets); returns the YAML paths."""
        folder = self.manifests_dir(model_name)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for manifest in self.manifests(model_name, version):
            path = folder / f"{manifest['kind'].lower()}.yaml"
            path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
            written.append(path)
        script = folder / "create-secrets.sh"
        lines = [
            "#!/bin/sh",
            "# Creates the Secrets the pods read, from this shell's environment.",
            "set -eu",
        ]
        script.write_text("\n".join([*lines, *self.secret_commands()]) + "\n", encoding="utf-8")
        return written

    def apply_commands(self, model_name: str) -> list[list[str]]:
        return [
            ["kubectl", "apply", "--request-timeout=60s", "-f", str(self.manifests_dir(model_name))],
            [
                "kubectl",
                "rollout",
                "status",
                f"deployment/{self.app_name(model_name)}",
                "--namespace",
                self.config.namespace,
                f"--timeout={int(self.ready_timeout_s)}s",
            ],
        ]

    # ------------------------------------------------------------------ lifecycle

    def deploy(self, model_name: str, version: str, *, restart: bool = False) -> ServiceInfo:
        require_model_name(model_name)
        self.write_manifests(model_name, version)
        folder = self.manifests_dir(model_name)
        commands = self.apply_commands(model_name)
        if restart:
            commands.insert(
                1,
                [
                    "kubectl",
                    "rollout",
                    "restart",
                    f"deployment/{self.app_name(model_name)}",
                    "--namespace",
                    self.config.namespace,
                ],
            )
        if self.kubectl is None:
            raise ToolUnavailableError(
                f"kubectl is not on PATH: the manifests of '{model_name}' on stack '{self.stack.name}' "
                f"are written to {folder}; create the Secrets ({folder / 'create-secrets.sh'}) "
                "and apply them from a machine with cluster access:",
                [shlex.join(c) for c in commands],
            )
        for command in commands:
            self._kubectl(command[1:], timeout=self.ready_timeout_s + 60)
        name = self.app_name(model_name)
        info = ServiceInfo(
            flavor=self.flavor,
            stack=self.stack.name,
            url=self.url(model_name),
            model_name=model_name,
            model_version=version,
            started_at=now_iso(),
            handle=f"{self.config.namespace}/{name}",
            namespace=self.config.namespace,
            deployment=name,
            service=name,
            manifests=str(folder),
        )
        write_state(info)
        return info

    def status(self, model_name: str) -> ServiceInfo | None:
        info = self.recorded(model_name)
        if info is None:
            return None
        if self.kubectl is None:
            return info.with_(running=False, healthy=False, detail="cannot look: kubectl is not on PATH")
        out = self._kubectl(
            ["get", "deployment", str(info.deployment), "--namespace", str(info.namespace), "-o", "json"],
            timeout=60,
            check=False,
        )
        try:
            found = json.loads(out)
        except ValueError:
            return info.with_(running=False, healthy=False, detail=f"deployment {info.handle} not found")
        wanted = int(found.get("spec", {}).get("replicas") or 0)
        ready = int(found.get("status", {}).get("readyReplicas") or 0)
        return info.with_(
            running=ready > 0,
            healthy=wanted > 0 and ready == wanted,
            detail=f"{ready}/{wanted} replicas ready",
        )

    def stop(self, model_name: str) -> bool:
        info = self.recorded(model_name)
        if info is None:
            return False
        name, ns = str(info.deployment), str(info.namespace)
        command = [
            "kubectl",
            "delete",
            f"deployment/{name}",
            f"service/{name}",
            f"configmap/{name}-stack",
            "--namespace",
            ns,
            "--ignore-not-found",
        ]
        if self.kubectl is None:
            raise ToolUnavailableError(
                "kubectl is not on PATH; delete the service from a machine with cluster access:",
                [shlex.join(command)],
            )
        out = self._kubectl(command[1:], timeout=120)
        clear_state(self.stack.name, model_name)
        return "deleted" in out

    def logs(self, model_name: str, lines: int = 50) -> str:
        info = self.recorded(model_name)
        name = str(info.deployment) if info is not None else self.app_name(model_name)
        ns = str(info.namespace) if info is not None else self.config.namespace
        command = ["kubectl", "logs", f"deployment/{name}", "--namespace", ns, f"--tail={max(1, lines)}"]
        if self.kubectl is None:
            raise ToolUnavailableError(
                "kubectl is not on PATH; read the logs from a machine with cluster access:",
                [shlex.join(command)],
            )
        return self._kubectl(command[1:], timeout=60).strip()

    def _kubectl(self, args: list[str], *, timeout: float, check: bool = True) -> str:
        assert self.kubectl is not None
        try:
            done = subprocess.run([self.kubectl, *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"`kubectl {shlex.join(args[:2])}` took longer than {timeout:g} s") from exc
        if check and done.returncode != 0:
            raise DeploymentError(
                f"`kubectl {shlex.join(args)}` failed (exit {done.returncode}):\n"
                f"{(done.stderr or done.stdout).strip()[-3000:]}\n"
                f"The manifests are under {flywheel_home() / 'deploy' / self.stack.name}."
            )
        return done.stdout
