"""The artifact store's layout: where each thing lives, one pure function per location, and its parser.

Training writes snapshots and training profiles, the service writes traffic windows, the prediction log,
feedback labels and its request-id key, batch scoring writes its outputs, monitoring its reports and state;
monitoring then reads what the service wrote. Each side used to spell the paths itself; now both call the
function here, and the parsers read back what a path says (a window file's start time, its writer). Paths
are relative to the store's root, ``/``-separated. The layout is the one stores already hold: changing a
function here moves files that existing stores keep at the old place.

Model names cannot hold ``/`` (MLflow refuses them), so a path splits into its parts unambiguously.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

WINDOW_STAMP: Final = "%Y%m%dT%H%M%SZ"
"""A UTC instant in a file name: traffic windows, prediction log parts, monitoring reports."""
DAY_STAMP: Final = "%Y%m%d"
"""The day folder of the prediction log and the feedback labels."""
BATCH_STAMP: Final = "%Y%m%dT%H%M%S"
"""A batch output's start, in the scoring machine's local time (as batch outputs have always been named)."""

SNAPSHOTS: Final = "snapshots"
MODELS: Final = "models"
SERVING: Final = "serving"
INFERENCE: Final = "inference"
MONITORING: Final = "monitoring"

SNAPSHOT_DATA: Final = "data.parquet"
SNAPSHOT_PROFILE: Final = "profile.bin"
SNAPSHOT_META: Final = "meta.json"
"""Written last: its presence means the snapshot is complete."""
SNAPSHOT_LINEAGE: Final = "lineage.json"
"""Only a feedback snapshot has it: the model versions, traffic windows and label files its rows came from."""
SNAPSHOT_FILES: Final = (SNAPSHOT_DATA, SNAPSHOT_PROFILE, SNAPSHOT_META, SNAPSHOT_LINEAGE)
FEEDBACK_SOURCE_SCHEME: Final = "feedback"
"""The source URI of a feedback snapshot: ``feedback://<model name>``."""
TRAINING_REFERENCE: Final = "training_profile.bin"
BATCH_PROFILE: Final = "profile.bin"
REQUEST_ID_KEY: Final = "serving/request-id.key"
"""The key that signs the service's request ids, shared by every worker and replica."""


class LayoutError(ValueError):
    """A path that is not the location a parser reads."""


def _parts(path: str, top: str, count: int, what: str) -> list[str]:
    parts = path.strip("/").split("/")
    if len(parts) != count or parts[0] != top or not all(parts):
        raise LayoutError(f"{path!r} is not a {what} path")
    return parts


def _version(part: str, path: str) -> str:
    if not part.startswith("v") or len(part) == 1:
        raise LayoutError(f"{path!r}: {part!r} is not a version folder (v<version>)")
    return part[1:]


def _utc(moment: datetime | float) -> datetime:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError(f"{moment} has no time zone: layout times are UTC instants")
        return moment.astimezone(UTC)
    return datetime.fromtimestamp(moment, UTC)


def _stamp(text: str, fmt: str, path: str) -> datetime:
    try:
        return datetime.strptime(text, fmt).replace(tzinfo=UTC)
    except ValueError as exc:
        raise LayoutError(f"{path!r}: {text!r} is not a {fmt} time") from exc


# -- snapshots --------------------------------------------------------------------------------------------
def snapshot_dir(digest: str) -> str:
    """A content-addressed copy of a source: written once per content, read by lineage and re-training."""
    return f"{SNAPSHOTS}/{digest}"


def snapshot_file(digest: str, name: str) -> str:
    """One of a snapshot's files: ``data.parquet``, ``profile.bin``, ``meta.json`` (and ``lineage.json``
    for feedback)."""
    if name not in SNAPSHOT_FILES:
        raise ValueError(f"unknown snapshot file {name!r}: one of {', '.join(SNAPSHOT_FILES)}")
    return f"{snapshot_dir(digest)}/{name}"


@dataclass(frozen=True)
class SnapshotFile:
    digest: str
    name: str


def parse_snapshot_file(path: str) -> SnapshotFile:
    _, digest, name = _parts(path, SNAPSHOTS, 3, "snapshot file")
    if name not in SNAPSHOT_FILES:
        raise LayoutError(f"{path!r}: {name!r} is not a snapshot file")
    return SnapshotFile(digest, name)


# -- the monitoring reference of a version ----------------------------------------------------------------
def training_reference(model_name: str, version: str) -> str:
    """A version's training profile (features, label, held-out predictions), which monitoring compares
    traffic with. No ``v`` before the version here: the layout predates the serving folders."""
    return f"{MODELS}/{model_name}/{version}/{TRAINING_REFERENCE}"


@dataclass(frozen=True)
class VersionKey:
    model_name: str
    version: str


