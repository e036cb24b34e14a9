"""The artifact-store layout: every location function against its parser, and the paths stores already hold.

The pinned paths are the ones the service, the flows and the steps wrote before the layout had one owner:
a store written then must still be read the same way now.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from flywheel.contracts import layout
from flywheel.contracts.layout import LayoutError

MODELS = ["flight-delay", "diamond_price", "m", "Model.v2", "churn-model-2026"]
VERSIONS = ["1", "17", "204"]
STARTS = [
    datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 55, tzinfo=UTC),
]
WRITERS = ["4242-a1b2c3", "4242-a1b2c3-7", "1-000000-12"]


@pytest.fixture
def utc_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the duration (batch outputs are named in local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_layout_stores_already_hold(utc_clock: None) -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert layout.snapshot_dir("5be1") == "snapshots/5be1"
    assert [layout.snapshot_file("5be1", n) for n in layout.SNAPSHOT_FILES] == [
        "snapshots/5be1/data.parquet",
        "snapshots/5be1/profile.bin",
        "snapshots/5be1/meta.json",
        "snapshots/5be1/lineage.json",
    ]
    assert layout.feedback_source("flight-delay") == "feedback://flight-delay"
    assert layout.training_reference("flight-delay", "3") == "models/flight-delay/3/training_profile.bin"
    assert layout.serving_profiles("flight-delay", "3") == "serving/flight-delay/v3/profiles"
    assert (
        layout.window_profile("flight-delay", "3", start.timestamp(), "4242-a1b2c3-1")
        == "serving/flight-delay/v3/profiles/20260101T100000Z-4242-a1b2c3-1.bin"
    )
    assert layout.prediction_logs("flight-delay", "3") == "serving/flight-delay/v3/predictions"
    assert (
        layout.prediction_log_part("flight-delay", "3", int(start.timestamp()), "4242-a1b2c3", "0a1b2c3d")
        == "serving/flight-delay/v3/predictions/20260101/20260101T100000Z-4242-a1b2c3-0a1b2c3d.parquet"
    )
    assert layout.shadow_logs("flight-delay", "4") == "serving/flight-delay/v4/shadow"
    shadow = layout.shadow_log_part("flight-delay", "4", int(start.timestamp()), "4242-a1b2c3", "0a1b2c3d")
    assert shadow == "serving/flight-delay/v4/shadow/20260101/20260101T100000Z-4242-a1b2c3-0a1b2c3d.parquet"
    with pytest.raises(layout.LayoutError):  # never taken for a prediction log part (what a version answered)
        layout.parse_prediction_log_part(shadow)
    assert layout.feedback_labels("flight-delay") == "serving/flight-delay/feedback"
    assert (
        layout.feedback_part("flight-delay", date(2026, 1, 2), "4242-a1b2c3", "0a1b2c3d")
        == "serving/flight-delay/feedback/20260102/4242-a1b2c3-0a1b2c3d.parquet"
    )
    assert layout.request_id_key() == "serving/request-id.key"
    output = layout.batch_output("flight-delay", "3", start.timestamp(), "0123456789abcdef" * 2)
    assert output == "inference/flight-delay/v3/20260101T100000-0123456789ab"
    assert layout.batch_part(output, 3) == f"{output}/part-00003.parquet"
    assert layout.batch_profile(output) == f"{output}/profile.bin"
    assert (
        layout.monitoring_report("flight-delay", start)
        == "monitoring/flight-delay/reports/20260101T100000Z.html"
    )
    assert layout.monitoring_state("flight-delay") == "monitoring/flight-delay/state.json"


@pytest.mark.parametrize("model", MODELS)
def test_snapshot_and_reference_round_trip(model: str) -> None:
    for digest in ("5be1", "0" * 32):
        for name in layout.SNAPSHOT_FILES:
            found = layout.parse_snapshot_file(layout.snapshot_file(digest, name))
            assert found == layout.SnapshotFile(digest, name)
            assert layout.snapshot_file(digest, name).startswith(layout.snapshot_dir(digest) + "/")
    for version in VERSIONS:
        path = layout.training_reference(model, version)
        assert layout.parse_training_reference(path) == layout.VersionKey(model, version)


@pytest.mark.parametrize("start", STARTS)
def test_window_names_round_trip(start: datetime) -> None:
    assert layout.window_start(layout.window_name(start)) == start
    assert layout.window_name(start.timestamp()) == layout.window_name(start)
    # an aware time in another zone names the same instant
    assert layout.window_name(start.astimezone(timezone(timedelta(hours=-5)))) == layout.window_name(start)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("writer", WRITERS)
def test_serving_files_round_trip(model: str, writer: str) -> None:
    for version in VERSIONS:
        for start in STARTS:
            profile = layout.window_profile(model, version, start, writer)
            assert layout.parse_window_profile(profile) == layout.WindowProfile(model, version, start, writer)
            assert profile.startswith(layout.serving_profiles(model, version) + "/")

            part = layout.prediction_log_part(model, version, start.timestamp(), writer, "0a1b2c3d")
            assert layout.parse_prediction_log_part(part) == layout.PredictionLogPart(
                model, version, start, writer, "0a1b2c3d"
            )
            assert part.startswith(layout.prediction_logs(model, version) + "/")

            labels = layout.feedback_part(model, start.date(), writer, "ffff0000")
            assert layout.parse_feedback_part(labels) == layout.FeedbackPart(
                model, start.date(), writer, "ffff0000"
            )
            assert labels.startswith(layout.feedback_labels(model) + "/")


@pytest.mark.parametrize("model", MODELS)
def test_batch_outputs_round_trip(model: str, utc_clock: None) -> None:
    for version in VERSIONS:
        started = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp()
        output = layout.batch_output(model, version, started, "abcdef0123456789")
        assert layout.parse_batch_output(output) == layout.BatchOutput(
            model, version, "20260304T050607", "abcdef012345"
        )
        for number in (0, 7, 12345):
            assert layout.parse_batch_part(layout.batch_part(output, number)) == (output, number)
        assert layout.parse_batch_profile(layout.batch_profile(output)) == output


@pytest.mark.parametrize("model", MODELS)
def test_monitoring_files_round_trip(model: str) -> None:
    for at in STARTS:
        assert layout.parse_monitoring_report(layout.monitoring_report(model, at)) == (model, at)
    assert layout.parse_monitoring_state(layout.monitoring_state(model)) == model


@pytest.mark.parametrize(
    ("parser", "path"),
    [
        (layout.parse_window_profile, "serving/m/v1/profiles/not-a-time.bin"),
        (layout.parse_window_profile, "serving/m/1/profiles/20260101T000000Z-w.bin"),
        (layout.parse_window_profile, "serving/m/v1/predictions/20260101T000000Z-w.bin"),
        (layout.parse_window_profile, "serving/m/v1/profiles/extra/20260101T000000Z-w.bin"),
        (layout.parse_prediction_log_part, "serving/m/v1/predictions/20260102/20260101T000000Z-w-n.parquet"),
        (layout.parse_prediction_log_part, "serving/m/v1/predictions/20260101/20260101T000000Z.parquet"),
        (layout.parse_feedback_part, "serving/m/feedback/2026-01-01/w-n.parquet"),
        (layout.parse_feedback_part, "serving/m/feedback/20260101/nodash.parquet"),
        (layout.parse_snapshot_file, "snapshots/d/other.bin"),
        (layout.parse_training_reference, "models/m/1/profile.bin"),
        (layout.parse_batch_output, "inference/m/v1/yesterday-abc"),
        (layout.parse_batch_part, "inference/m/v1/x/part-abc.parquet"),
        (layout.parse_batch_profile, "inference/m/v1/x/profiles.bin"),
        (layout.parse_monitoring_report, "monitoring/m/reports/now.html"),
        (layout.parse_monitoring_state, "monitoring/m/state.yaml"),
        (layout.parse_training_reference, "serving/m/1/training_profile.bin"),
    ],
)
def test_parsers_refuse_other_paths(parser: object, path: str) -> None:
    with pytest.raises(LayoutError):
        parser(path)  # type: ignore[operator]


def test_a_naive_time_is_refused() -> None:
    """A naive datetime would be taken as local time and name the wrong window on a machine not on UTC."""
    with pytest.raises(ValueError, match="no time zone"):
        layout.window_name(datetime(2026, 1, 1))
