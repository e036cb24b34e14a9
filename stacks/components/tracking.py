"""The MLflow experiment tracker and model registry of a stack.

Credentials come from secret references and reach MLflow through its own environment variables, so they
are never written to a run, a log or a file.

Where runs' artifacts go: a tracking *server* decides (the staging server proxies them to S3). With a
database or folder as the tracker, MLflow's default is `./mlruns` under whatever directory the process
started in, which scatters a stack's artifacts over working directories and makes every SQLite database's
experiment 1 share one folder; so experiments created here get `<artifact store>/mlflow/<experiment>`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacks.sqlite_init import sqlite_schema_lock


@dataclass(frozen=True)
class MlflowTarget:
    tracking_uri: str
    registry_uri: str
    experiment_name: str
    artifact_base: str | None  # where new experiments keep artifacts; None: the tracking server decides


_artifact_base: str | None = None


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow 3's UI reads for what an experiment is (GenAI apps, or model training)."""
MODEL_TRAINING_KIND = "custom_model_development"
"""Its value for "Machine learning": runs, metrics and models, not empty trace and evaluation panels."""
ML_VIEW_QUERY = "workflowType=machine_learning"
"""The MLflow UI's own switch between its GenAI and machine-learning views, for links we print: in
MLflow 3.17 the sidebar's switch (remembered in the browser, GenAI unless changed) decides the view, and
the experiment tag decides it only where that switch is off."""


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it (with the stack's artifact location) when it does not exist.

    Experiments are created as model-training experiments; one that exists without a kind (created by
    an older Flywheel, or by MLflow itself) gets it here, the first time a run starts in it. A kind that
    someone set deliberately is left as it is.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = f"{_artifact_base}/{name}" if _artifact_base else None
        try:
            return str(
                client.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
                )
            )
        except Exception:  # created concurrently by another process: use theirs
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":  # runs would land where the UI does not list them
        raise ValueError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted: restore it with "
            f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, or name another "
            "in the stack's experiment_tracker.configuration.experiment_name"
        )
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return str(experiment.experiment_id)


def experiment_ui_path(experiment_id: str) -> str:
    """The MLflow UI's page of an experiment, opened on its runs (append it to the UI's address)."""
    return f"#/experiments/{experiment_id}/runs?{ML_VIEW_QUERY}"


def configure_mlflow(stack: Any, *, create_experiment: bool = True) -> MlflowTarget:
    """Point MLflow at the stack's tracking server and registry; returns where it points.

    ``create_experiment=False`` is for a process that only reads the registry (the prediction service): it
    must not write to it, and creating the experiment would also turn a missing SQLite database into a new,
    empty one (or crash the start on a corrupt one) instead of leaving the service to report it. Such a
    reader also opens a database connection per query (``NullPool``) unless told otherwise: a long-lived
    process keeping pooled connections to a SQLite file would go on reading the old file after a backup is
    restored over it, and never see the repair.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3 reports usage unless told not to
    import mlflow

    tracker = stack.experiment_tracker
    if tracker is None:
        raise ValueError(f"stack {stack.name!r} has no experiment_tracker: training needs MLflow")
    config = tracker.configuration
    os.environ.update(stack.mlflow_env())
    tracking_uri = stack.mlflow_tracking_uri()
    registry_uri = stack.mlflow_registry_uri() or tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    global _artifact_base
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        _artifact_base = None
    else:
        root = stack.artifact_root().rstrip("/")
        _artifact_base = f"{root}/mlflow" if "://" in root else Path(root, "mlflow").resolve().as_uri()
    if create_experiment:
        with sqlite_schema_lock(tracking_uri, registry_uri):  # builds the stores: creates a new DB's tables
            ensure_experiment(config.experiment_name)
            if registry_uri != tracking_uri:
                mlflow.MlflowClient().search_registered_models(max_results=1)
    elif any(uri.startswith("sqlite:") for uri in (tracking_uri, registry_uri)):
        os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")  # read when a store is built
    return MlflowTarget(tracking_uri, registry_uri, config.experiment_name, _artifact_base)


def readable(value: Any) -> str:
    """A quantity as a person reads it in a tag, parameter or description: ``labels 4,904``, ``10``
    rounds (not ``10.0``, what a column with a gap holds); other values as ``str`` gives them. For counts
    and amounts: a code or a year (``2013``) is passed as text, so it is not grouped."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return f"{int(number):,}"
    return str(value)


def reason_label(reason: str | None, limit: int = 40) -> str:
    """Why a run happened, in a few words: ``drift-detected: 3 of 4 windows ...`` -> ``drift-detected``,
    ``schedule (0 3 * * 1 UTC)`` -> ``schedule``; the whole reason stays in the run's tag."""
    head = (reason or "").split(":", 1)[0].split(" (", 1)[0].strip()
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def run_name(model: str, action: str, *details: str, reason: str | None = None) -> str:
    """A run's name in MLflow's lists, saying what ran on which model: ``flight-delay train 2026-12-01
    16:05 UTC (drift-detected)``, ``flight-delay monitor v3``."""
    label = reason_label(reason)
    name = " ".join([model, action, *[d for d in details if d]])
    return f"{name} ({label})" if label else name
