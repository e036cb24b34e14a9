"""`flywheel init` then training, with no edit in between: each shape of a user's file, written as CSV,
becomes a spec that the training flow runs end to end on the local stack into a registered champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.training import training
from flywheel.cli import app
from flywheel.contracts.problem import load_spec

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def user_file(label: str, n: int = 1_500, *, with_time: bool = False) -> pd.DataFrame:
    """A learnable label of the given kind next to an integer key, a text id and a 90%-missing column."""
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=n)
    region = rng.choice(["north", "south", "east"], size=n)
    score = x1 + (region == "north") + rng.normal(scale=0.3, size=n)
    frame = pd.DataFrame(
        {
            "customer_id": rng.permutation(n) + 10_000,
            "x1": x1,
            "visits": rng.integers(0, 5, size=n),
            "region": region,
            "token": [f"t-{i:05d}" for i in rng.permutation(n)],
            "sparse": np.where(rng.random(n) < 0.9, np.nan, rng.normal(size=n)),
        }
    )
    if with_time:
        frame["created"] = pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M")
    labels = {
        "good_bad": lambda: np.where(score > 1.0, "bad", "good"),
        "boolean": lambda: score > 0.5,
        "yes_no": lambda: np.where(score > -0.5, "yes", "no"),
        "zero_one": lambda: (score > 0.5).astype(int),
        "multiclass": lambda: np.select([score < 0, score < 1], ["low", "mid"], "high"),
        "regression": lambda: 3 * score + 10 + rng.normal(size=n),
    }
    frame["outcome"] = labels[label]()
    return frame


SHAPES = [
    # (label kind, with a time column, task, metric and the least value a learnt model reaches)
    ("regression", False, "regression", "r2", 0.7),
    ("zero_one", True, "binary", "roc_auc", 0.85),
    ("good_bad", False, "binary", "roc_auc", 0.85),
    ("boolean", True, "binary", "roc_auc", 0.85),
    ("yes_no", False, "binary", "roc_auc", 0.85),
    ("multiclass", True, "multiclass", "accuracy", 0.6),
]


@pytest.mark.parametrize(
    ("label", "with_time", "task", "metric", "least"), SHAPES, ids=[s[0] for s in SHAPES]
)
def test_init_then_train_registers_a_champion(
    module_home: Path, tmp_path: Path, label: str, with_time: bool, task: str, metric: str, least: float
) -> None:
    data = tmp_path / f"{label} data.csv"
    user_file(label, with_time=with_time).to_csv(data, index=False)
    path = tmp_path / "spec.yaml"
    result = CliRunner().invoke(app, ["init", str(data), "--target", "outcome", "-o", str(path)])
    assert result.exit_code == 0, result.output
    spec = load_spec(path)
    assert spec.task == task and (spec.time is not None) == with_time
    assert set(spec.exclude) == {"customer_id", "token"}

    summary = training(problem=str(path), n_trials=2, seed=1)

    assert summary["model_name"] == spec.model_name == f"{label}-data-model"
    assert summary["version"] == "1" and summary["promoted"], summary["reason"]
    value = summary["metrics"][metric]
    assert least <= value <= 1.0, summary["metrics"]
    champion = MlflowClient().get_model_version_by_alias(spec.model_name, "champion")
    assert str(champion.version) == "1" and champion.run_id == summary["run_id"]
