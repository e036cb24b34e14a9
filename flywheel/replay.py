"""Replay real flights to the service: later months' traffic, and their true outcomes after a delay.

Drift and decay then happen on real data (November's weather, December's holidays), not synthetic noise.
Requests are paced at ``rate`` per second and bounded by ``limit`` rows and ``duration`` seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class ReplayResult:
    sent: int = 0
    failed: int = 0  # the service failed: a 5xx or no answer
    rejected: int = 0  # the service said no, correctly: e.g. an airport the model never saw (422)
    feedback_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def month_range(start: str, end: str) -> list[int]:
    """``2013-10``..``2013-12`` to month numbers (the data set is one year)."""
    first, last = int(start.split("-")[1]), int(end.split("-")[1])
    if not 1 <= first <= last <= 12:
        raise ValueError(f"months must run forwards within 2013: {start}..{end}")
    return list(range(first, last + 1))


def build_records(
    frame: pd.DataFrame, features: list[dict[str, Any]], problem: str
) -> tuple[list[dict[str, Any]], list[float | None]]:
    """Request bodies in the service's schema, and the true label of each (None if unknown)."""
    from steps.data import features as feature_steps
    from steps.data.sources import read_source
    from steps.problem import load_spec

    spec = load_spec(problem)
    joined = {j.name: read_source(j.source) for j in spec.joins}
    derived = feature_steps.derive(frame.reset_index(drop=True), spec, joined)
    names = [f["name"] for f in features]
    records: list[dict[str, Any]] = []
    for row in derived[names].itertuples(index=False):
        record: dict[str, Any] = {}
        for f, value in zip(features, row, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
                record[f["name"]] = None
            elif f["kind"] == "categorical":
                record[f["name"]] = str(value)
            else:
                record[f["name"]] = float(value)
        records.append(record)
    labels: list[float | None] = (
        [None if pd.isna(v) else float(v) for v in derived[spec.label]]
        if spec.label in derived
        else [None] * len(records)
    )
    return records, labels


def replay(
    url: str,
    months: list[int],
    *,
    rate: float,
    limit: int,
    duration: float,
    feedback_delay: float,
    problem: str = "flights",
    token: str | None = None,
    seed: int = 0,
) -> ReplayResult:
    import requests

    from steps.data.sources import read_source
    from steps.problem import load_spec

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    session = requests.Session()
    info = session.get(f"{url}/model", headers=headers, timeout=10).json()
    spec = load_spec(problem)
    flights = read_source(spec.source)
    pool = flights[flights["month"].isin(months)]
    # a random sample in random order: each window then shows those months' traffic, not a few hours of it
    pool = pool.sample(n=min(limit, len(pool)), random_state=seed)
    records, labels = build_records(pool, info["features"], problem)
    result = ReplayResult()
    pending: deque[tuple[float, str, float]] = deque()
    done = threading.Event()
    lock = threading.Lock()

    def send_feedback() -> None:
        fb = requests.Session()
        while not (done.is_set() and not pending):
            with lock:
                due = pending[0] if pending and pending[0][0] <= time.monotonic() else None
                if due is not None:
                    pending.popleft()
            if due is None:
                time.sleep(0.05)
                continue
            try:
                r = fb.post(
                    f"{url}/feedback",
                    json={"request_id": due[1], "label": due[2]},
                    headers=headers,
                    timeout=10,
                )
                if r.status_code == 202:
                    with lock:
                        result.feedback_sent += 1
            except requests.RequestException:
                pass

    worker = threading.Thread(target=send_feedback, daemon=True)
    worker.start()
    started = time.monotonic()
    for i, (record, label) in enumerate(zip(records, labels, strict=True)):
        if time.monotonic() - started > duration:
            break
        target = started + i / rate
        pause = target - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            r = session.post(f"{url}/predict", json=record, headers=headers, timeout=10)
            result.statuses[r.status_code] += 1
            if r.status_code == 200:
                body = r.json()
                result.versions[body["model_version"]] += 1
                if label is not None:
                    with lock:
                        pending.append((time.monotonic() + feedback_delay, body["request_id"], label))
            elif r.status_code < 500:
                result.rejected += 1
            else:
                result.failed += 1
        except requests.RequestException:
            result.failed += 1
            result.statuses[0] += 1
        result.sent += 1
    done.set()
    worker.join(timeout=feedback_delay + 30)
    result.seconds = time.monotonic() - started
    return result
