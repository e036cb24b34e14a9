"""Model deployers: one per ``model_deployer`` flavor of a stack, behind one interface.

``deployer_for(stack)`` returns the stack's deployer; ``deploy(model_name, version)`` serves the model in a
service of its own and returns a ``ServiceInfo`` once it answers ``/ready``; ``status(model_name)``,
``stop(model_name)`` and ``logs(model_name)`` act on what that model's last deploy recorded in
``flywheel_home()/services/<stack>/<model>.json``, and ``statuses()`` lists every model's service on the
stack. Flows and the CLI never branch on a flavor.
"""

from __future__ import annotations

from typing import Any

from stacks.components.deployers.base import (
    DeploymentError,
    ModelDeployer,
    ServiceInfo,
    ToolUnavailableError,
)
from stacks.config import Stack

__all__ = [
    "DeploymentError",
    "ModelDeployer",
    "ServiceInfo",
    "ToolUnavailableError",
    "deployer_for",
]


def deployer_for(stack: Stack, **options: Any) -> ModelDeployer:
    """The deployer of the stack's ``model_deployer`` flavor; ``options`` go to its constructor.

    ``ready_timeout_s`` is understood by every flavor; others (``app``, ``docker``, ``kubectl``) by one.
    """
    from stacks.components.deployers.docker import DockerDeployer
    from stacks.components.deployers.kubernetes import KubernetesDeployer
    from stacks.components.deployers.local import LocalDeployer

    component = stack.model_deployer
    if component is None:
        raise DeploymentError(
            f"{stack.source}: stack '{stack.name}' has no model_deployer component; add one "
            "(flavor local, docker or kubernetes) to serve models"
        )
    flavors: dict[str, type[ModelDeployer]] = {
        "local": LocalDeployer,
        "docker": DockerDeployer,
        "kubernetes": KubernetesDeployer,
    }
    cls = flavors.get(component.flavor)
    if cls is None:  # the stack model already rejects unknown flavors; this guards a new one unwired here
        raise DeploymentError(f"no deployer for model_deployer flavor '{component.flavor}'")
    return cls(stack, **options)
