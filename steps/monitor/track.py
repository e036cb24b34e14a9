"""Monitoring runs in MLflow (experiment ``monitoring``): drift per column, realized metrics, the decision
(its summary as the reason tag and the run's description, the training mode as a parameter)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from flywheel.contracts.model_version import (
    MONITORED_MODEL_TAG,
    MONITORED_VERSION_TAG,
    MONITORING_DECISION_TAG,
    REASON_TAG,
    TAG_VALUE_LIMIT,
)
from stacks.components.tracking import ensure_experiment
from steps.monitor.policy import PolicyDecision

EXPERIMENT = "monitoring"


def log_monitoring_run(
    model: str,
    version: str,
    drift: pd.DataFrame,
    realized: dict[str, float],
    decision: PolicyDecision,
    html_report: str,
) -> str:
    client = MlflowClient()
    experiment_id = ensure_experiment(EXPERIMENT)
    summary = decision.summary()
    verdict = f"retrain ({decision.mode})" if decision.fire else "no retrain"
    run = client.create_run(
        experiment_id,
        run_name=f"{model} v{version}: {verdict}",
        tags={
            MONITORED_MODEL_TAG: model,
            MONITORED_VERSION_TAG: version,
            MONITORING_DECISION_TAG: "retrain" if decision.fire else "none",
            REASON_TAG: summary[:TAG_VALUE_LIMIT],
            # the run page's description: the same sentence as the artifact and the report
            "mlflow.note.content": summary,
        },
    )
    run_id = str(run.info.run_id)
    if decision.mode is not None:
        client.log_param(run_id, "retrain_mode", decision.mode)
    if not drift.empty:
        worst = drift.groupby("column")["statistic"].max()
        for column, value in worst.items():
            if not math.isnan(float(value)):
                client.log_metric(run_id, f"drift.{column}", float(value))
        client.log_metric(run_id, "windows", float(drift["window"].nunique()))
    for key, value in realized.items():
        if not math.isnan(value):
            client.log_metric(run_id, f"realized.{key}", value)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "drift_report.html").write_text(html_report)
        client.log_artifact(run_id, str(Path(tmp) / "drift_report.html"))
        if not drift.empty:
            drift.to_csv(Path(tmp) / "drift.csv", index=False)
            client.log_artifact(run_id, str(Path(tmp) / "drift.csv"))
    client.set_terminated(run_id, "FINISHED")
    return run_id
