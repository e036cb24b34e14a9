"""The model's input and output contract: feature columns, the label, the task and its classes.

Written at training (``feature_schema.json`` beside the model), read by serving, batch scoring, monitoring
and the package builders: one definition for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["binary", "multiclass", "regression"]


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
    """The model's input contract (names, kinds, vocabularies, training ranges) and what its output means.

    ``classes`` names the label values in the model's class order: for a binary model ``[negative,
    positive]`` (``["0", "1"]`` when the label was already 0/1), for a multiclass model one per output
    column of ``multi:softprob``; None for regression. They are the canonical text of the values
    (``flywheel.contracts.problem.label_key``), which is what responses and feedback use.
    """

    columns: list[FeatureColumn]
    label: str
    task: str
    classes: list[str] | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def monitored(self, output: Any) -> Any:
        """The one value per row that the prediction log and the drift profiles keep.

        Binary: the positive-class probability; regression: the value; multiclass: the predicted class
        (its name), so monitoring sees the drift of the predicted class distribution, which a matrix of
        probabilities would hide.
        """
        import numpy as np

        values = np.asarray(output)
        if self.task != "multiclass" or values.ndim == 1:
            return values
        return np.asarray(self.classes, dtype=object)[values.argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "task": self.task,
            "columns": [c.to_dict() for c in self.columns],
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        classes = data.get("classes")
        return cls(
            columns=[FeatureColumn(**c) for c in data["columns"]],
            label=data["label"],
            task=data["task"],
            classes=None if classes is None else [str(c) for c in classes],
        )
