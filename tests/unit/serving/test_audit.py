"""The prediction audit trail: request ids served by the real service (profiling on, the log on a real
temporary artifact store) traced back to their version, inputs, explanation and label, by the lookup, by
``flywheel explain-request`` and by ``GET /requests/{id}``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from flywheel import audit
from flywheel.cli import app as cli
from serving.app import create_app
from serving.holder import prepare
from serving.settings import ServiceSettings
from stacks.components.artifact_store import ArtifactStore
from stacks.components.model_registry import load_model
from tests.unit.serving.conftest import record_from, wait_for


def _forged(rid: str) -> str:
    """The id with its last MAC digit changed: the form of an issued id, not its signature."""
    return rid[:-1] + ("0" if rid[-1] != "0" else "1")


@pytest.fixture(scope="module")
def served_log(champion: dict[str, Any], serving_home: Path) -> dict[str, Any]:
    """Requests through the real service; what its endpoint answered while it ran; the log it left."""
    settings = ServiceSettings(
        stack=None, model_name="flight-delay", profiling=True, watch_interval_s=3600, profile_window_s=2
    )
    test = champion["test"]
    seen: dict[str, Any] = {}
    with TestClient(create_app(settings)) as c:
        one = c.post("/predict", json=record_from(test, 3)).json()
        # the profiling process has only just started: nothing of this request can be on the store yet
        seen["early"] = c.get(f"/requests/{one['request_id']}")
        batch = c.post("/predict/batch", json={"records": [record_from(test, i) for i in range(5)]}).json()
        bid = batch["request_id"]
        assert c.post("/feedback", json={"request_id": f"{bid}:2", "label": 1}).status_code == 202
        seen["forged"] = c.get(f"/requests/{_forged(bid)}:2")
        seen["garbage"] = c.get("/requests/not-an-id")
        seen["doc"] = c.get("/openapi.json").json()
        seen["whole_batch"] = c.get(f"/requests/{bid}")
        seen["no_such_row"] = c.get(f"/requests/{bid}:9")
        assert wait_for(lambda: c.get(f"/requests/{bid}:2").json().get("label") is not None, timeout=25)
        seen["row"] = c.get(f"/requests/{bid}:2").json()
    return {"one": one, "batch": batch, "seen": seen, "store": ArtifactStore(str(serving_home / "artifacts"))}


def test_a_logged_prediction_is_explained_by_its_version(
    champion: dict[str, Any], served_log: dict[str, Any]
) -> None:
    one, store = served_log["one"], served_log["store"]
    search = audit.find_prediction(store, "flight-delay", one["request_id"])
    logged = search.found
    assert logged is not None and logged.version == one["model_version"] and search.parts >= 1
    sent = record_from(champion["test"], 3)
    assert logged.inputs.keys() == sent.keys()
    for name, value in sent.items():  # served as float32: numbers equal to that precision
        assert logged.inputs[name] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value)
    record = audit.audit_record(logged, prepare(load_model("flight-delay", logged.version), 1))
    p = record["logged_prediction"]
    assert p == pytest.approx(one["prediction"], rel=1e-6) and record["prediction_matches"]
    margin = sum(record["contributions"].values()) + record["base_value"]
    assert margin == pytest.approx(math.log(p / (1 - p)), abs=1e-4)  # TreeSHAP: they sum to the logit
    assert len(record["top"]) == 5 and record["label"] is None


def test_an_unknown_id_is_not_found_and_the_search_is_bounded(served_log: dict[str, Any]) -> None:
    store = served_log["store"]
    issued = served_log["one"]["request_id"]
    # the form of an issued id, another nonce: looked for in the days around its time only, not found
    other = "-".join([*issued.split("-")[:2], "0" * 16, "0" * 24])
    search = audit.find_prediction(store, "flight-delay", other)
    assert search.found is None and search.days <= 3 and not search.unreadable
    assert audit.find_prediction(store, "flight-delay", issued, versions=["999"]).found is None
    assert audit.find_prediction(store, "no-such-model", issued).found is None
    assert audit.find_prediction(store, "flight-delay", "x" * 1000).found is None


def test_explain_request_prints_version_prediction_contributions_and_label(
    served_log: dict[str, Any],
) -> None:
    bid = served_log["batch"]["request_id"]
    version = served_log["batch"]["model_version"]
    runner = CliRunner()
    ok = runner.invoke(cli, ["explain-request", f"{bid}:2", "--model", "flight-delay"])
    assert ok.exit_code == 0, ok.output
    assert f"flight-delay v{version}" in ok.stdout and "equals the logged one" in ok.stdout
    assert "label       1.0" in ok.stdout and "top contributions" in ok.stdout
    unknown = runner.invoke(cli, ["explain-request", _forged(bid), "--model", "flight-delay"])
    assert unknown.exit_code == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert (
        "not in the prediction log of flight-delay" in unknown.stderr and "batch of 5 rows" in unknown.stderr
    )
    bad_day = runner.invoke(cli, ["explain-request", bid, "--model", "flight-delay", "--since", "May"])
    assert bad_day.exit_code == 1 and "is not a day" in bad_day.stderr


def test_the_service_answers_its_own_ids_only(served_log: dict[str, Any]) -> None:
    seen, batch = served_log["seen"], served_log["batch"]
    early = seen["early"]
    assert early.status_code == 404 and "not written yet, retry in" in early.json()["detail"]
    assert int(early.headers["retry-after"]) >= 1
    for refused in ("forged", "garbage"):
        assert seen[refused].status_code == 404
        assert "not a request id this service issued" in seen[refused].json()["detail"]
    assert (
        seen["whole_batch"].status_code == 404 and "batch of 5 rows" in seen["whole_batch"].json()["detail"]
    )
    assert seen["no_such_row"].status_code == 404 and "no row '9'" in seen["no_such_row"].json()["detail"]
    documented = seen["doc"]["paths"]["/requests/{request_id}"]["get"]["responses"]
    assert {"200", "401", "404"} <= set(documented)
    row = seen["row"]
    assert row["request_id"] == f"{batch['request_id']}:2" and row["label"] == 1.0
    assert row["model_version"] == batch["model_version"] and row["prediction_matches"]
    assert row["logged_prediction"] == pytest.approx(batch["predictions"][2]["prediction"], rel=1e-6)
    assert sum(row["contributions"].values()) + row["base_value"] == pytest.approx(
        math.log(row["prediction"] / (1 - row["prediction"])), abs=1e-4
    )
