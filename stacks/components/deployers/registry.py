"""What the model registry knows about deployments: which version is the champion, where it is served.

The deployment flow serves the version the ``champion`` alias points to, and writes back onto that version
where it went (``flywheel.service.*`` tags), so from a model version you can find its running service,
as you can find its data. MLflow is imported inside the functions: it takes seconds.
"""

from __future__ import annotations

from flywheel.contracts.model_version import CHAMPION
from stacks.components.deployers.base import DeploymentError, ServiceInfo

__all__ = ["NoChampionError", "champion_version", "record_service"]


class NoChampionError(DeploymentError):
    """The registry has no champion for the model: nothing to serve."""


def champion_version(model_name: str) -> str:
    """The version the model's ``champion`` alias points to; NoChampionError if none (or no such model)."""
    import mlflow

    from stacks.components.model_versions import AliasNotSet, alias_target
    from stacks.components.registry_health import RegistryUnavailable

    try:
        return alias_target(model_name, CHAMPION)
    except RegistryUnavailable as exc:
        raise DeploymentError(f"cannot read the registry: {exc}") from exc
    except AliasNotSet:
        raise NoChampionError(
            f"model '{model_name}' has no '{CHAMPION}' version in the registry at "
            f"{mlflow.get_registry_uri()}: train and promote one first (`flywheel run training`), "
            f"or set the alias in MLflow"
        ) from None


def record_service(info: ServiceInfo, version: str | None = None) -> dict[str, str]:
    """Tag the served model version with the service's URL, pid (or handle), stack and time; returns them."""
    from stacks.components.model_versions import set_tags

    target = version or info.model_version
    if target is None:
        raise DeploymentError(f"no model version to record the service of stack '{info.stack}' on")
    tags = info.tags()
    set_tags(info.model_name, target, tags)
    return tags
