"""The monitoring reference: a whylogs profile of the training rows, their labels and the model's predictions.

Stored with the model version (in MLflow and the artifact store), so monitoring compares serving traffic
with the data this very version learned from, predictions included.
"""

from __future__ import annotations

import xgboost as xgb

from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.data.features import Dataset
from steps.model.xgb import predict


def training_profile(
    booster: xgb.Booster, train: Dataset, validator: WhylogsValidator, held_out: Dataset | None = None
) -> bytes:
    """Features and label of the training rows; the ``prediction`` column from held-out rows when given.

    In-sample predictions are more confident than any the model makes on new data, so a reference built
    from them would show prediction drift on the very first day of serving.
    """
    frame = train.frame[[*train.schema.names, train.schema.label]].copy()
    if held_out is None:
        frame["prediction"] = predict(booster, train.X)
        return validator.to_bytes(validator.profile(frame))
    features = validator.profile(frame)
    predictions = validator.profile(held_out.frame[[]].assign(prediction=predict(booster, held_out.X)))
    return validator.to_bytes(features.merge(predictions))


def reference_path(model_name: str, version: str) -> str:
    return f"models/{model_name}/{version}/training_profile.bin"


def store_reference(store: ArtifactStore, model_name: str, version: str, profile: bytes) -> str:
    return store.write_bytes(reference_path(model_name, version), profile)
