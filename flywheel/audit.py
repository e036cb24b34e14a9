"""The prediction audit trail: a served request id back to its logged row, model version, explanation, label.

The service logs every prediction it serves (the profiling process writes the features as served, the
prediction, the request id and the time into the artifact store's prediction log, per model version and
day; :mod:`flywheel.contracts.layout`), and feedback labels by the same ids. This module reads them back:
:func:`find_prediction` finds the logged row of an id, :func:`find_label` the ground truth sent for it, and
:func:`audit_record` recomputes the explanation with the served model's own code (the functions behind
``POST /explain``), so "why did the model say this" is answered after the fact with the same numbers.

The search is bounded: the log is one folder per version and day, so only folder listings are walked, the
days newest first, and a part is read for its request-id column only until the first hit. A request id
says when it was issued (``serving.request_ids``), so an id in that form is looked for in the days around
then only; ``since`` bounds any search by day. The store is read and nothing else is touched: the
``flywheel explain-request`` command and the service's ``GET /requests/{id}`` both call these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flywheel.contracts import layout

if TYPE_CHECKING:
    from serving.holder import Served
    from stacks.components.artifact_store import ArtifactStore

ROW_SEPARATOR = ":"
"""A batch request's rows are logged as ``<id>:<row>`` (as ``serving.request_ids`` issues them)."""
MAX_ID_CHARS = 200
FEEDBACK_DAYS = 90
"""Labels are looked for from the prediction's day on, this many days (the service's feedback window)."""
LOGGED = ("prediction", "request_id", "ts")
"""The prediction log's own columns; every other column is a feature as served."""


class AuditError(ValueError):
    """A logged row that cannot be explained (its values do not fit the version's schema)."""


@dataclass(frozen=True)
class LoggedPrediction:
    """One row of the prediction log: what was served, by which version, when."""

    request_id: str
    model_name: str
    version: str
    ts: float
    inputs: dict[str, Any]  # the features as served: categories by name, a missing value as None
    prediction: Any  # as logged: binary the probability, regression the value, multiclass the class name
    part: str  # the log part it was read from (relative to the store's root)


@dataclass
class Search:
    """What a search found, and how much it read (a search is bounded; the caller can say how far)."""

    found: LoggedPrediction | None = None
    days: int = 0
    parts: int = 0
    unreadable: list[str] = field(default_factory=list)


def issued_at(request_id: str) -> float | None:
    """When an id in the service's form (``<time hex>-<rows hex>-<nonce>-<mac>``) says it was issued; None
    for any other form. A hint for where to look only: the signature is not checked here."""
    pieces = request_id.partition(ROW_SEPARATOR)[0].split("-")
    if len(pieces) != 4 or not 0 < len(pieces[0]) <= 12:
        return None
    try:
        return float(int(pieces[0], 16))
    except ValueError:
        return None


def batch_rows(request_id: str) -> int:
    """How many rows the request an id names had (1 when the id is not in the service's form)."""
    base, _, row = request_id.partition(ROW_SEPARATOR)
    pieces = base.split("-")
    if row or len(pieces) != 4 or not 0 < len(pieces[1]) <= 8:
        return 1
    try:
        return max(1, int(pieces[1], 16))
    except ValueError:
        return 1


def _day(text: str) -> date | None:
    try:
        return datetime.strptime(text, layout.DAY_STAMP).replace(tzinfo=UTC).date()
    except ValueError:
        return None


def _hint_days(request_id: str) -> set[date] | None:
    """The days whose folders can hold an id's row: its window starts at most a window before it was
    logged, which is moments after it was issued (a day either side covers both)."""
    at = issued_at(request_id)
    if at is None:
        return None
    try:
        issued = datetime.fromtimestamp(at, UTC).date()
    except (OverflowError, OSError, ValueError):
        return set()
    return {issued - timedelta(days=1), issued, issued + timedelta(days=1)}


def versions_logged(store: ArtifactStore, model_name: str) -> list[str]:
    """The versions of a model that have a serving folder (``v<version>``), newest first."""
    names = [n[1:] for n in store.children(layout.serving_model(model_name)) if n.startswith("v") and n[1:]]
    return sorted(names, key=lambda v: (len(v), v), reverse=True)


def find_prediction(
    store: ArtifactStore,
    model_name: str,
    request_id: str,
    since: date | None = None,
    versions: list[str] | None = None,
) -> Search:
    """The logged row of ``request_id`` (``<id>`` or ``<id>:<row>``): the day folders of every version (or
    of ``versions``) newest first, from ``since`` on, each part read for its ids, until the first hit."""
    search = Search()
    if not request_id or len(request_id) > MAX_ID_CHARS:
        return search
    hint = _hint_days(request_id)
    folders: list[tuple[date, str, str]] = []
    for version in versions if versions is not None else versions_logged(store, model_name):
        logs = layout.prediction_logs(model_name, version)
        for name in store.children(logs):
            day = _day(name)
            if day is None or (since is not None and day < since) or (hint is not None and day not in hint):
                continue
            folders.append((day, version, f"{logs}/{name}"))
    for _, version, folder in sorted(folders, reverse=True):
        search.days += 1
        for name in sorted(store.children(folder), reverse=True):  # parts are named by window: newest first
            if not name.endswith(".parquet"):
                continue
            search.parts += 1
            found = _read_row(store, f"{folder}/{name}", model_name, version, request_id, search)
            if found is not None:
                search.found = found
                return search
    return search


