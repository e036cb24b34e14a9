"""The monitoring reference: a whylogs profile of the training rows, their labels and the model's predictions.

Stored with the model version (in MLflow and the artifact store), so monitoring compares serving traffic
with the data this very version learned from, predictions included.
"""

from __future__ import annotations

import logging

import xgboost as xgb

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.data.features import Dataset
from steps.model.xgb import predict

log = logging.getLogger(__name__)


def training_profile(
    booster: xgb.Booster, train: Dataset, validator: WhylogsValidator, held_out: Dataset | None = None
) -> bytes:
    """Features and label of the training rows; the ``prediction`` column from held-out rows when given.

    In-sample predictions are more confident than any the model makes on new data, so a reference built
    from them would show prediction drift on the very first day of serving.
    """
    frame = train.frame[[*train.schema.names, train.schema.label]].copy()
    if held_out is None:
        frame["prediction"] = train.schema.monitored(predict(booster, train.X))
        return validator.to_bytes(validator.profile(frame))
    features = validator.profile(frame)
    held_out_p = held_out.schema.monitored(predict(booster, held_out.X))
    predictions = validator.profile(held_out.frame[[]].assign(prediction=held_out_p))
    return validator.to_bytes(features.merge(predictions))


def store_reference(store: ArtifactStore, model_name: str, version: str, profile: bytes) -> str:
    return store.write_bytes(layout.training_reference(model_name, version), profile)


def champion_missing_fractions(
    store: ArtifactStore, validator: WhylogsValidator, model_name: str
) -> dict[str, float] | None:
    """Each column's missing fraction in the current champion's training data; None without a champion
    (or when its profile cannot be read: validation then treats the data as a first training's)."""
    from mlflow.exceptions import MlflowException

    from stacks.components.model_versions import alias_version
    from stacks.components.registry_health import RegistryUnavailable

    try:
        version = alias_version(model_name)
        if version is None:
            log.info("no champion of %s yet: its data is validated as a first training's", model_name)
            return None
        view = validator.from_bytes(store.read_bytes(layout.training_reference(model_name, version)))
    except (MlflowException, RegistryUnavailable, OSError, ValueError) as exc:
        log.info("no champion training profile of %s to compare missing values with: %s", model_name, exc)
        return None
    return validator.missing_fractions(view)
