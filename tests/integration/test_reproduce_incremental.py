"""`flywheel reproduce` of an incremental version: the champion's booster, as registered, grown again on the
recorded feedback snapshot, skipping what the champion had learned, gives the registered model bit for bit;
a base version gone from the registry, or a feedback snapshot gone from the store, is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.training import training
from flywheel.cli import app
from flywheel.contracts import layout
from flywheel.reproduce import reproduce
from stacks.components import model_versions
from stacks.components.artifact_store import ArtifactStore
from tests.feedback_traffic import SPEC, serve_with_feedback

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TRAINING: dict[str, Any] = {"problem": "flights", "n_trials": 2, "sample_rows": 8_000, "seed": 5}
SERVED_ROWS = 1_000


@pytest.fixture(scope="module")
def grown(module_home: Path) -> dict[str, Any]:
    """v1 trained in full (January to September); October served and labelled; v2 grown from v1."""
    first = training(**TRAINING)
    assert first["version"] == "1"
    serve_with_feedback(SERVED_ROWS)
    result = training(**TRAINING, mode="incremental", reason="decay: test")
    assert result["version"] == "2", result["reason"]
    return result


def _store(home: Path) -> ArtifactStore:
    return ArtifactStore(str(home / "artifacts"))


def test_an_incremental_version_reproduces_bit_for_bit(grown: dict[str, Any], module_home: Path) -> None:
    mv = model_versions.get_version(SPEC.model_name, "2")
    assert mv.tags.training.mode == "incremental" and mv.tags.training.champion_version == "1"
    params = MlflowClient().get_run(grown["run_id"]).data.params
    base = MlflowClient().get_run(model_versions.get_version(SPEC.model_name, "1").run_id).data.params
    # the trees grew with the champion's tuned parameters (the local stack sets no thread count)
    assert {k: v for k, v in params.items() if k.startswith("xgb.")} == {
        k: v for k, v in base.items() if k.startswith("xgb.")
    }
    result = CliRunner().invoke(app, ["reproduce", f"{SPEC.model_name}/2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "reproduced      yes" in out and "bit-identical to the registered model on" in out
    rounds = SPEC.training_data.incremental_rounds
    base_rounds = mlflow.xgboost.load_model(f"models:/{SPEC.model_name}/1").num_boosted_rounds()
    assert f"v1 as registered ({base_rounds} rounds) boosted {rounds} more rounds" in out
    assert "data            feedback: snapshot" in out and "source " not in out.split("retrained")[0]
    # the rows it learned from are the ones it recorded: the served rows less the gate's newest quarter
    trained = int(params["split.train_rows"].replace(",", ""))
    assert trained == SERVED_ROWS - round(SERVED_ROWS * SPEC.training_data.holdout_fraction)
    assert "data:" not in out.split("differs", 1)[1] and "rounds:" not in out


def test_a_missing_feedback_snapshot_is_named(grown: dict[str, Any], module_home: Path) -> None:
    digest = model_versions.get_version(SPEC.model_name, "2").tags.training.feedback_digest
    data = module_home / "artifacts" / layout.snapshot_file(digest, layout.SNAPSHOT_DATA)
    moved = data.with_name("data.parquet.away")
    data.rename(moved)
    try:
        report = reproduce(model_versions.get_version(SPEC.model_name, "2"), _store(module_home))
    finally:
        moved.rename(data)
    assert not report.reproduced and report.missing == [digest]
    assert f"snapshot {digest} (feedback) is missing from the store" in report.text()


def test_a_base_version_gone_from_the_registry_is_named(grown: dict[str, Any], module_home: Path) -> None:
    # last in the module: v1 is deleted for good
    MlflowClient().delete_model_version(SPEC.model_name, "1")
    result = CliRunner().invoke(app, ["reproduce", f"{SPEC.model_name}/2"])
    assert result.exit_code == 1, result.output
    assert "cannot reproduce: v2 continued v1, which is no longer in the registry" in result.output
    assert "Traceback" not in result.output