def _read_row(
    store: ArtifactStore, path: str, model_name: str, version: str, request_id: str, search: Search
) -> LoggedPrediction | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        with store.open(path) as handle:
            ids = pq.read_table(handle, columns=["request_id"]).column("request_id")
            at = pc.index(ids, request_id).as_py()
            if at < 0:
                return None
            handle.seek(0)
            row = pq.read_table(handle).slice(at, 1).to_pylist()[0]
    except (OSError, pa.ArrowException, KeyError) as exc:  # a half-written or foreign file: skipped, said
        search.unreadable.append(f"{path}: {type(exc).__name__}: {exc}")
        return None
    inputs = {k: _plain(v) for k, v in row.items() if k not in LOGGED}
    return LoggedPrediction(
        request_id=request_id,
        model_name=model_name,
        version=version,
        ts=float(row["ts"]),
        inputs=inputs,
        prediction=_plain(row["prediction"]),
        part=path,
    )


def _plain(value: Any) -> Any:
    """A JSON-ready value: NaN (a missing numeric feature as logged) becomes None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def find_label(store: ArtifactStore, model_name: str, request_id: str, from_day: date) -> float | None:
    """The first label sent for ``request_id``: the feedback days from ``from_day`` (the prediction's) on,
    oldest first (monitoring keeps the first label of an id), for :data:`FEEDBACK_DAYS` days."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = layout.feedback_labels(model_name)
    last = from_day + timedelta(days=FEEDBACK_DAYS)
    for name in store.children(folder):
        day = _day(name)
        if day is None or not from_day <= day <= last:
            continue
        for part in store.children(f"{folder}/{name}"):
            if not part.endswith(".parquet"):
                continue
            try:
                with store.open(f"{folder}/{name}/{part}") as handle:
                    table = pq.read_table(handle, columns=["request_id", "label"])
            except (OSError, pa.ArrowException, KeyError):
                continue  # monitoring's reader counts such files; an audit just does not use them
            at = pc.index(table.column("request_id"), request_id).as_py()
            if at >= 0:
                label = table.column("label")[at].as_py()
                return None if label is None else float(label)
    return None


def audit_record(
    logged: LoggedPrediction, served: Served, label: float | None = None, top_k: int = 5
) -> dict[str, Any]:
    """The logged row explained by the version that served it, as ``POST /explain`` explains a record (the
    same functions), with the prediction recomputed and compared with the logged one."""
    import numpy as np

    from serving.routes.explain import contributions, explanation_body

    if served.version != logged.version:
        raise ValueError(f"v{logged.version} served this request, not v{served.version}")
    values = {name: logged.inputs.get(name) for name in served.encoder.names}
    try:
        matrix = served.encoder.encode([values])
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"the logged inputs do not fit v{served.version}'s schema: {exc!r}") from exc
    output = served.predict(matrix)
    recomputed = served.model.schema.monitored(output)[0]
    body = explanation_body(
        served, values, contributions(served, matrix), output[0], logged.request_id, top_k
    )
    if isinstance(recomputed, str) or isinstance(logged.prediction, str):
        matches = str(recomputed) == str(logged.prediction)
    else:  # the log keeps the served float32: the same version on the same inputs gives the same bits
        matches = bool(np.float32(recomputed) == np.float32(logged.prediction))
    return {
        **body,
        "model_name": logged.model_name,
        "served_at": datetime.fromtimestamp(logged.ts, UTC).isoformat(timespec="milliseconds"),
        "ts": logged.ts,
        "inputs": logged.inputs,
        "logged_prediction": logged.prediction,
        "recomputed_prediction": _plain(recomputed.item() if hasattr(recomputed, "item") else recomputed),
        "prediction_matches": matches,
        "label": label,
        "log_part": logged.part,
    }


def lines(record: dict[str, Any]) -> list[str]:
    """The record for a terminal: version, time, prediction, top contributions, label, inputs."""
    same = "equals the logged one" if record["prediction_matches"] else "DIFFERS from the logged one"
    out = [
        f"request {record['request_id']}",
        f"  model       {record['model_name']} v{record['model_version']}",
        f"  served at   {record['served_at']}",
        f"  prediction  {record['logged_prediction']} (logged); recomputed "
        f"{record['recomputed_prediction']}: {same}",
    ]
    if "predicted_class" in record:
        out.append(f"  class       {record['predicted_class']} (contributions towards it)")
    label = record.get("label")
    out.append(f"  label       {'no feedback received' if label is None else label}")
    out.append(f"  base value  {record['base_value']:+.4f} (margin units)")
    out.append("  top contributions:")
    out.extend(
        f"    {t['feature']:<24} {t['contribution']:+.4f}   value {t['value']!r}" for t in record["top"]
    )
    out.append("  inputs:")
    out.extend(f"    {k:<24} {v!r}" for k, v in record["inputs"].items())
    return out
