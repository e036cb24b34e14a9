"""Monitoring on the local stack: traffic windows written in the service's format, the policy, the event.

Windows are profiled here from real flights exactly as the service's profiling process writes them
(features with categories as strings, plus the prediction), so this test covers the flow; the loop
through a running service is tested end to end elsewhere.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.monitoring import monitoring
from flows.training import training
from flywheel.contracts.problem import load_spec
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from stacks.components.lineage import recorded_events
from stacks.components.model_registry import load_model
from stacks.loader import STACKS_DIR
from steps.data import features
from steps.data.sources import read_source

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SPEC = load_spec("flights")


@pytest.fixture(scope="module")
def stack_file(module_home: Path) -> str:
    data = yaml.safe_load((STACKS_DIR / "local.yaml").read_text())
    data["stack_name"] = "local-monitoring"
    data["components"]["data_validator"]["configuration"] = {"retraining": {"cooldown_hours": 0}}
    path = module_home / "local-monitoring.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def champion(stack_file: str) -> dict[str, Any]:
    return training(stack=stack_file, problem="flights", n_trials=1, sample_rows=20_000, seed=4)


def write_windows(
    home: Path, version: str, months: list[int], start: datetime, n: int = 4, rows: int = 3000
) -> None:
    flights = read_source(SPEC.source)
    pool = flights[flights["month"].isin(months)].sample(n=n * rows, random_state=len(months) + start.minute)
    model = load_model("flight-delay", version)
    derived = features.derive(
        pool.reset_index(drop=True), SPEC, {"weather": read_source(SPEC.joins[0].source)}
    )
    encoded = features.encode(derived, model.schema)
    frame = encoded.astype({c.name: object for c in model.schema.columns if c.kind == "categorical"})
    frame["prediction"] = model.booster.inplace_predict(encoded)
    store = ArtifactStore(str(home / "artifacts"))
    validator = WhylogsValidator()
    for i in range(n):
        stamp = (start + timedelta(minutes=5 * i)).strftime("%Y%m%dT%H%M%SZ")
        part = frame.iloc[i * rows : (i + 1) * rows]
        store.write_bytes(
            f"serving/flight-delay/v{version}/profiles/{stamp}-test.bin",
            validator.to_bytes(validator.profile(part)),
        )


def test_training_months_do_not_fire_later_months_do(
    champion: dict[str, Any], stack_file: str, module_home: Path
) -> None:
    version = champion["version"]
    write_windows(module_home, version, months=list(range(1, 11)), start=datetime(2026, 1, 1, tzinfo=UTC))
    quiet = monitoring(stack=stack_file, problem="flights")
    assert not quiet["fire"], quiet["reason"]
    assert len(quiet["windows"]) == 4 and quiet["event_id"] is None

    write_windows(module_home, version, months=[12], start=datetime(2026, 1, 2, tzinfo=UTC))
    loud = monitoring(stack=stack_file, problem="flights")
    assert loud["fire"], loud["reason"]
    assert "drift in" in loud["reason"] and "month" in loud["reason"]
    assert loud["event_id"] is not None
    assert loud["mode"] == "full" and loud["reason"].startswith("retrain (full: the inputs drifted)")
    page = Path(loud["report"]).read_text()
    assert page.startswith("<!doctype html>") and "<h2>Drift heatmap</h2>" in page and "{'" not in page
    assert html.escape(loud["reason"]) in page

    from mlflow import MlflowClient

    run = MlflowClient().get_run(loud["monitoring_run_id"])
    assert run.data.tags["flywheel.decision"] == "retrain" and "drift.month" in run.data.metrics
    # one sentence everywhere: the report, the run's reason tag and description, the event
    assert run.data.tags["flywheel.reason"] == loud["reason"] == run.data.tags["mlflow.note.content"]
    assert run.data.params["retrain_mode"] == "full"
    assert quiet["reason"].startswith("no retrain: 0 of the last 4 windows drifting (needs 3)")
    *_, done = recorded_events(module_home / "lineage" / "openlineage.jsonl", "flights.monitoring")
    assert done["eventType"] == "COMPLETE" and [o["name"] for o in done["outputs"]] == [loud["report"]]
    (served,) = [i for i in done["inputs"] if "flywheelWindows" in i["facets"]]
    assert served["facets"]["flywheelWindows"]["windows"] == loud["windows"]


def test_garbage_label_files_are_counted_not_fatal(
    champion: dict[str, Any], stack_file: str, module_home: Path
) -> None:
    """A label 2 for a binary model once failed the monitoring run (sklearn: y_true contains {2.0})."""
    import io

    import numpy as np
    import pandas as pd

    version = champion["version"]
    store = ArtifactStore(str(module_home / "artifacts"))
    ids = [f"r{i}" for i in range(400)]
    predictions = pd.DataFrame({"request_id": ids, "prediction": np.linspace(0.05, 0.95, 400), "ts": 1.0})
    labels = pd.DataFrame(
        {
            "request_id": [*ids, "r0", None, "r1", "r2"],
            "label": [float(i % 2) for i in range(400)] + [1.0, 1.0, 2.0, np.nan],
            "ts": 2.0,
        }
    )
    for path, frame in (
        (f"serving/flight-delay/v{version}/predictions/20260101/test.parquet", predictions),
        ("serving/flight-delay/feedback/20260101/test.parquet", labels),
    ):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        store.write_bytes(path, buffer.getvalue())
    store.write_bytes("serving/flight-delay/feedback/20260101/broken.parquet", b"PAR1 not really")
    result = monitoring(stack=stack_file, problem="flights", emit=False)
    assert result["realized"]["labels"] == 400.0
    assert result["skipped_labels"] == {
        "repeated request id": 1,
        "bad request id": 1,
        "label not 0 or 1": 1,
        "label not a finite number": 1,
        "unreadable label files": 1,
    }


def test_no_champion_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no champion to monitor"):
        monitoring(problem="flights")
