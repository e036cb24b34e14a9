"""The service in-process (FastAPI TestClient): predictions, explanations, errors, metrics, auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.request_ids import RequestIds
from serving.settings import ServiceSettings
from steps.model.xgb import predict
from tests.unit.serving.conftest import record_from


@pytest.fixture(scope="module")
def client(champion: dict[str, Any]) -> Iterator[TestClient]:
    settings = ServiceSettings(stack=None, model_name="flight-delay", profiling=False, watch_interval_s=3600)
    with TestClient(create_app(settings)) as c:
        yield c


def test_predict_matches_the_booster(client: TestClient, champion: dict[str, Any]) -> None:
    test = champion["test"]
    for i in range(5):
        r = client.post("/predict", json=record_from(test, i))
        assert r.status_code == 200, r.text
        body = r.json()
        expected = float(predict(champion["booster"], test.X.iloc[[i]])[0])
        assert body["prediction"] == pytest.approx(expected, rel=1e-5)
        assert body["decision"] == (expected >= 0.3)
        assert body["threshold"] == 0.3 and body["model_version"] == champion["version"]
        assert app_ids(client).check(body["request_id"]).rows == 1  # type: ignore[union-attr]


def test_batch_keeps_order(client: TestClient, champion: dict[str, Any]) -> None:
    test = champion["test"]
    records = [record_from(test, i) for i in range(20)]
    r = client.post("/predict/batch", json={"records": records}, headers={"x-request-id": "batch-1"})
    assert r.status_code == 200, r.text
    got = [p["prediction"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, predict(champion["booster"], test.X.iloc[:20]), rtol=1e-5)
    # the service issues its own signed ids: a client's X-Request-ID never becomes a feedback key
    assert r.json()["request_id"] != "batch-1"
    assert app_ids(client).check(r.json()["request_id"]).rows == 20  # type: ignore[union-attr]


def test_batch_of_whole_numbers_and_left_out_nulls(client: TestClient, champion: dict[str, Any]) -> None:
    """What a client may send besides the canonical form: integers for numbers, nulls left out."""
    test = champion["test"]
    records = []
    for i in range(40):
        record = record_from(test, i)
        if i % 2:
            record = {k: v for k, v in record.items() if v is not None}
        if i % 3:
            record = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in record.items()}
        records.append(record)
    r = client.post("/predict/batch", json={"records": records})
    assert r.status_code == 200, r.text
    got = [p["prediction"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, predict(champion["booster"], test.X.iloc[:40]), rtol=1e-5)
    assert [p["decision"] for p in r.json()["predictions"]] == [p >= 0.3 for p in got]


def test_batch_names_each_offending_record_and_field(client: TestClient, champion: dict[str, Any]) -> None:
    records = [record_from(champion["test"], i) for i in range(30)]
    records[3]["dest"] = "XXX"
    records[17]["distance"] = True
    del records[20]["carrier"]
    records[25]["colour"] = "red"
    records[26]["hour"] = None
    records[29]["pressure"] = 1e39
    r = client.post("/predict/batch", json={"records": records})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert {e["field"] for e in detail} == {
        "records.3.dest",
        "records.17.distance",
        "records.20.carrier",
        "records.25.colour",
        "records.26.hour",
        "records.29.pressure",
    }
    assert all(e["loc"][:2] == ["body", "records"] and e["msg"] for e in detail)


def columns_from(test: Any, rows: int) -> dict[str, list[Any]]:
    records = [record_from(test, i) for i in range(rows)]
    return {name: [r[name] for r in records] for name in records[0]}


def test_columns_match_the_booster(client: TestClient, champion: dict[str, Any]) -> None:
    test = champion["test"]
    r = client.post(
        "/predict/columns", json={"columns": columns_from(test, 50)}, headers={"x-request-id": "c-1"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(
        [p["prediction"] for p in body["predictions"]],
        predict(champion["booster"], test.X.iloc[:50]),
        rtol=1e-5,
    )
    assert body["request_id"] != "c-1" and body["threshold"] == 0.3
    records = client.post("/predict/batch", json={"records": [record_from(test, i) for i in range(50)]})
    assert records.json()["predictions"] == body["predictions"]


def test_columns_name_each_offending_value_and_field(client: TestClient, champion: dict[str, Any]) -> None:
    columns = columns_from(champion["test"], 30)
    columns["dest"][3] = "XXX"
    columns["distance"][17] = True
    columns["colour"] = ["red"] * 30
    r = client.post("/predict/columns", json={"columns": columns})
    assert r.status_code == 422, r.text
    assert {e["field"] for e in r.json()["detail"]} == {
        "columns.dest.3",
        "columns.distance.17",
        "columns.colour",
    }
    short = columns_from(champion["test"], 30) | {"hour": [1.0] * 29}
    r = client.post("/predict/columns", json={"columns": short})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "columns"
    assert "hour 29" in r.json()["detail"][0]["msg"]
    missing = {k: v for k, v in columns_from(champion["test"], 3).items() if k != "carrier"}
    r = client.post("/predict/columns", json={"columns": missing})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "columns.carrier"
    too_many = columns_from(champion["test"], 1)
    r = client.post("/predict/columns", json={"columns": {k: v * 1001 for k, v in too_many.items()}})
    assert r.status_code == 422


def test_explain_contributions_add_up(client: TestClient, champion: dict[str, Any]) -> None:
    record = record_from(champion["test"], 3)
    r = client.post("/explain?top_k=3", json=record)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["top"]) == 3
    margin = body["base_value"] + sum(body["contributions"].values())
    assert 1 / (1 + np.exp(-margin)) == pytest.approx(body["prediction"], rel=1e-4)


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        (lambda r: r.pop("carrier"), 422, "carrier"),  # missing
        (lambda r: r.update(colour="red"), 422, "colour"),  # extra
        (lambda r: r.update(distance="far"), 422, "distance"),  # mistyped
        (lambda r: r.update(distance=True), 422, "distance"),  # a bool is not a number
        (lambda r: r.update(carrier=7), 422, "carrier"),  # a number is not a category
        (lambda r: r.update(dest="XXX"), 422, "dest"),  # out of vocabulary
        (lambda r: r.update(hour=None), 422, "hour"),  # null where training never had one
    ],
    ids=["missing", "extra", "mistyped", "bool", "category-number", "out-of-vocabulary", "null"],
)
def test_bad_records_get_422_naming_the_field(
    client: TestClient, champion: dict[str, Any], change: Any, status: int, field: str
) -> None:
    record = record_from(champion["test"], 0)
    change(record)
    r = client.post("/predict", json=record)
    assert r.status_code == status, r.text
    assert field in {e["field"] for e in r.json()["detail"]}


def test_null_allowed_where_training_had_missing_values(client: TestClient, champion: dict[str, Any]) -> None:
    record = record_from(champion["test"], 0) | {"wind_gust": None}
    assert client.post("/predict", json=record).status_code == 200


def test_malformed_json_oversized_and_empty_batch(client: TestClient, champion: dict[str, Any]) -> None:
    json = {"content-type": "application/json"}
    assert client.post("/predict", content=b"{not json", headers=json).status_code == 400
    assert client.post("/predict", content=b"[]", headers=json).status_code == 422
    assert client.post("/predict", content=b"NaN", headers=json).status_code == 400
    big = b'{"x": "' + b"a" * 3_000_000 + b'"}'
    assert client.post("/predict", content=big, headers=json).status_code == 413
    assert client.post("/predict/batch", json={"records": []}).status_code == 422
    too_many = {"records": [record_from(champion["test"], 0)] * 1001}
    r = client.post("/predict/batch", json=too_many)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "records"


def test_health_ready_model_and_metrics(client: TestClient, champion: dict[str, Any]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["model_version"] == champion["version"]
    info = client.get("/model").json()
    assert info["version"] == champion["version"] and info["dataset_digest"] == "d" * 32
    assert "roc_auc" in info["metrics"] and info["run_id"]
    assert info["model_card"] is None  # a version registered without a card (the flow's is in its test)
    client.post("/predict", json=record_from(champion["test"], 0))
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {
        "flywheel_requests",
        "flywheel_request_latency_seconds",
        "flywheel_prediction_value",
        "flywheel_model_version",
        "flywheel_profile_queue_depth",
    } <= set(families)
    versions = [s.labels["version"] for s in families["flywheel_model_version"].samples]
    assert versions == [champion["version"]]


def test_feedback_accepted(client: TestClient, champion: dict[str, Any]) -> None:
    rid = client.post("/predict", json=record_from(champion["test"], 0)).json()["request_id"]
    assert client.post("/feedback", json={"request_id": rid}).status_code == 422
    assert client.post("/feedback", json={"request_id": rid, "label": "yes"}).status_code == 422
    ok = client.post("/feedback", json={"request_id": rid, "label": 1})
    assert ok.status_code == 202 and ok.json() == {"accepted": 1, "request_id": rid}


def test_openapi_declares_the_generated_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    record = doc["components"]["schemas"]["Record"]
    assert record["additionalProperties"] is False
    assert "carrier" in record["required"] and "enum" in str(record["properties"]["carrier"])
    columns = doc["components"]["schemas"]["Columns"]
    assert columns["additionalProperties"] is False and "carrier" in columns["required"]
    assert "wind_gust" not in columns["required"] and "enum" in str(columns["properties"]["carrier"])
    body = doc["paths"]["/predict/columns"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ColumnBatch"}


def test_auth_on(champion: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import yaml

    from stacks.loader import STACKS_DIR

    stack = yaml.safe_load((STACKS_DIR / "local.yaml").read_text())
    stack["stack_name"] = "local-auth"
    stack["components"]["model_deployer"]["configuration"]["auth_token"] = "${FLYWHEEL_TEST_TOKEN}"
    path = tmp_path / "local-auth.yaml"
    path.write_text(yaml.safe_dump(stack))
    monkeypatch.setenv("FLYWHEEL_TEST_TOKEN", "s3cret-token")
    settings = ServiceSettings(
        stack=str(path), model_name="flight-delay", profiling=False, watch_interval_s=3600
    )
    record = record_from(champion["test"], 0)
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict", json=record).status_code == 401
        assert c.post("/predict", json=record, headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = c.post("/predict", json=record, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200  # probes stay open
        assert c.get("/model").status_code == 401


def test_number_beyond_float32_is_rejected(client: TestClient, champion: dict[str, Any]) -> None:
    """Found by schemathesis: 1e300 became inf in the float32 matrix and XGBoost raised (a 500)."""
    r = client.post("/predict", json=record_from(champion["test"], 0) | {"distance": 1e300})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "distance"


def test_prediction_endpoints_skip_routing_but_not_the_rest(
    client: TestClient, champion: dict[str, Any]
) -> None:
    """The hot path (serving.hotpath) serves POST on the prediction paths only: other methods and paths are
    FastAPI's, and the request counter sees hot-path requests like any other."""
    assert client.get("/predict").status_code == 405
    slash = client.post("/predict/", json=record_from(champion["test"], 0), follow_redirects=False)
    assert slash.status_code == 307  # FastAPI's redirect to /predict, as before the hot path
    before = _counter(client, "flywheel_requests_total", endpoint="predict", status="200")
    assert client.post("/predict", json=record_from(champion["test"], 0)).status_code == 200
    assert _counter(client, "flywheel_requests_total", endpoint="predict", status="200") == before + 1


def test_an_unexpected_failure_on_the_hot_path_is_a_500(
    champion: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path sits inside Starlette's error middleware: a bug is a logged 500, not a dropped
    connection."""
    settings = ServiceSettings(stack=None, model_name="flight-delay", profiling=False, watch_interval_s=3600)
    app = create_app(settings)
    served = app.state.ctx.holder.current

    def broken(matrix: Any) -> Any:
        raise RuntimeError("booster exploded")

    monkeypatch.setattr(served, "predict", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/predict", json=record_from(champion["test"], 0))
        assert r.status_code == 500
        assert c.get("/health").status_code == 200


def _counter(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def app_ids(client: TestClient) -> RequestIds:
    """The app's own request-id signer, to check what it issued."""
    return client.app.state.ctx.ids  # type: ignore[attr-defined,no-any-return]
