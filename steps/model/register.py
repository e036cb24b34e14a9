"""Register: log the model with its signature, input example, data lineage and training profile to MLflow,
and create a registry version.

The signature is written explicitly from the feature schema: MLflow infers none for a categorical booster.
The version carries tags that lead back to the data: dataset digest, snapshot URI and source URI.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure
from mlflow import MlflowClient

from flywheel.contracts.schema import FeatureSchema

TAG = "flywheel"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    model_uri: str


def signature(schema: FeatureSchema) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("string" if c.kind == "categorical" else "double", c.name, required=False)
            for c in schema.columns
        ]
    )
    if schema.task == "multiclass":  # multi:softprob: one probability per class, in the schema's order
        outputs = Schema([ColSpec("double", f"probability_{c}") for c in schema.classes or []])
    else:
        outputs = Schema([ColSpec("double", "prediction")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(frame: pd.DataFrame, schema: FeatureSchema, rows: int = 3) -> pd.DataFrame:
    example = frame[schema.names].head(rows).copy()
    for column in schema.columns:
        if column.kind == "categorical":
            example[column.name] = example[column.name].astype(object)
    return example


def log_figures(run_id: str, figures: dict[str, Figure], folder: str = "plots") -> None:
    client = MlflowClient()
    for name, figure in figures.items():
        client.log_figure(run_id, figure, f"{folder}/{name}.png")


def log_table(run_id: str, frame: pd.DataFrame, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        frame.to_csv(target, index=True)
        MlflowClient().log_artifact(run_id, str(target), str(Path(path).parent) if "/" in path else None)


def register(
    booster: xgb.Booster,
    *,
    run_id: str,
    model_name: str,
    schema: FeatureSchema,
    example: pd.DataFrame,
    training_profile: bytes,
    lineage: dict[str, str],
    threshold: float,
    warnings: list[str] | None = None,
) -> RegisteredModel:
    """Log the booster into ``run_id`` and register it under ``model_name``; returns the new version.

    ``warnings`` (a threshold that never fires ...) are kept on the version, where a reviewer looks.
    """
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "feature_schema.json").write_text(json.dumps(schema.to_dict(), indent=2))
        (Path(tmp) / "training.bin").write_bytes(training_profile)
        client.log_artifact(run_id, str(Path(tmp) / "feature_schema.json"), "model_meta")
        client.log_artifact(run_id, str(Path(tmp) / "training.bin"), "profiles")
    # MLflow replays the input example through the xgboost pyfunc, which builds a DMatrix without
    # enable_categorical and so rejects string categoricals (a known MLflow limitation, see README); it only
    # warns. The service predicts with the booster natively, so that warning is silenced here.
    quiet = logging.getLogger("mlflow.models.model")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.xgboost.log_model(
                booster,
                name="model",
                signature=signature(schema),
                input_example=example,
                model_format="ubj",
                metadata={"flywheel_threshold": threshold, "flywheel_task": schema.task},
            )
    finally:
        quiet.setLevel(level)
    version = mlflow.register_model(
        info.model_uri, model_name, tags={f"{TAG}.{k}": v for k, v in lineage.items()}
    )
    extra = {
        f"{TAG}.training_profile": f"runs:/{run_id}/profiles/training.bin",
        f"{TAG}.feature_schema": f"runs:/{run_id}/model_meta/feature_schema.json",
        f"{TAG}.threshold": str(threshold),
        f"{TAG}.run_id": run_id,
    }
    if warnings:
        extra[f"{TAG}.warnings"] = "\n".join(warnings)[:5000]
    for key, value in extra.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    return RegisteredModel(
        model_name, str(version.version), run_id, f"models:/{model_name}/{version.version}"
    )


def load_feature_schema(run_id: str) -> FeatureSchema:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_meta/feature_schema.json")
    return FeatureSchema.from_dict(json.loads(Path(path).read_text()))
