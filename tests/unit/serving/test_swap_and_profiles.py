"""Hot swap (good and broken versions) and traffic profiles written per window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from serving.app import create_app
from serving.settings import ServiceSettings
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from tests.unit.serving.conftest import record_from, train_and_register, wait_for


def test_broken_version_keeps_the_old_model_then_a_good_one_swaps_in(
    champion: dict[str, Any], flights_sample: pd.DataFrame, weather: pd.DataFrame
) -> None:
    client = MlflowClient()
    settings = ServiceSettings(stack=None, model_name="flight-delay", profiling=False, watch_interval_s=0.2)
    record = record_from(champion["test"], 0)
    with TestClient(create_app(settings)) as c:
        old = c.get("/ready").json()["model_version"]
        broken = client.create_model_version(
            "flight-delay", source="file:///nonexistent/model", run_id=c.get("/model").json()["run_id"]
        )
        client.set_registered_model_alias("flight-delay", "champion", broken.version)
        assert wait_for(lambda: 'flywheel_model_loads_total{outcome="failed"}' in c.get("/metrics").text)
        assert c.get("/ready").json()["model_version"] == old  # the old model keeps serving
        assert c.post("/predict", json=record).json()["model_version"] == old
        assert f"v{broken.version}" in c.get("/model").json()["last_error"]
        client.set_registered_model_alias("flight-delay", "champion", old)

        new = train_and_register(flights_sample.sample(frac=1.0, random_state=5), weather, rounds=10)
        client.set_registered_model_alias("flight-delay", "champion", new["version"])
        assert wait_for(lambda: c.get("/ready").json()["model_version"] == new["version"])
        body = c.post("/predict", json=record).json()
        assert body["model_version"] == new["version"]
        client.set_registered_model_alias("flight-delay", "champion", old)
        assert wait_for(lambda: c.get("/ready").json()["model_version"] == old)


def test_profiles_are_written_per_window_and_readable(champion: dict[str, Any], serving_home: Path) -> None:
    settings = ServiceSettings(
        stack=None, model_name="flight-delay", profiling=True, watch_interval_s=3600, profile_window_s=2
    )
    test = champion["test"]
    with TestClient(create_app(settings)) as c:
        version = c.get("/ready").json()["model_version"]
        for i in range(30):
            assert c.post("/predict", json=record_from(test, i)).status_code == 200
        batch = c.post("/predict/batch", json={"records": [record_from(test, i) for i in range(40)]})
        rid = batch.json()["request_id"]
        assert c.post("/feedback", json={"request_id": rid, "labels": [1.0] * 40}).status_code == 202
    # leaving the client shuts the app down: the profiler flushes its open windows before exiting
    store = ArtifactStore(str(serving_home / "artifacts"))
    profiles = [p for p in store.list(f"serving/flight-delay/v{version}/profiles") if p.endswith(".bin")]
    assert profiles, store.list("serving")
    views = [WhylogsValidator.from_bytes(store.read_bytes(p)) for p in profiles]
    merged = WhylogsValidator.merge(views)
    columns = set(merged.get_columns())
    assert {"carrier", "temp", "prediction"} <= columns
    counts = merged.to_pandas()["counts/n"]
    assert int(counts["prediction"]) == 70
    predictions = [
        p for p in store.list(f"serving/flight-delay/v{version}/predictions") if p.endswith(".parquet")
    ]
    logged = pd.concat([pd.read_parquet(store.uri(p)) for p in predictions])
    assert len(logged) == 70 and f"{rid}:39" in set(logged["request_id"])
    feedback = [p for p in store.list("serving/flight-delay/feedback") if p.endswith(".parquet")]
    labels = pd.concat([pd.read_parquet(store.uri(p)) for p in feedback])
    assert len(labels) == 40 and set(labels["request_id"]) <= set(logged["request_id"])
