"""What a flow needs from its stack, resolved once per run: component objects and the Prefect set-up.

Flows call ``resolve_stack`` at their start and pass the resulting objects into steps; nothing below this
module branches on a stack's name. Settings are the stack's configuration models themselves (a stack
without the tuner or compute component gets those models' defaults, from ``Stack.tuner_config()`` and
``Stack.compute_config()``), so no default is repeated here: flows import stacks, never the reverse.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from stacks.config import ComputeConfig, OptunaConfig, Stack
from stacks.loader import load_stack, selected_stack_name
from stacks.paths import flywheel_home


@dataclass(frozen=True)
class StackContext:
    """The resolved stack: its configuration and the runtime objects steps receive."""

    stack: Stack
    store: ArtifactStore
    validator: WhylogsValidator
    tuner_storage: str | None  # secret-resolved, SQLite anchored under flywheel home
    storage_options: dict[str, Any]  # secret-resolved
    tuner: OptunaConfig
    compute: ComputeConfig

    @property
    def sampler(self) -> str:
        return self.tuner.sampler

    @property
    def pruner(self) -> str:
        return self.tuner.pruner

    @property
    def device(self) -> str:
        return self.compute.device

    @property
    def n_jobs(self) -> int | None:
        return self.compute.n_jobs

    @property
    def engine(self) -> str:
        return self.compute.engine

    @property
    def partition_rows(self) -> int:
        return self.compute.partition_rows


def resolve_stack(name: str | None = None) -> StackContext:
    """Load the selected stack, check its secrets resolve, and build the components a run uses."""
    from stacks.components.tracking import configure_mlflow

    stack = load_stack(selected_stack_name(name))
    stack.require_secrets()
    configure_mlflow(stack)
    return StackContext(
        stack=stack,
        store=ArtifactStore.from_stack(stack),
        validator=WhylogsValidator.from_stack(stack),
        tuner_storage=stack.optuna_storage(),
        storage_options=stack.storage_options(),
        tuner=stack.tuner_config(),
        compute=stack.compute_config(),
    )


def compute_summary(ctx: StackContext) -> dict[str, Any]:
    """Where a run's numeric work ran (engine, device, Dask cluster), for its summary."""
    cluster = ctx.stack.dask_cluster()
    return {"engine": ctx.engine, "device": ctx.device, "dask": cluster.describe() if cluster else None}


def prepare_prefect(name: str | None = None) -> Stack:
    """Point Prefect at the stack's API before Prefect is imported (settings are read at import).

    With no API URL the local stack keeps Prefect's database under the Flywheel home, so the runs of
    ``make run`` show up in ``prefect server start`` launched with the same ``PREFECT_HOME``.
    """
    stack = load_stack(selected_stack_name(name))
    os.environ.setdefault("FLYWHEEL_STACK", stack.name)
    config = stack.orchestrator.configuration
    if config.api_url:
        os.environ["PREFECT_API_URL"] = config.api_url
    else:
        home = flywheel_home() / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(home))
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "steps,flows")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # steps used outside flows
    logging.getLogger("steps").setLevel(logging.INFO)  # tuning progress shows in the Prefect UI
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    # no telemetry: it also races the ephemeral server's SQLite at start-up ("database is locked")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return stack


def task_runner(stack: Stack) -> Any:
    """The stack's task runner: Prefect's thread pool, or Dask (a LocalCluster or a scheduler address).

    Flows call their steps as inline tasks, so no Prefect task is shipped to a Dask worker (each worker
    would otherwise need the Prefect API); the runner's cluster is what ``flows.cluster.dask_client``
    hands to the steps that scale out (tuning trials, xgboost.dask, partitioned scoring).
    """
    config = stack.orchestrator.configuration
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": config.dask_n_workers,
                "threads_per_worker": config.dask_threads_per_worker,
                "dashboard_address": None,  # no fixed port to clash with a second run
            }
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=config.max_workers)


def ingest_joins(timer: Any, ctx: StackContext, spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ingest every table the spec joins, one timed task each: frames and snapshots by join name."""
    from steps.data import ingest

    frames: dict[str, Any] = {}
    snapshots: dict[str, Any] = {}
    for join in spec.joins:
        frames[join.name], snapshots[join.name] = timer.run(
            ingest.ingest,
            f"ingest-{join.name}",
            join.source,
            ctx.store,
            ctx.validator,
            ctx.storage_options,
            retries=2,
        )
    return frames, snapshots


def emit_model_event(event: str, model: str, version: str, payload: dict[str, Any]) -> None:
    """A Prefect event about one version of a model (flywheel.contracts.events names the event and the
    resource), as the deployments' triggers match it."""
    from prefect.events import emit_event

    from flywheel.contracts import events

    emit_event(event=event, resource=events.model_resource(model, version), payload=payload)
