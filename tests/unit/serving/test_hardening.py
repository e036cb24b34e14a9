"""What a hostile or careless client can send, in process: content types, poisoned feedback, error
amplification, inputs echoed back, and the OpenAPI document against what the service does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.errors import MAX_ERRORS
from serving.request_ids import LabelledIds, RequestIds
from serving.settings import ServiceSettings
from tests.unit.serving.conftest import record_from


@pytest.fixture(scope="module")
def client(champion: dict[str, Any]) -> Iterator[TestClient]:
    settings = ServiceSettings(stack=None, model_name="flight-delay", profiling=False, watch_interval_s=3600)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def record(champion: dict[str, Any]) -> dict[str, Any]:
    return record_from(champion["test"], 0)


def _predicted(client: TestClient, record: dict[str, Any], rows: int = 1) -> str:
    if rows == 1:
        r = client.post("/predict", json=record)
    else:
        r = client.post("/predict/batch", json={"records": [record] * rows})
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


# ------------------------------------------------------------------ content type


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"],
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/predict/columns", "/explain", "/feedback"])
def test_only_json_bodies_are_read(
    client: TestClient, record: dict[str, Any], path: str, content_type: str | None
) -> None:
    """A browser page may post a form or text/plain to another site without a preflight: such a body must
    never be read (415), even when it holds valid JSON."""
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=orjson.dumps(record), headers=headers)
    assert r.status_code == 415, (path, content_type, r.text)
    assert "application/json" in r.json()["detail"]


def test_json_with_a_charset_or_suffix_is_read(client: TestClient, record: dict[str, Any]) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/merge+json"):
        r = client.post("/predict", content=orjson.dumps(record), headers={"content-type": content_type})
        assert r.status_code == 200, (content_type, r.text)


# ------------------------------------------------------------------ feedback cannot poison monitoring


@pytest.mark.parametrize(
    "body",
    [
        {"label": 2},
        {"label": -1},
        {"label": 0.5},
        {"label": 1e308},
        {"label": True},
        {"label": "1"},
        {"label": None},
        {"labels": ["nan"]},
        {"labels": ["inf"]},
        {"labels": [True]},
        {"labels": []},
        {"label": 1, "labels": [1]},
        {},
        {"label": 1, "extra": 1},
    ],
)
def test_labels_a_binary_model_cannot_have_are_rejected(
    client: TestClient, record: dict[str, Any], body: dict[str, Any]
) -> None:
    rid = _predicted(client, record)
    r = client.post("/feedback", json={"request_id": rid, **body})
    assert r.status_code == 422, (body, r.text)
    assert r.json()["detail"][0]["msg"]
    # and nothing was taken: the id can still be labelled once, properly
    assert client.post("/feedback", json={"request_id": rid, "label": 0}).status_code == 202


def test_feedback_only_for_ids_this_service_issued(client: TestClient, record: dict[str, Any]) -> None:
    rid = _predicted(client, record)
    forged = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    for unknown in ("x", "abc", forged, "0-1-00-" + "0" * 24, rid + "x"):
        r = client.post("/feedback", json={"request_id": unknown, "label": 1})
        assert r.status_code == 404, (unknown, r.text)
        assert "not a request id this service issued" in r.json()["detail"]


def test_a_repeat_is_a_conflict(client: TestClient, record: dict[str, Any]) -> None:
    rid = _predicted(client, record)
    assert client.post("/feedback", json={"request_id": rid, "label": 1}).status_code == 202
    again = client.post("/feedback", json={"request_id": rid, "label": 0})
    assert again.status_code == 409 and rid in again.json()["detail"]
    # the only row of a one-row request is the request: the same label key, refused alike
    as_row = client.post("/feedback", json={"request_id": f"{rid}:0", "label": 0})
    assert as_row.status_code == 409, as_row.text
    other = _predicted(client, record)
    first = client.post("/feedback", json={"request_id": f"{other}:0", "label": 1})
    assert first.status_code == 202 and first.json()["request_id"] == other  # as the prediction log has it
    assert client.post("/feedback", json={"request_id": other, "label": 1}).status_code == 409


def test_batch_feedback_needs_one_label_per_row(client: TestClient, record: dict[str, Any]) -> None:
    rid = _predicted(client, record, rows=5)
    assert client.post("/feedback", json={"request_id": rid, "label": 1}).status_code == 422
    assert client.post("/feedback", json={"request_id": rid, "labels": [1, 0]}).status_code == 422
    assert client.post("/feedback", json={"request_id": f"{rid}:5", "label": 1}).status_code == 422
    assert client.post("/feedback", json={"request_id": f"{rid}:-1", "label": 1}).status_code == 422
    one_row = client.post("/feedback", json={"request_id": f"{rid}:3", "label": 1})
    assert one_row.status_code == 202 and one_row.json()["request_id"] == f"{rid}:3"
    # the whole batch now overlaps the labelled row: refused, row 3 named
    whole = client.post("/feedback", json={"request_id": rid, "labels": [1, 0, 1, 0, 1]})
    assert whole.status_code == 409 and f"{rid}:3" in whole.json()["detail"]
    other = _predicted(client, record, rows=5)
    ok = client.post("/feedback", json={"request_id": other, "labels": [1, 0, 1, 0, 1]})
    assert ok.status_code == 202 and ok.json()["accepted"] == 5


def test_request_ids_expire_and_cannot_be_altered() -> None:
    ids = RequestIds(b"k" * 32, max_age_s=60)
    rid = ids.issue(3)
    checked = ids.check(rid)
    assert not isinstance(checked, str) and checked.rows == 3
    assert "feedback window" in str(ids.check(rid, now=time.time() + 120))
    parts = rid.split("-")
    more_rows = "-".join([parts[0], "ff", *parts[2:]])
    assert ids.check(more_rows) == "not a request id this service issued"
    assert RequestIds(b"o" * 32, max_age_s=60).check(rid) == "not a request id this service issued"
    other_model = RequestIds(b"k" * 32, max_age_s=60, model="another-model")  # the same key, another model
    assert other_model.check(rid) == "not a request id this service issued"


def test_ids_signed_before_blake2b_still_accepted() -> None:
    """Ids issued with the earlier HMAC-SHA256 MAC stay valid for feedback within their window."""
    import hashlib
    import hmac

    ids = RequestIds(b"k" * 32, max_age_s=60, model="m")
    # what the earlier service did: the per-model key, HMAC-SHA256 of the body cut to 24 hex
    key = hmac.digest(b"k" * 32, b"flywheel request ids for model m", hashlib.sha256)
    body = f"{int(time.time()):x}-2-{'ab' * 8}"
    legacy = f"{body}-{hmac.digest(key, body.encode(), hashlib.sha256).hex()[:24]}"
    checked = ids.check(legacy)
    assert not isinstance(checked, str) and checked.rows == 2
    assert ids.issue(2).rsplit("-", 1)[1] != legacy.rsplit("-", 1)[1]
    forged = f"{body.replace('-2-', '-3-')}-{legacy.rsplit('-', 1)[1]}"
    assert ids.check(forged) == "not a request id this service issued"
    assert (
        RequestIds(b"k" * 32, max_age_s=60, model="n").check(legacy) == "not a request id this service issued"
    )


def test_labelled_ids_are_bounded() -> None:
    seen = LabelledIds(capacity=3)
    assert seen.claim(["a", "b"]) == [] and seen.claim(["a"]) == ["a"]
    assert seen.claim(["c", "d"]) == []
    assert seen.claim(["a"]) == []  # forgotten past capacity (monitoring deduplicates it)


# ------------------------------------------------------------------ amplification and echo


def test_many_empty_records_get_a_small_422(client: TestClient) -> None:
    """1,000 empty records once made an 18,000-error, 1.36 MB response."""
    r = client.post("/predict/batch", json={"records": [{}] * 1000})
    assert r.status_code == 422
    body = r.json()
    assert len(body["detail"]) == MAX_ERRORS and len(r.content) < 10_000
    assert body["error_count"] >= MAX_ERRORS and body["error_count_is_lower_bound"] is True
    assert body["detail"][0]["field"].startswith("records.0.")


def test_one_bad_record_among_many_is_named_with_an_exact_count(
    client: TestClient, record: dict[str, Any]
) -> None:
    records = [record] * 999 + [{**record, "dest": "XXX"}]
    body = client.post("/predict/batch", json={"records": records}).json()
    assert [e["field"] for e in body["detail"]] == ["records.999.dest"]
    assert "error_count" not in body


def test_large_inputs_are_not_echoed(client: TestClient, record: dict[str, Any]) -> None:
    huge = "A" * 1_900_000
    for path, body in (
        ("/predict", {**record, "dest": huge}),
        ("/predict/batch", {"records": [{**record, "carrier": huge}]}),
        ("/predict/columns", {"columns": {**{k: [v] for k, v in record.items()}, "origin": [huge]}}),
        ("/feedback", {"request_id": _predicted(client, record), "label": huge}),
    ):
        r = client.post(path, json=body)
        # one record cannot be that large: refused before it is read (the others: a short 422)
        assert r.status_code == (413 if path == "/predict" else 422), (path, r.text[:300])
        assert len(r.content) < 5_000, (path, len(r.content))


def test_columns_full_of_errors_get_a_small_422(client: TestClient, record: dict[str, Any]) -> None:
    columns = {name: ["wrong"] * 1000 for name in record}
    r = client.post("/predict/columns", json={"columns": columns})
    assert r.status_code == 422
    assert len(r.json()["detail"]) <= MAX_ERRORS and len(r.content) < 10_000


def test_ragged_columns_are_rejected_with_the_lengths(client: TestClient, record: dict[str, Any]) -> None:
    columns = {name: [value] * 3 for name, value in record.items()}
    columns["distance"] = columns["distance"][:2]
    r = client.post("/predict/columns", json={"columns": columns})
    assert r.status_code == 422 and "distance 2" in r.json()["detail"][0]["msg"]


def test_wrong_shapes_are_rejected_before_any_record_is_checked(client: TestClient) -> None:
    for body, field in (
        ([1, 2], "(body)"),
        ({"records": {}}, "records"),
        ({"records": []}, "records"),
        ({"rows": []}, "rows"),
        ({"records": [{}] * 1001}, "records"),
    ):
        r = client.post("/predict/batch", json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, (body, r.text)


# ------------------------------------------------------------------ the document says what the service does


def test_openapi_matches_the_service(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    schemas = doc["components"]["schemas"]
    assert schemas["Feedback"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/FeedbackOne"},
            {"$ref": "#/components/schemas/FeedbackMany"},
        ]
    }
    assert schemas["FeedbackOne"]["properties"]["label"]["enum"] == [0, 1]
    assert schemas["FeedbackOne"]["additionalProperties"] is False
    feedback = doc["paths"]["/feedback"]["post"]["responses"]
    assert {"404", "409", "415", "422"} <= set(feedback)
    assert "415" in doc["paths"]["/predict"]["post"]["responses"]


def test_processes_sharing_an_artifact_store_share_the_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers and replicas read one artifact store: an id one issued is accepted by another."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.request_ids import KEY_ENV, load_key
    from stacks.components.artifact_store import ArtifactStore

    monkeypatch.delenv(KEY_ENV, raising=False)
    with ThreadPoolExecutor(8) as pool:  # starting together: one creates the key, the others read it
        keys = set(pool.map(lambda _: load_key(ArtifactStore(str(tmp_path))), range(8)))
    assert len(keys) == 1 and len(keys.pop()) == 64
    issued = RequestIds(load_key(ArtifactStore(str(tmp_path))), 60).issue(1)
    assert not isinstance(RequestIds(load_key(ArtifactStore(str(tmp_path))), 60).check(issued), str)
    monkeypatch.setenv(KEY_ENV, "x" * 32)
    assert load_key(ArtifactStore(str(tmp_path))) == b"x" * 32


def test_unknown_keys_by_the_hundred_thousand_cost_what_the_model_has(
    client: TestClient, record: dict[str, Any]
) -> None:
    """100,000 unknown keys (1.7 MB) once built 100,000 errors per 422 (112 ms): now the first 20, counted;
    where one record is asked for, such a body is refused unread (413: no valid record is that large)."""
    junk = {f"k{i}": 0 for i in range(100_000)}
    for path in ("/predict", "/explain"):
        r = client.post(path, json={**record, **junk})
        assert r.status_code == 413 and "no valid record of this model is that large" in r.text, r.text
        assert r.headers["connection"] == "close"  # the rest of the body is never read
    few = {f"k{i}": 0 for i in range(200)}  # under the bound: checked, and the 422 capped and counted
    r = client.post("/predict", json={**record, **few})
    assert r.status_code == 422 and len(r.json()["detail"]) <= MAX_ERRORS, r.text[:200]
    assert r.json()["error_count"] == 200 and r.json()["detail"][0]["field"].endswith("k0")
    for path, body in (
        ("/predict/batch", {"records": [junk]}),
        ("/predict/batch", {"records": [record], **junk}),
        ("/predict/columns", {"columns": junk}),
        ("/feedback", {"request_id": _predicted(client, record), "label": 1, **junk}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, r.text[:200])
        payload = r.json()
        assert len(payload["detail"]) <= MAX_ERRORS and len(r.content) < 10_000, path
        assert payload["detail"][0]["field"].endswith("k0") or path == "/predict/batch", payload["detail"][0]
        assert payload.get("error_count", 0) >= 100_000 or "records" in str(payload["detail"][0]), path


def test_a_column_longer_than_a_batch_is_refused_by_its_length(
    client: TestClient, record: dict[str, Any]
) -> None:
    columns = {name: [value] for name, value in record.items()}
    columns["distance"] = ["x"] * 200_000
    r = client.post("/predict/columns", json={"columns": columns})
    assert r.status_code == 422 and len(r.json()["detail"]) == 1
    assert r.json()["detail"][0]["field"] == "columns.distance"
