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

from flywheel.contracts.model_version import (
    FEATURE_SCHEMA_ARTIFACT,
    MODEL_ARTIFACT,
    TASK_METADATA,
    THRESHOLD_METADATA,
    TRAINING_PROFILE_ARTIFACT,
    Registration,
    artifact_file,
    artifact_folder,
    models_uri,
)
from flywheel.contracts.schema import FeatureSchema
from stacks.components import model_versions


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

    ``lineage`` are the version's lineage tags (``steps.model.track.lineage_tags``); ``warnings`` (a
    threshold that never fires ...) are kept on the version, where a reviewer looks.
    """
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        schema_file = Path(tmp) / artifact_file(FEATURE_SCHEMA_ARTIFACT)
        profile_file = Path(tmp) / artifact_file(TRAINING_PROFILE_ARTIFACT)
        schema_file.write_text(json.dumps(schema.to_dict(), indent=2))
        profile_file.write_bytes(training_profile)
        client.log_artifact(run_id, str(schema_file), artifact_folder(FEATURE_SCHEMA_ARTIFACT))
        client.log_artifact(run_id, str(profile_file), artifact_folder(TRAINING_PROFILE_ARTIFACT))
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
                name=MODEL_ARTIFACT,
                signature=signature(schema),
                input_example=example,
                model_format="ubj",
                metadata={THRESHOLD_METADATA: threshold, TASK_METADATA: schema.task},
            )
    finally:
        quiet.setLevel(level)
    version = model_versions.register_version(info.model_uri, model_name, lineage)
    model_versions.set_tags(
        model_name, version, Registration(run_id, threshold, tuple(warnings or ())).to_tags()
    )
    return RegisteredModel(model_name, version, run_id, models_uri(model_name, version))
