"""The deployment flow: serve a model's champion on the stack's model deployer, and say where it went.

Orchestration only: the deployer (a local process, a Docker container or Kubernetes, by the stack's
``model_deployer`` flavor) is a stack component; the flow finds the champion in the registry, asks the
deployer to serve it, and records the service's URL, pid (or container / Deployment) and time as tags on
the model version and as a Prefect artifact. A registry without a champion stops the flow before anything
is started. Each model has a service of its own: a service already running for this model is left to
hot-swap to the new champion (pass ``restart=True`` to replace it), and other models' services are never
touched. The model is always named by the caller (a problem's service deployment passes its spec's
``model_name``): there is no default model.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.tasks import StepTimer
from stacks.components import prometheus
from stacks.components.deployers import deployer_for
from stacks.components.deployers.registry import champion_version, record_service
from stacks.components.deployers.state import require_model_name
from stacks.components.tracking import configure_mlflow
from stacks.loader import load_stack, selected_stack_name


@flow(name="deployment", log_prints=True)
def deployment(
    model_name: str,
    stack: str | None = None,
    restart: bool = False,
    ready_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Serve ``model_name``'s champion with the stack's deployer; returns the service's description.

    Secrets are not resolved here beyond the registry's credentials: the service resolves its own (a
    container or pod gets them from its environment, not from this process).
    """
    logger = get_run_logger()
    require_model_name(model_name)
    chosen = load_stack(selected_stack_name(stack))
    configure_mlflow(chosen)
    timer = StepTimer()
    version = timer.run(champion_version, "find-champion", model_name)
    deployer = deployer_for(chosen, ready_timeout_s=ready_timeout_s)
    logger.info(
        "deploying %s v%s on stack %r (%s, flavor %s)",
        model_name,
        version,
        chosen.name,
        chosen.source,
        deployer.flavor,
    )
    info = timer.run(deployer.deploy, "deploy", model_name, version, restart=restart)
    tags = timer.run(record_service, "record-service", info, version, retries=2)
    timer.run(prometheus.refresh, "prometheus-targets", chosen)  # the new service is scraped from now on
    create_markdown_artifact(
        info.to_markdown(), key=artifact_key(model_name), description=f"Service of {model_name} v{version}"
    )
    logger.info("%s v%s served at %s (%s)", model_name, version, info.url, info.detail or "ready")
    return {**info.to_dict(), "champion_version": version, "tags": tags, "timings": dict(timer.seconds)}


def artifact_key(model_name: str) -> str:
    """``<model>-service``: Prefect artifact keys take lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{model_name}-service".lower()).strip("-")
