"""Provision a stack's orchestrator on a Prefect server: its work pool and the Prefect variables that
prefect.yaml reads (`{{ prefect.variables.flywheel_* }}`), so `prefect deploy --all` needs no prompt and
deployments target the stack's pool with its job variables, whatever the stack.

prefect.yaml itself names no stack-specific value and no secret: switching environment is provisioning
another stack, then deploying again.

Models are named, never assumed: each problem's service deployment names its own model, so provisioning
needs none. Models named here are written as ``flywheel_models`` (a list), and as ``flywheel_model`` when
exactly one is named, for a prefect.yaml that reads one; otherwise ``flywheel_model`` is removed, so a stale
one cannot make a deployment serve a model nobody asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.config import Stack, StackError

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Provisioned:
    api_url: str
    work_pool: str
    work_pool_type: str
    created_pool: bool
    variables: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


def api_url_for(stack: Stack) -> str:
    """The server to provision: the stack's API URL, or PREFECT_API_URL (`make up`) for the local stack."""
    url = stack.orchestrator.configuration.api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise StackError(
            f"{stack.source}: component 'orchestrator': api_url is null (Prefect's ephemeral API, which has "
            "no work pools or triggers); start a server with `make up` (it sets PREFECT_API_URL) "
            "or set api_url"
        )
    return url


def pool_name(stack: Stack) -> str:
    return stack.orchestrator.configuration.work_pool or f"flywheel-{stack.name}"


def model_names(names: Sequence[str]) -> list[str]:
    """The named models, checked (registered-model names) and without repeats, in the order given."""
    from stacks.components.deployers.base import DeploymentError
    from stacks.components.deployers.state import require_model_name

    checked: list[str] = []
    for name in names:
        try:
            name = require_model_name(name)
        except DeploymentError as exc:
            raise StackError(f"--model: {exc}") from None
        if name not in checked:
            checked.append(name)
    return checked


def provision(stack: Stack, models: Sequence[str] = ()) -> Provisioned:
    """Create the stack's work pool (if missing) and set the ``flywheel_*`` variables on its server."""
    from stacks.secrets import resolve

    named = model_names(models)
    config = stack.orchestrator.configuration
    url = api_url_for(stack)
    os.environ["PREFECT_API_URL"] = resolve(url)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.variables import Variable

    name = pool_name(stack)
    created = False
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=config.work_pool_type,
                    base_job_template=_template(config.work_pool_type),
                    description=f"Flywheel stack {stack.name}",
                )
            )
            created = True
    variables: dict[str, Any] = {
        "flywheel_stack": stack.name,
        "flywheel_work_pool": name,
        "flywheel_job_variables": dict(config.job_variables),
        "flywheel_project_dir": str(PROJECT_DIR),
        "flywheel_models": named,
    }
    if len(named) == 1:
        variables["flywheel_model"] = named[0]
    for key, value in variables.items():
        Variable.set(key, value, overwrite=True)
    removed = [] if len(named) == 1 else [key for key in ("flywheel_model",) if Variable.unset(key)]
    return Provisioned(url, name, config.work_pool_type, created, variables, removed)


def _template(pool_type: str) -> dict[str, Any]:
    """The worker type's default base job template (what `prefect work-pool create --type` would use)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return dict(ProcessWorker.get_default_base_job_template())
    try:
        from prefect.workers.base import BaseWorker

        for worker in BaseWorker.__subclasses__():
            if getattr(worker, "type", None) == pool_type:
                return dict(worker.get_default_base_job_template())
    except Exception:  # a worker package not installed here (prefect-kubernetes): the server keeps its own
        pass
    return {}
