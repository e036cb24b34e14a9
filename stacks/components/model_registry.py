"""A registered version, loaded to predict: the booster, its feature schema, threshold and test metrics.

The feature schema (names, kinds, vocabularies, nullability, training ranges, classes) is the contract
between training, serving and monitoring; it is defined in :mod:`flywheel.contracts.schema`. Which version an
alias names, and a version's tags, are read through :mod:`stacks.components.model_versions`; this module
only loads what a version holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flywheel.contracts.model_version import TEST_METRIC_PREFIX, VersionTags, models_uri
from flywheel.contracts.schema import FeatureSchema
from stacks.components import model_versions

DEFAULT_THRESHOLD = 0.5
"""The decision threshold of a version registered without one."""


@dataclass
class LoadedModel:
    """A registered version, ready to predict: the booster plus everything a response or a report names."""

    name: str
    version: str
    run_id: str
    booster: Any
    schema: FeatureSchema
    threshold: float
    task: str
    dataset_digest: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # registration time (epoch seconds)
    loaded_at: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        tags = VersionTags(self.tags)
        promotion = tags.promotion
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "task": self.task,
            "threshold": self.threshold,
            "dataset_digest": self.dataset_digest,
            "dataset_source": tags.dataset.source or None,
            "snapshot": tags.dataset.snapshot or None,
            "promotion": None if promotion is None else promotion.reason,
            "metrics": self.metrics,
            "features": [c.to_dict() for c in self.schema.columns],
            "classes": self.schema.classes,
            "loaded_at": self.loaded_at,
        }


def load_model(model_name: str, version: str) -> LoadedModel:
    """Load a version's booster (native XGBoost, no pyfunc), its feature schema, threshold and metrics."""
    import mlflow
    from mlflow import MlflowClient

    mv = model_versions.get_version(model_name, version)
    booster = mlflow.xgboost.load_model(models_uri(model_name, mv.version))
    schema = model_versions.feature_schema(mv.run_id)
    run = MlflowClient().get_run(mv.run_id)
    metrics = {
        k.removeprefix(TEST_METRIC_PREFIX): float(v)
        for k, v in run.data.metrics.items()
        if k.startswith(TEST_METRIC_PREFIX)
    }
    threshold = mv.tags.threshold
    return LoadedModel(
        name=model_name,
        version=mv.version,
        run_id=mv.run_id,
        booster=booster,
        schema=schema,
        threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        task=schema.task,
        dataset_digest=mv.tags.dataset.digest,
        metrics=metrics,
        tags=dict(mv.tags.raw),
        created_at=mv.created_at,
    )
