"""Replay real later traffic to the service: rows the model never trained on, and their true labels later.

Drift and decay then happen on real data (for flights: November's weather, December's holidays), not
synthetic noise. For any problem with a time column the rows are those after its training period (the
spec's ``split.test_fraction`` says where that ends), or those of a time window (``--from``/``--to``); a
problem without one (a seeded random split has no "later") replays a file of later rows (``--source``).
Requests are paced at ``rate`` per second and bounded by ``limit`` rows and ``duration`` seconds; labels
go to ``/feedback`` as the task's label (binary 0/1, the class index into GET /model's ``classes``, or the
number).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from flywheel.contracts.problem import ProblemSpec, TimeSpec, load_spec

__all__ = [
    "ReplayError",
    "ReplayResult",
    "build_records",
    "later_rows",
    "progress_line",
    "replay",
    "rows_between",
    "select_rows",
]


class ReplayError(ValueError):
    """Rows cannot be chosen or sent (no time column and no source, a window with no rows, the wrong
    service ...); the message says what to pass instead."""


@dataclass
class ReplayResult:
    sent: int = 0
    failed: int = 0  # the service failed: a 5xx or no answer
    rejected: int = 0  # the service said no, correctly: e.g. an airport the model never saw (422)
    feedback_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    total: int = 0  # rows chosen to send
    # the whole seconds (epoch) at which each version answered: which serving windows hold the traffic
    answered: dict[str, set[int]] = field(default_factory=dict)

    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def progress_line(result: ReplayResult) -> str:
    """What replay shows while it sends: ``sent 1,250 of 5,000 (49.8/s), 1,180 labels, 0 failed``."""
    failed = f", {result.failed:,} failed" if result.failed else ", 0 failed"
    rejected = f", {result.rejected:,} rejected" if result.rejected else ""
    return (
        f"sent {result.sent:,} of {result.total:,} ({result.rate():.1f}/s), "
        f"{result.feedback_sent:,} labels posted{failed}{rejected}"
    )


def _needs_time(spec: ProblemSpec) -> TimeSpec:
    if spec.time is None:
        raise ReplayError(
            f"problem {spec.name!r} has no time column (its test set is a seeded random sample, so no rows "
            "are later than its training data): pass --source FILE_OR_URI with rows to replay"
        )
    return spec.time


def _event_times(frame: pd.DataFrame, spec: ProblemSpec) -> pd.Series:
    from steps.data.features import FeatureError, event_time

    try:
        return event_time(frame, _needs_time(spec))
    except FeatureError as exc:
        raise ReplayError(f"problem {spec.name!r}: {exc}") from exc


def later_rows(frame: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """The rows after the training period: later than every row training learned from.

    With ``training_data.until`` in the spec, the source rows from that time on (which training never
    reads); otherwise training holds out the latest ``split.test_fraction`` of its labelled rows by event
    time, as ``steps/data/split.py`` does, and the rows strictly after the last training row's time are
    returned. Unlabelled rows too: they are traffic, only without feedback. Input order is kept.
    """
    times = _event_times(frame, spec)
    cutoff = spec.training_data.cutoff(spec.time.timezone if spec.time else None)
    if cutoff is not None:
        later = (times >= cutoff).to_numpy()
        if not later.any():
            raise ReplayError(
                f"problem {spec.name!r}: no row from training_data.until {spec.training_data.until} on"
            )
        return frame[later]
    labelled = pd.Series(True, index=frame.index)
    if all(c in frame.columns for c in spec.target_source_columns()):
        from steps.data.features import FeatureError, make_label

        try:
            labelled = make_label(frame, spec).notna()
        except FeatureError as exc:
            raise ReplayError(f"problem {spec.name!r}: {exc}") from exc
    order = times[labelled & times.notna()].sort_values(kind="stable")
    n_test = max(1, round(len(order) * spec.split.test_fraction))
    if len(order) <= n_test:
        raise ReplayError(
            f"problem {spec.name!r}: only {len(order)} timed rows, too few to have a later part"
        )
    training_ends = order.iloc[-n_test - 1]
    return frame[(times > training_ends).to_numpy()]


def _bound(text: str, tz: str | None, end: bool) -> pd.Timestamp:
    try:
        period = pd.Period(text)
    except (ValueError, TypeError) as exc:
        raise ReplayError(f"{text!r} is not a date, month or year (e.g. 2013-10 or 2013-10-19)") from exc
    stamp = period.end_time if end else period.start_time
    return stamp.tz_localize(tz or "UTC")


def rows_between(frame: pd.DataFrame, spec: ProblemSpec, start: str | None, end: str | None) -> pd.DataFrame:
    """The rows whose event time falls from the start of ``start`` to the end of ``end`` (each a year, a
    month or a day, e.g. ``2013-10``), in the spec's time zone when it names one; either may be open."""
    times = _event_times(frame, spec)
    tz = _needs_time(spec).timezone
    local = times.dt.tz_convert(tz) if tz else times
    if start and end and _bound(start, tz, end=False) > _bound(end, tz, end=True):
        raise ReplayError(f"--from {start} is after --to {end}")
    mask = pd.Series(True, index=frame.index)
    if start:
        mask &= local >= _bound(start, tz, end=False)
    if end:
        mask &= local <= _bound(end, tz, end=True)
    return frame[mask.to_numpy()]


