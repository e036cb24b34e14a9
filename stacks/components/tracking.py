"""The MLflow experiment tracker and model registry of a stack.

Credentials come from secret references and reach MLflow through its own environment variables, so they
are never written to a run, a log or a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MlflowTarget:
    tracking_uri: str
    registry_uri: str
    experiment_name: str


def configure_mlflow(stack: Any) -> MlflowTarget:
    """Point MLflow at the stack's tracking server and registry; returns where it points."""
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
    return MlflowTarget(tracking_uri, registry_uri, config.experiment_name)
