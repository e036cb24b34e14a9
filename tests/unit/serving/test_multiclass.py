"""A multiclass champion served: class probabilities and the predicted class, per-class explanations,
feedback by class name, and the predicted class in the traffic log and profiles (what monitoring drifts
on)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServiceSettings
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from tests.unit.serving.conftest import local_home

pytestmark = pytest.mark.slow
MODEL = "iris-like"


def _frame(n: int = 1_500) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    size = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    score = size + (colour == "red") * 1.2 + rng.normal(scale=0.3, size=n)
    kind = np.select([score < -0.3, score < 0.9], ["small", "medium"], "large")
    return pd.DataFrame({"size": size, "colour": colour, "noise": rng.normal(size=n), "kind": kind})


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from flywheel.contracts.problem import ProblemSpec
    from steps.data.features import build_dataset
    from steps.data.split import split
    from steps.model import promote, reference, register, track, train
    from steps.model.xgb import base_params, predict

    home = tmp_path_factory.mktemp("multiclass-home")
    with local_home(home):
        spec = ProblemSpec.model_validate(
            {
                "name": "iris-like",
                "model_name": MODEL,
                "source": "x.csv",
                "task": "multiclass",
                "target": {"column": "kind"},
            }
        )
        dataset = build_dataset(_frame(), spec, {})
        parts = split(dataset, spec)
        params = {**base_params(spec, n_jobs=2, num_class=3), "max_depth": 3}
        booster = train.train(parts.train, params, 30)
        run_id = track.start_run("flywheel", spec, {})
        profile = reference.training_profile(booster, parts.train, WhylogsValidator(), parts.test)
        registered = register.register(
            booster,
            run_id=run_id,
            model_name=MODEL,
            schema=dataset.schema,
            example=register.input_example(parts.test.frame, dataset.schema),
            training_profile=profile,
            lineage={},
            threshold=0.5,
        )
        reference.store_reference(ArtifactStore(str(home / "artifacts")), MODEL, registered.version, profile)
        promote.promote(spec, registered.version, predict(booster, parts.test.X), parts.test)
        track.finish_run(run_id, {}, 0.0, "FINISHED")
        yield {"home": home, "test": parts.test, "booster": booster, "classes": dataset.schema.classes}


@pytest.fixture(scope="module")
def client(champion: dict[str, Any]) -> Iterator[TestClient]:
    settings = ServiceSettings(
        stack=None, model_name=MODEL, profiling=True, watch_interval_s=3600, profile_window_s=2
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(champion["home"]))
        with TestClient(create_app(settings)) as c:
            yield c


def _record(test: Any, i: int) -> dict[str, Any]:
    row = test.X.iloc[i]
    return {"size": float(row["size"]), "colour": str(row["colour"]), "noise": float(row["noise"])}


def test_predict_returns_every_class_probability(client: TestClient, champion: dict[str, Any]) -> None:
    from steps.model.xgb import predict

    test, classes = champion["test"], champion["classes"]
    assert classes == ["large", "medium", "small"]
    assert client.get("/model").json()["classes"] == classes
    expected = predict(champion["booster"], test.X.iloc[:20])
    for i in range(20):
        body = client.post("/predict", json=_record(test, i)).json()
        assert list(body["probabilities"]) == classes
        np.testing.assert_allclose(list(body["probabilities"].values()), expected[i], rtol=1e-5)
        assert body["predicted_class"] == classes[int(expected[i].argmax())]
        assert body["prediction"] == pytest.approx(expected[i].max(), rel=1e-5)
        assert body["decision"] is None and body["threshold"] is None
    batch = client.post("/predict/batch", json={"records": [_record(test, i) for i in range(20)]}).json()
    assert [p["predicted_class"] for p in batch["predictions"]] == [classes[k] for k in expected.argmax(1)]
    columns = {k: [_record(test, i)[k] for i in range(20)] for k in ("size", "colour", "noise")}
    by_columns = client.post("/predict/columns", json={"columns": columns}).json()
    assert by_columns["predictions"] == batch["predictions"]


def test_explain_gives_each_class_its_contributions(client: TestClient, champion: dict[str, Any]) -> None:
    from steps.model.xgb import predict

    test, classes = champion["test"], champion["classes"]
    body = client.post("/explain", json=_record(test, 0)).json()
    assert set(body["class_contributions"]) == set(classes)
    margins = {c: sum(v.values()) for c, v in body["class_contributions"].items()}
    softmax = np.exp(list(margins.values())) / np.exp(list(margins.values())).sum()
    np.testing.assert_allclose(softmax, predict(champion["booster"], test.X.iloc[[0]])[0], rtol=1e-4)
    assert body["predicted_class"] == max(margins, key=margins.__getitem__)
    assert body["contributions"] == {
        k: v for k, v in body["class_contributions"][body["predicted_class"]].items() if k != "bias"
    }


def test_feedback_by_class_name_or_index(client: TestClient, champion: dict[str, Any]) -> None:
    test = champion["test"]
    first = client.post("/predict", json=_record(test, 1)).json()["request_id"]
    assert client.post("/feedback", json={"request_id": first, "label": "small"}).status_code == 202
    second = client.post("/predict", json=_record(test, 2)).json()["request_id"]
    assert client.post("/feedback", json={"request_id": second, "label": 0}).status_code == 202
    third = client.post("/predict", json=_record(test, 3)).json()["request_id"]
    for bad in ("tiny", 3, -1, 1.0, True, None):
        r = client.post("/feedback", json={"request_id": third, "label": bad})
        assert r.status_code == 422, (bad, r.text)
    assert (
        "'tiny' is not a class of this model"
        in client.post("/feedback", json={"request_id": third, "label": "tiny"}).text
    )


def test_traffic_log_and_profiles_keep_the_predicted_class(champion: dict[str, Any]) -> None:
    settings = ServiceSettings(
        stack=None, model_name=MODEL, profiling=True, watch_interval_s=3600, profile_window_s=2
    )
    test = champion["test"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(champion["home"]))
        with TestClient(create_app(settings)) as c:
            version = c.get("/ready").json()["model_version"]
            sent = [c.post("/predict", json=_record(test, i)).json()["predicted_class"] for i in range(30)]
    store = ArtifactStore(str(Path(champion["home"]) / "artifacts"))
    logs = [p for p in store.list(f"serving/{MODEL}/v{version}/predictions") if p.endswith(".parquet")]
    logged = pd.concat([pd.read_parquet(store.uri(p)) for p in logs])
    assert set(logged["prediction"]) <= set(champion["classes"])
    assert sorted(logged["prediction"].tail(30)) == sorted(sent)
    profiles = [p for p in store.list(f"serving/{MODEL}/v{version}/profiles") if p.endswith(".bin")]
    merged = WhylogsValidator.merge([WhylogsValidator.from_bytes(store.read_bytes(p)) for p in profiles])
    from steps.monitor.windows import load_reference

    reference = load_reference(store, MODEL, version)
    scores = WhylogsValidator().drift_scores(reference, merged)
    assert "prediction" in scores  # the predicted class distribution is compared like any categorical


def test_a_binary_model_with_named_classes_takes_the_names_too() -> None:
    from pydantic import ValidationError

    from serving.schemas import feedback_models

    one, _ = feedback_models("binary", 10, ("good", "bad"))
    assert one.model_validate({"request_id": "r", "label": "bad"}).label == 1.0  # type: ignore[attr-defined]
    assert one.model_validate({"request_id": "r", "label": "good"}).label == 0.0  # type: ignore[attr-defined]
    assert one.model_validate({"request_id": "r", "label": 1}).label == 1.0  # type: ignore[attr-defined]
    for bad in ("meh", 2, 0.5, True, "1"):
        with pytest.raises(ValidationError):
            one.model_validate({"request_id": "r", "label": bad})
    plain, _ = feedback_models("binary", 10, ("0", "1"))  # 0/1 labels: numbers only, as before
    with pytest.raises(ValidationError):
        plain.model_validate({"request_id": "r", "label": "1"})