def select_rows(
    spec: ProblemSpec,
    source: str | None = None,
    start: str | None = None,
    end: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The rows to replay: ``source`` (any URI read_source reads), else the spec's source after the
    training period, narrowed to ``start``..``end`` when either is given."""
    from steps.data.sources import read_source

    if source is None:
        _needs_time(spec)  # before reading a whole data set only to say so
    frame = read_source(source or spec.source, storage_options)
    if start or end:
        rows = rows_between(frame, spec, start, end)
    elif source:
        rows = frame
    else:
        rows = later_rows(frame, spec)
    if rows.empty:
        raise ReplayError(f"no rows to replay from {source or spec.source} in the window asked for")
    return rows


def _label(value: Any, task: str) -> float | int | None:
    """A label as /feedback takes it: 0/1 or a class index as an int, a finite number for regression."""
    if value is None or pd.isna(value):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    if task == "regression":
        return number
    return int(number) if number.is_integer() and number >= 0 else None


def build_records(
    frame: pd.DataFrame,
    features: list[dict[str, Any]],
    problem: str | ProblemSpec,
    classes: list[str] | None = None,
) -> tuple[list[dict[str, Any]], list[float | int | None]]:
    """Request bodies in the service's schema, and the true label of each (None if unknown).

    ``classes`` is the model's class order as GET /model gives it (labels are indices into it); without
    it a classification label's order is the spec's.
    """
    from steps.data import features as feature_steps
    from steps.data.sources import read_source

    spec = problem if isinstance(problem, ProblemSpec) else load_spec(problem)
    joined = {j.name: read_source(j.source) for j in spec.joins}
    extra: dict[str, Any] = {"classes": classes} if classes is not None else {}
    try:
        derived = feature_steps.derive(frame.reset_index(drop=True), spec, joined, **extra)
    except feature_steps.FeatureError as exc:
        raise ReplayError(f"problem {spec.name!r}: {exc}") from exc
    names = [f["name"] for f in features]
    missing = [n for n in names if n not in derived.columns]
    if missing:
        raise ReplayError(f"the rows lack feature(s) {missing} that the served model takes")
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
    labels: list[float | int | None] = (
        [_label(v, spec.task) for v in derived[spec.label]]
        if spec.label in derived
        else [None] * len(records)
    )
    return records, labels


def replay(
    url: str,
    rows: pd.DataFrame,
    *,
    problem: str | ProblemSpec,
    rate: float,
    limit: int,
    duration: float,
    feedback_delay: float,
    token: str | None = None,
    seed: int = 0,
    progress: Callable[[ReplayResult], None] | None = None,
    progress_every: float = 1.0,
) -> ReplayResult:
    """Send a random sample of ``rows`` (at most ``limit``) to ``url``/predict, and each known label to
    /feedback ``feedback_delay`` seconds after its prediction. The service must serve the problem's model.

    ``progress`` is called with the running result at most every ``progress_every`` seconds while sending,
    while the last labels go out, and once at the end."""
    import requests

    spec = problem if isinstance(problem, ProblemSpec) else load_spec(problem)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    session = requests.Session()
    try:
        answer = session.get(f"{url}/model", headers=headers, timeout=10)
    except requests.RequestException as exc:
        raise ReplayError(
            f"no service answers at {url} ({type(exc).__name__}): start it or pass --url"
        ) from exc
    if answer.status_code != 200:
        raise ReplayError(
            f"{url}/model answered {answer.status_code}: is a model served there (and a token set)?"
        )
    info = answer.json()
    if info.get("name") != spec.model_name:
        raise ReplayError(
            f"the service at {url} serves {info.get('name')!r}, not {spec.model_name!r} (problem "
            f"{spec.name!r}): pass the --url of that problem's service"
        )
    # a random sample in random order: each window then shows the period's traffic, not a few hours of it
    pool = rows.sample(n=min(limit, len(rows)), random_state=seed)
    records, labels = build_records(pool, info["features"], spec, info.get("classes"))
    result = ReplayResult(total=len(records))
    pending: deque[tuple[float, str, float | int]] = deque()
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
    shown = started
    sending: float | None = None  # seconds spent sending, once done: the rate is of sending, not draining

    def report() -> None:
        nonlocal shown
        now = time.monotonic()
        if progress is not None and now - shown >= progress_every:
            shown = now
            result.seconds = now - started if sending is None else sending
            progress(result)

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
                result.answered.setdefault(str(body["model_version"]), set()).add(int(time.time()))
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
        report()
    sending = time.monotonic() - started
    done.set()
    deadline = time.monotonic() + feedback_delay + 30
    while worker.is_alive() and time.monotonic() < deadline:
        worker.join(timeout=min(progress_every, 1.0))
        report()
    result.seconds = sending
    if progress is not None:
        progress(result)
    return result