def parse_training_reference(path: str) -> VersionKey:
    _, model, version, name = _parts(path, MODELS, 4, "training reference")
    if name != TRAINING_REFERENCE:
        raise LayoutError(f"{path!r} is not a training reference ({TRAINING_REFERENCE})")
    return VersionKey(model, version)


# -- serving: traffic windows -----------------------------------------------------------------------------
def window_name(start: datetime | float) -> str:
    """A window's name: its start (epoch seconds or an aware datetime) as a UTC stamp."""
    return _utc(start).strftime(WINDOW_STAMP)


def window_start(name: str) -> datetime:
    """The start of the window a name (``20260101T100000Z``) stands for."""
    return _stamp(name, WINDOW_STAMP, name)


def serving_model(model_name: str) -> str:
    """Everything the service writes for a model: every version's windows and prediction log, the labels."""
    return f"{SERVING}/{model_name}"


def serving_profiles(model_name: str, version: str) -> str:
    """The folder of a version's traffic profiles; monitoring lists it."""
    return f"{SERVING}/{model_name}/v{version}/profiles"


def window_profile(model_name: str, version: str, start: datetime | float, writer: str) -> str:
    """One writer's profile of one window. Several processes write the same window (never the same file:
    ``writer`` is unique per process and file), and readers merge the files of a window."""
    return f"{serving_profiles(model_name, version)}/{window_name(start)}-{writer}.bin"


@dataclass(frozen=True)
class WindowProfile:
    model_name: str
    version: str
    start: datetime
    writer: str


def parse_window_profile(path: str) -> WindowProfile:
    _, model, vdir, folder, name = _parts(path, SERVING, 5, "window profile")
    if folder != "profiles" or not name.endswith(".bin") or "-" not in name:
        raise LayoutError(f"{path!r} is not a window profile (<window>-<writer>.bin)")
    stamp, writer = name.removesuffix(".bin").split("-", 1)
    return WindowProfile(model, _version(vdir, path), _stamp(stamp, WINDOW_STAMP, path), writer)


# -- serving: the prediction log --------------------------------------------------------------------------
def prediction_logs(model_name: str, version: str) -> str:
    """The folder of a version's logged predictions (request id, output, time), joined with feedback."""
    return f"{SERVING}/{model_name}/v{version}/predictions"


PREDICTION_LOG_KEYS = ("request_id", "prediction", "ts")
"""A prediction log row's own columns; the request's features sit beside them under their names. What
joining predictions with labels reads (only these: the features are most of a part's bytes)."""


def prediction_log_part(
    model_name: str, version: str, start: datetime | float, writer: str, nonce: str
) -> str:
    """One flushed batch of the window starting at ``start``, in that window's day folder."""
    stamp = window_name(start)
    return f"{prediction_logs(model_name, version)}/{stamp[:8]}/{stamp}-{writer}-{nonce}.parquet"


@dataclass(frozen=True)
class PredictionLogPart:
    model_name: str
    version: str
    start: datetime
    writer: str
    nonce: str


def parse_prediction_log_part(path: str) -> PredictionLogPart:
    _, model, vdir, folder, day, name = _parts(path, SERVING, 6, "prediction log part")
    pieces = name.removesuffix(".parquet").split("-")
    if folder != "predictions" or not name.endswith(".parquet") or len(pieces) < 3:
        raise LayoutError(f"{path!r} is not a prediction log part (<window>-<writer>-<nonce>.parquet)")
    start = _stamp(pieces[0], WINDOW_STAMP, path)
    if day != pieces[0][:8]:
        raise LayoutError(f"{path!r}: the window {pieces[0]} is not of the day folder {day}")
    return PredictionLogPart(model, _version(vdir, path), start, "-".join(pieces[1:-1]), pieces[-1])


# -- serving: the shadow log ------------------------------------------------------------------------------
SHADOW_LOG_COLUMNS = ("request_id", "ts", "prediction", "champion", "champion_prediction")
"""A shadow log row: the candidate's prediction for a row the champion answered, beside the champion's
(its version and prediction as logged), under the request id of the answer."""


def shadow_logs(model_name: str, version: str) -> str:
    """The folder of a version's shadow predictions: rows it scored during a rollout's shadow step, answered
    by the champion. Kept apart from the prediction log, which holds what a version answered (monitoring's
    traffic, the feedback that becomes training data)."""
    return f"{SERVING}/{model_name}/v{version}/shadow"


def shadow_log_part(model_name: str, version: str, start: datetime | float, writer: str, nonce: str) -> str:
    """One flushed batch of shadow predictions of the window starting at ``start``."""
    stamp = window_name(start)
    return f"{shadow_logs(model_name, version)}/{stamp[:8]}/{stamp}-{writer}-{nonce}.parquet"


