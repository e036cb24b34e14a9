"""Feedback becomes training data: the real service answers October flights and takes their outcomes back,
and the next training learns from them (full and incremental), judged on the newest feedback.

The champion learns from January to September only (``training_data.until`` in the flights spec); the
service (in process, profiling on) logs every prediction with its inputs and the labels clients post; the
training flow collects both into a feedback snapshot. A retrain on unchanged data makes no version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.training import training
from flywheel.contracts.problem import load_spec
from stacks.components import model_versions
from stacks.components.artifact_store import ArtifactStore
from steps.data import feedback as feedback_step
from tests.feedback_traffic import serve_with_feedback

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SPEC = load_spec("flights")
TRAINING: dict[str, Any] = {"problem": "flights", "n_trials": 2, "sample_rows": 12_000, "seed": 1}
SERVED_ROWS = 3_000
HELD_OUT = round(SERVED_ROWS * SPEC.training_data.holdout_fraction)


def _store(home: Path) -> ArtifactStore:
    return ArtifactStore(str(home / "artifacts"))


@pytest.fixture(scope="module")
def champion(module_home: Path) -> dict[str, Any]:
    return training(**TRAINING)


@pytest.fixture(scope="module")
def served(champion: dict[str, Any], module_home: Path) -> dict[str, Any]:
    """October traffic through the real service, and every outcome back through /feedback."""
    return serve_with_feedback(SERVED_ROWS)


def test_unchanged_data_and_settings_make_no_new_version(champion: dict[str, Any]) -> None:
    assert champion["promoted"] and champion["version"] == "1"
    again = training(**TRAINING)
    assert again["version"] is None and not again["promoted"]
    assert again["reason"].startswith("nothing new to learn: champion v1")
    before_feedback = training(**TRAINING, mode="incremental")  # no traffic has come back yet
    assert before_feedback["version"] is None
    assert before_feedback["reason"].startswith("nothing new to learn: 0 feedback rows"), before_feedback
    versions = MlflowClient().search_model_versions(f"name='{SPEC.model_name}'")
    assert [str(v.version) for v in versions] == ["1"]


def test_the_champion_never_learned_from_october(champion: dict[str, Any]) -> None:
    run = MlflowClient().get_run(champion["run_id"])
    assert run.data.params["split.test_to"] < "2013-10-01 04:00:00+00:00"
    assert champion["data"]["data.feedback_rows"] == 0


def test_feedback_is_collected_into_a_snapshot_with_lineage(
    served: dict[str, Any], module_home: Path
) -> None:
    store = _store(module_home)
    names = model_versions.feature_schema(model_versions.get_version(SPEC.model_name, "1").run_id).names
    collected = feedback_step.collect(store, SPEC, names, ["0", "1"])
    assert collected.rows == SERVED_ROWS
    assert collected.frame["label"].tolist() == served["labels"]  # in serving order, one per request id
    assert collected.lineage.versions == ["1"] and collected.lineage.windows
    written = feedback_step.snapshot(collected, store, _validator())
    assert written.snapshot is not None and written.snapshot.source_uri == "feedback://flight-delay"
    lineage = feedback_step.read_lineage(store, written.snapshot.digest)
    assert lineage is not None and lineage.rows == SERVED_ROWS and lineage.versions == ["1"]


def _validator() -> Any:
    from stacks.components.data_validator import WhylogsValidator
    from stacks.config import WhylogsConfig

    return WhylogsValidator(WhylogsConfig())


def test_a_retrain_learns_from_the_feedback_and_is_judged_on_the_newest(
    served: dict[str, Any], module_home: Path
) -> None:
    result = training(**TRAINING, reason="drift-detected: test")
    assert result["version"] == "2", result["reason"]
    info = result["data"]
    assert info["data.feedback_rows"] == SERVED_ROWS
    assert info["data.holdout_rows"] == HELD_OUT  # the newest quarter of what v1 never saw
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.data.params["split.method"] == "newest feedback held out"
    assert run.data.params["split.test_rows"] == f"{HELD_OUT:,}"
    assert run.inputs is not None
    contexts = {i.tags[0].value if i.tags else "" for i in run.inputs.dataset_inputs}
    assert "feedback" in contexts
    version = client.get_model_version(SPEC.model_name, "2")
    tags = version.tags
    assert tags["flywheel.feedback.digest"] == result["feedback_snapshot"]
    assert tags["flywheel.feedback.rows"] == str(SERVED_ROWS - HELD_OUT)
    assert tags["flywheel.training.mode"] == "full"
    assert "champion v1" in tags["flywheel.promotion.reason"]
    assert "+0.0000" not in tags["flywheel.promotion.reason"]
    assert (version.description or "").startswith(("Promoted to champion", "Not promoted"))
    meta = json.loads(_store(module_home).read_bytes(f"snapshots/{result['feedback_snapshot']}/meta.json"))
    assert meta["source_uri"] == "feedback://flight-delay" and meta["rows"] == SERVED_ROWS


def test_a_version_trained_on_feedback_reproduces(served: dict[str, Any], module_home: Path) -> None:
    from flywheel.reproduce import reproduce

    # v2 learned from the source and the feedback, and the gate held out the newest feedback v1 never saw
    report = reproduce(model_versions.get_version(SPEC.model_name, "2"), _store(module_home))
    assert report.reproduced, report.text()
    assert report.max_prediction_diff == 0.0 and "data            feedback" in report.text()
    assert not [d for d in report.differences if d.startswith("data")], report.differences


def test_incremental_training_continues_the_champion(served: dict[str, Any]) -> None:
    champion = model_versions.by_alias(SPEC.model_name)
    assert champion is not None
    result = training(**TRAINING, mode="incremental", reason="decay: test")
    assert result["mode"] == "incremental"
    if result["version"] is None:  # the champion (v2) already learned every served row but the held-out
        assert result["reason"].startswith("nothing new to learn")
        return
    import mlflow

    grown = mlflow.xgboost.load_model(f"models:/{SPEC.model_name}/{result['version']}")
    base = mlflow.xgboost.load_model(f"models:/{SPEC.model_name}/{champion.version}")
    rounds = SPEC.training_data.incremental_rounds
    assert grown.num_boosted_rounds() == base.num_boosted_rounds() + rounds
    tags = MlflowClient().get_model_version(SPEC.model_name, result["version"]).tags
    assert tags["flywheel.training.mode"] == "incremental"
    again = training(**TRAINING, mode="incremental", reason="decay: test")
    if not result["promoted"]:  # the same champion and the same feedback: the same candidate again
        assert again["version"] is None and again["reason"].startswith("nothing new to learn")
        return
    # the new champion learned up to its feedback.until: the next one learns only what came after, or
    # says there is nothing new (when every later row is held out for its gate); never the same rows again
    if again["version"] is None:
        assert again["reason"].startswith("nothing new to learn"), again["reason"]
        return
    learned = float(tags["flywheel.feedback.until"])
    later = MlflowClient().get_model_version(SPEC.model_name, again["version"]).tags
    assert float(later["flywheel.feedback.until"]) > learned
