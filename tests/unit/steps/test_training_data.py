"""Feedback collection and the training timeline: what joins, what is left out and counted, what the gate
judges on, the cutoff, the window and the fingerprint."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts import layout
from flywheel.contracts.problem import ProblemSpec
from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from stacks.components.artifact_store import ArtifactStore
from steps.data import feedback as feedback_step
from steps.data.features import EVENT_TIME, Dataset
from steps.data.training_data import (
    FROM_FEEDBACK,
    combine,
    cut_source,
    feedback_dataset,
    feedback_until,
    fingerprint,
)

SCHEMA = FeatureSchema(
    [FeatureColumn("size", "numeric"), FeatureColumn("colour", "categorical", ["blue", "red"])],
    "label",
    "binary",
    ["0", "1"],
)


def spec(**training_data: object) -> ProblemSpec:
    return ProblemSpec.model_validate(
        {
            "name": "toy",
            "model_name": "toy-model",
            "source": "toy.csv",
            "task": "binary",
            "target": {"column": "label"},
            "time": {"column": "when"},
            "validation": {"ranges": {"size": [0, 100]}},
            "training_data": {"min_holdout_rows": 10, "holdout_fraction": 0.5, **training_data},
        }
    )


def source_dataset(n: int = 200) -> Dataset:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.uniform(0, 100, n),
            "colour": pd.Categorical(rng.choice(["blue", "red"], n), categories=["blue", "red"]),
            "label": rng.integers(0, 2, n),
            EVENT_TIME: pd.date_range("2013-01-01", periods=n, freq="D", tz="UTC"),
        }
    )
    return Dataset(frame, SCHEMA)


def served(n: int, start: float = 1_800_000_000.0) -> feedback_step.Feedback:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "size": rng.uniform(0, 100, n),
            "colour": rng.choice(["blue", "red", "green"], n, p=[0.45, 0.45, 0.1]),
            "request_id": [f"r{i}" for i in range(n)],
            "served_at": start + np.arange(n) * 60.0,
            "served_by": "1",
            "label": rng.integers(0, 2, n),
        }
    )
    lineage = feedback_step.FeedbackLineage("toy-model", ["1"], [], 1, n, None, None)
    return feedback_step.Feedback(frame, lineage)


def test_the_cutoff_keeps_later_source_rows_out() -> None:
    data, cut = cut_source(source_dataset(), spec(until="2013-05-01"))
    assert cut == 200 - 120 and data.frame[EVENT_TIME].max() < pd.Timestamp("2013-05-01", tz="UTC")
    with pytest.raises(ValueError, match="no source row is earlier"):
        cut_source(source_dataset(), spec(until="2012"))


def test_until_reads_a_yaml_date_and_refuses_nonsense() -> None:
    assert spec(until=date(2013, 10, 1)).training_data.until == "2013-10-01"
    with pytest.raises(ValueError, match="not a date, month or year"):
        spec(until="next tuesday")


def test_feedback_in_the_models_encoding_counts_unknown_categories() -> None:
    rows, unknown = feedback_dataset(served(100), SCHEMA)
    raw = served(100).frame
    assert unknown == int((raw["colour"] == "green").sum()) > 0
    assert rows.frame["colour"].isna().sum() == unknown
    assert rows.frame[EVENT_TIME].iloc[0] == pd.Timestamp(1_800_000_000, unit="s", tz="UTC")


def test_the_gate_judges_on_the_newest_feedback_the_champion_never_saw() -> None:
    fed, _ = feedback_dataset(served(100), SCHEMA)
    data = combine(source_dataset(), fed, spec(), None, SCHEMA)
    frame = data.dataset.frame
    assert data.holdout is not None and len(data.holdout) == 50
    held = frame.loc[data.holdout]
    assert held[FROM_FEEDBACK].all()
    assert held["served_at"].min() > frame.drop(index=data.holdout)["served_at"].max()
    # the champion already learned the first 80 served rows: only the 20 after them are "unseen"
    seen = 1_800_000_000.0 + 79 * 60.0
    later = combine(source_dataset(), fed, spec(), seen, SCHEMA)
    assert later.holdout is not None and len(later.holdout) == 10
    assert later.info["data.feedback_unseen_rows"] == 20


def test_too_little_unseen_feedback_leaves_the_gate_to_the_split() -> None:
    fed, _ = feedback_dataset(served(12), SCHEMA)
    data = combine(source_dataset(), fed, spec(), None, SCHEMA)
    assert data.holdout is None and any("too few to hold out" in note for note in data.notes)


def test_feedback_none_trains_on_the_source_alone() -> None:
    fed, _ = feedback_dataset(served(100), SCHEMA)
    data = combine(source_dataset(), fed, spec(feedback="none"), None, SCHEMA)
    assert not data.dataset.frame[FROM_FEEDBACK].any() and data.holdout is None


def test_a_window_keeps_the_most_recent_days_of_the_timeline() -> None:
    source = source_dataset()
    recent = spec(feedback="window", window_days=30)
    fed, _ = feedback_dataset(served(100, start=pd.Timestamp("2013-07-25", tz="UTC").timestamp()), SCHEMA)
    data = combine(source, fed, recent, None, SCHEMA)
    kept = data.dataset.frame.drop(index=data.holdout)
    newest = kept[EVENT_TIME].max()
    assert kept[EVENT_TIME].min() >= newest - pd.Timedelta(days=30)
    assert (~kept[FROM_FEEDBACK]).sum() > 0  # the newest source days are inside the window
    with pytest.raises(ValueError, match="window needs window_days"):
        spec(feedback="window")


def test_feedback_until_is_the_latest_trained_serving_time() -> None:
    fed, _ = feedback_dataset(served(100), SCHEMA)
    data = combine(source_dataset(), fed, spec(), None, SCHEMA)
    trained = data.dataset.subset(data.dataset.frame.index.difference(data.holdout))
    assert feedback_until(trained) == 1_800_000_000.0 + 49 * 60.0
    assert feedback_until(source_dataset()) is None


def test_the_fingerprint_follows_every_input() -> None:
    base = {"source": "abc", "feedback": None, "seed": 1}
    assert fingerprint(**base) == fingerprint(**dict(reversed(base.items())))
    assert fingerprint(**base) != fingerprint(**{**base, "feedback": "def"})
    assert fingerprint(**base) != fingerprint(**{**base, "seed": 2})


def _write(store: ArtifactStore, path: str, frame: pd.DataFrame) -> None:
    with store.open(path, "wb") as handle:
        frame.to_parquet(handle, index=False)


def test_collect_joins_dedupes_checks_and_counts(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    start = 1_800_000_000
    log = pd.DataFrame(
        {
            "size": [10.0, 20.0, 30.0, 40.0, 500.0, 60.0],
            "colour": ["blue", "red", "blue", "red", "blue", "red"],
            "prediction": [0.1, 0.9, 0.2, 0.8, 0.5, 0.4],
            "request_id": ["a", "b", "c", "c", "e", "f"],
            "ts": [start + i for i in range(6)],
        }
    )
    _write(store, layout.prediction_log_part("toy-model", "1", start, "w1", "n1"), log)
    # a version logged without a feature the current schema needs contributes nothing, counted
    _write(
        store,
        layout.prediction_log_part("toy-model", "2", start, "w1", "n2"),
        log.drop(columns=["colour"]).assign(request_id=["g", "h", "i", "j", "k", "l"]),
    )
    store.write_bytes(layout.prediction_log_part("toy-model", "1", start, "w1", "cut"), b"not parquet")
    labels = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "e", "f", "f", "zz", "g"],
            "label": [0.0, 1.0, 2.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            "ts": [start + 100.0] * 8,
        }
    )
    _write(store, layout.feedback_part("toy-model", date(2027, 1, 15), "w1", "n3"), labels)
    collected = feedback_step.collect(store, spec(), ["size", "colour"], ["0", "1"])
    assert collected.frame["request_id"].tolist() == ["a", "b", "f"]
    assert collected.frame["label"].tolist() == [0, 1, 1]  # f: the first label that came
    skipped = collected.lineage.skipped
    assert skipped["unreadable prediction logs"] == 1
    assert skipped["prediction logged twice (same request id)"] == 1
    assert skipped["size outside [0.0, 100.0]"] == 1  # e
    assert skipped["v2 logged without colour"] == 6
    assert any(k.startswith("label: ") for k in skipped)  # 2 is not a binary label; f's repeat
    assert collected.lineage.versions == ["1"] and collected.lineage.rows == 3


def test_an_empty_store_collects_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    collected = feedback_step.collect(store, spec(), ["size", "colour"], ["0", "1"])
    assert collected.rows == 0 and collected.lineage.versions == []


def test_early_stopping_judges_on_both_parts_so_the_fit_learns_the_feedback() -> None:
    """The latest rows of the timeline are all feedback: a validation period cut from them alone would leave
    the fit without any (early stopping then picks one round and the candidate learns nothing)."""
    from steps.data.split import split

    fed, _ = feedback_dataset(served(400), SCHEMA)
    toy = spec()
    data = combine(source_dataset(), fed, toy, None, SCHEMA)
    parts = split(data.dataset, toy, data.holdout)
    fit, valid = parts.fit.frame, parts.valid.frame
    trained_feedback = 400 - len(parts.test.frame)
    assert valid[FROM_FEEDBACK].sum() == round(trained_feedback * toy.split.valid_fraction)
    assert (~valid[FROM_FEEDBACK]).sum() == round(200 * toy.split.valid_fraction)
    assert fit[FROM_FEEDBACK].sum() == trained_feedback - valid[FROM_FEEDBACK].sum()
    # each part's validation rows are its latest
    assert valid.loc[valid[FROM_FEEDBACK], "served_at"].min() > fit.loc[fit[FROM_FEEDBACK], "served_at"].max()
    assert parts.info["split.method"] == "newest feedback held out"


def test_no_source_and_no_feedback_is_an_empty_timeline_not_a_crash() -> None:
    """An incremental training before any feedback came back: nothing to learn, said by the flow."""
    data = combine(None, None, spec(), None, SCHEMA)
    assert data.dataset.frame.empty and data.holdout is None
    assert set(SCHEMA.names) <= set(data.dataset.frame.columns)