# -- serving: feedback labels -----------------------------------------------------------------------------
def feedback_labels(model_name: str) -> str:
    """The folder of a model's feedback labels: by request id, so not per version."""
    return f"{SERVING}/{model_name}/feedback"


def feedback_part(model_name: str, day: date, writer: str, nonce: str) -> str:
    """One flushed batch of labels received on ``day`` (UTC)."""
    return f"{feedback_labels(model_name)}/{day.strftime(DAY_STAMP)}/{writer}-{nonce}.parquet"


@dataclass(frozen=True)
class FeedbackPart:
    model_name: str
    day: date
    writer: str
    nonce: str


def parse_feedback_part(path: str) -> FeedbackPart:
    _, model, folder, day, name = _parts(path, SERVING, 5, "feedback part")
    writer, _, nonce = name.removesuffix(".parquet").rpartition("-")
    if folder != "feedback" or not name.endswith(".parquet") or not writer or not nonce:
        raise LayoutError(f"{path!r} is not a feedback part (<day>/<writer>-<nonce>.parquet)")
    return FeedbackPart(model, _stamp(day, DAY_STAMP, path).date(), writer, nonce)


def feedback_source(model_name: str) -> str:
    """The source URI a feedback snapshot records: the labelled traffic of ``model_name``."""
    return f"{FEEDBACK_SOURCE_SCHEME}://{model_name}"


def request_id_key() -> str:
    return REQUEST_ID_KEY


# -- batch scoring ----------------------------------------------------------------------------------------
def batch_output(model_name: str, version: str, started: float, digest: str) -> str:
    """The folder of one batch scoring run: its start (local time) and the scored snapshot's digest."""
    stamp = time.strftime(BATCH_STAMP, time.localtime(started))
    return f"{INFERENCE}/{model_name}/v{version}/{stamp}-{digest[:12]}"


@dataclass(frozen=True)
class BatchOutput:
    model_name: str
    version: str
    stamp: str
    digest_prefix: str


def parse_batch_output(path: str) -> BatchOutput:
    _, model, vdir, name = _parts(path, INFERENCE, 4, "batch output")
    stamp, _, digest = name.partition("-")
    try:
        time.strptime(stamp, BATCH_STAMP)
    except ValueError as exc:
        raise LayoutError(f"{path!r}: {stamp!r} is not a {BATCH_STAMP} time") from exc
    if not digest:
        raise LayoutError(f"{path!r} is not a batch output (<stamp>-<digest>)")
    return BatchOutput(model, _version(vdir, path), stamp, digest)


def batch_part(output: str, number: int) -> str:
    """The ``number``-th Parquet part of a batch output (``part-00003.parquet``), in scoring order."""
    return f"{output}/part-{number:05d}.parquet"


def parse_batch_part(path: str) -> tuple[str, int]:
    """(output folder, part number) of a batch part."""
    output, _, name = path.rpartition("/")
    digits = name.removeprefix("part-").removesuffix(".parquet")
    if not output or not name.startswith("part-") or not name.endswith(".parquet") or not digits.isdigit():
        raise LayoutError(f"{path!r} is not a batch part (part-NNNNN.parquet)")
    return output, int(digits)


def batch_profile(output: str) -> str:
    """The whylogs profile of what a batch run scored."""
    return f"{output}/{BATCH_PROFILE}"


def parse_batch_profile(path: str) -> str:
    """The output folder of a batch profile."""
    output, _, name = path.rpartition("/")
    if not output or name != BATCH_PROFILE:
        raise LayoutError(f"{path!r} is not a batch profile ({BATCH_PROFILE})")
    return output


# -- monitoring -------------------------------------------------------------------------------------------
def monitoring_report(model_name: str, at: datetime) -> str:
    """The HTML report of one monitoring run, named by its time (UTC)."""
    return f"{MONITORING}/{model_name}/reports/{window_name(at)}.html"


def parse_monitoring_report(path: str) -> tuple[str, datetime]:
    """(model name, time) of a monitoring report."""
    _, model, folder, name = _parts(path, MONITORING, 4, "monitoring report")
    if folder != "reports" or not name.endswith(".html"):
        raise LayoutError(f"{path!r} is not a monitoring report (reports/<time>.html)")
    return model, _stamp(name.removesuffix(".html"), WINDOW_STAMP, path)


def monitoring_state(model_name: str) -> str:
    """What monitoring remembers between runs for a model (last window checked, last retrain asked)."""
    return f"{MONITORING}/{model_name}/state.json"


def parse_monitoring_state(path: str) -> str:
    """The model name of a monitoring state file."""
    _, model, name = _parts(path, MONITORING, 3, "monitoring state")
    if name != "state.json":
        raise LayoutError(f"{path!r} is not a monitoring state file (state.json)")
    return model
