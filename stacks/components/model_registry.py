"""The MLflow model registry as the service and the flows see it: the model contract and loading a version.

The feature schema (names, kinds, vocabularies, nullability, training ranges) is the contract between
training, serving and monitoring; it lives here, beside the code that loads a registered version, so the
service depends on the stack layer only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "flywheel"


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    kind: Literal["numeric", "categorical"]
    categories: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "categories": self.categories,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "nullable": self.nullable,
        }


@dataclass(frozen=True)
class FeatureSchema:
    """The model's input contract: names, kinds, vocabularies and the ranges seen in training."""

    columns: list[FeatureColumn]
    label: str
    task: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "task": self.task, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(
            columns=[FeatureColumn(**c) for c in data["columns"]], label=data["label"], task=data["task"]
        )


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
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "task": self.task,
            "threshold": self.threshold,
            "dataset_digest": self.dataset_digest,
            "dataset_source": self.tags.get(f"{TAG}.dataset.source"),
            "snapshot": self.tags.get(f"{TAG}.dataset.snapshot"),
            "promotion": self.tags.get(f"{TAG}.promotion.reason"),
            "metrics": self.metrics,
            "features": [c.to_dict() for c in self.schema.columns],
            "loaded_at": self.loaded_at,
        }


def alias_version(model_name: str, alias: str = CHAMPION) -> str | None:
    """The version an alias points at, or None (no such model or alias)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def load_model(model_name: str, version: str) -> LoadedModel:
    """Load a version's booster (native XGBoost, no pyfunc), its feature schema, threshold and metrics."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    tags = dict(mv.tags or {})
    run_id = str(mv.run_id or tags.get(f"{TAG}.run_id", ""))
    booster = mlflow.xgboost.load_model(f"models:/{model_name}/{version}")
    schema_path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="model_meta/feature_schema.json"
    )
    schema = FeatureSchema.from_dict(json.loads(Path(schema_path).read_text()))
    run = client.get_run(run_id)
    metrics = {
        k.removeprefix("test."): float(v) for k, v in run.data.metrics.items() if k.startswith("test.")
    }
    return LoadedModel(
        name=model_name,
        version=str(version),
        run_id=run_id,
        booster=booster,
        schema=schema,
        threshold=float(tags.get(f"{TAG}.threshold", 0.5)),
        task=schema.task,
        dataset_digest=tags.get(f"{TAG}.dataset.digest", ""),
        metrics=metrics,
        tags=tags,
        created_at=(mv.creation_timestamp or 0) / 1000,
    )
