"""Labelled traffic for the feedback tests: October flights (after the flights spec's training cutoff) sent
to the real service in process, with profiling on, and every outcome posted back through ``/feedback``.

Shared by the tests of training on feedback and of reproducing what was trained on it: both need what a
client would have sent and answered, written by the service itself into the prediction log and label files.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from flywheel.contracts.problem import load_spec
from serving.app import create_app
from serving.settings import ServiceSettings
from steps.data.features import EVENT_TIME, build_dataset
from steps.data.sources import read_source

SPEC = load_spec("flights")


def october_records(n: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The first ``n`` labelled October flights as a client sends them, and their true outcomes."""
    flights = read_source(SPEC.source)
    weather = read_source(SPEC.joins[0].source)
    start = SPEC.training_data.cutoff(SPEC.time.timezone if SPEC.time else None)
    dataset = build_dataset(flights[flights["month"] == 10], SPEC, {"weather": weather})
    frame = dataset.frame[dataset.frame[EVENT_TIME] >= start].sort_values(EVENT_TIME).head(n)
    records = []
    for _, row in frame[dataset.schema.names].iterrows():
        records.append(
            {str(k): (None if pd.isna(v) else v if isinstance(v, str) else float(v)) for k, v in row.items()}
        )
    return records, frame[SPEC.label].astype(int).tolist()


def serve_with_feedback(n: int, batch: int = 500) -> dict[str, Any]:
    """``n`` October flights through the champion's service in batches, each batch's outcomes posted back;
    leaving the client stops the app, so the profiler has written its prediction log and the labels."""
    records, labels = october_records(n)
    settings = ServiceSettings(
        stack=None, model_name=SPEC.model_name, profiling=True, watch_interval_s=3600, profile_window_s=2
    )
    ids = []
    with TestClient(create_app(settings)) as client:
        for start in range(0, len(records), batch):
            answer = client.post("/predict/batch", json={"records": records[start : start + batch]})
            assert answer.status_code == 200, answer.text
            rid = answer.json()["request_id"]
            ids.append(rid)
            sent = client.post("/feedback", json={"request_id": rid, "labels": labels[start : start + batch]})
            assert sent.status_code == 202, sent.text
    return {"ids": ids, "labels": labels}
