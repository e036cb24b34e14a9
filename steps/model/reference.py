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


def training_profile(booster: xgb.Booster, train: Dataset, validator: WhylogsValidator) -> bytes:
    frame = train.frame[[*train.schema.names, train.schema.label]].copy()
    frame["prediction"] = predict(booster, train.X)
    return validator.to_bytes(validator.profile(frame))


def reference_path(model_name: str, version: str) -> str:
    return f"models/{model_name}/{version}/training_profile.bin"


def store_reference(store: ArtifactStore, model_name: str, version: str, profile: bytes) -> str:
    return store.write_bytes(reference_path(model_name, version), profile)
