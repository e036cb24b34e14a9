"""Label files with anything in them: monitoring keeps the ground truth and counts the rest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from stacks.components.artifact_store import ArtifactStore
from steps.monitor.labels import clean_labels
from steps.monitor.policy import realized_metrics
from steps.monitor.windows import labelled_predictions

GARBAGE = pd.DataFrame(
    {
        "request_id": ["a", "b", "c", "d", "e", "f", "g", "h", None, "a", "i", "j"],
        "label": [1.0, 0.0, 2.0, -1.0, 0.5, 1e308, np.nan, np.inf, 1.0, 0.0, "1", True],
        "ts": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
    }
)


def test_binary_keeps_zeros_and_ones_once() -> None:
    clean = clean_labels(GARBAGE, "binary")
    assert clean.frame["request_id"].tolist() == ["a", "b", "i"]
    assert clean.frame["label"].tolist() == [1.0, 0.0, 1.0]  # "a" keeps its first label; "1" is numeric text
    assert clean.skipped == {
        "bad request id": 1,
        "label not a finite number": 3,
        "label not 0 or 1": 4,
        "repeated request id": 1,
    }
    assert clean.skipped_total == len(GARBAGE) - 3


def test_regression_keeps_finite_numbers() -> None:
    clean = clean_labels(GARBAGE, "regression")
    assert set(clean.frame["request_id"]) == {"a", "b", "c", "d", "e", "f", "i"}
    assert "label not 0 or 1" not in clean.skipped


def test_a_file_without_the_columns_is_skipped_whole() -> None:
    clean = clean_labels(pd.DataFrame({"x": [1, 2]}), "binary")
    assert clean.frame.empty and clean.skipped == {"missing column request_id, label, ts": 2}


def test_store_with_garbage_and_damaged_files(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    predictions = pd.DataFrame(
        {"request_id": list("abcdefghij"), "prediction": np.linspace(0.1, 0.9, 10), "ts": np.arange(10.0)}
    )
    buffer = io.BytesIO()
    predictions.to_parquet(buffer)
    store.write_bytes("serving/m/v1/predictions/20260101/p.parquet", buffer.getvalue())
    labels = io.BytesIO()
    GARBAGE.astype({"label": object}).assign(label=lambda f: f["label"].astype(str)).to_parquet(labels)
    store.write_bytes("serving/m/feedback/20260101/garbage.parquet", labels.getvalue())
    store.write_bytes("serving/m/feedback/20260101/cut-short.parquet", labels.getvalue()[:40])
    store.write_bytes("serving/m/feedback/20260101/not-parquet.parquet", b"label,request_id\n1,a\n")
    labelled = labelled_predictions(store, "m", "1", "binary")
    assert sorted(labelled.frame["request_id"]) == ["a", "b", "i"]
    assert labelled.skipped["unreadable label files"] == 2
    metrics = realized_metrics(labelled.frame, "binary")
    assert metrics["labels"] == 3.0 and 0 <= metrics["log_loss"] < 10


def test_regression_realized_metrics() -> None:
    joined = pd.DataFrame({"prediction": [1.0, 2.0, 3.0], "label": [1.0, 2.0, 5.0]})
    metrics = realized_metrics(joined, "regression")
    assert metrics["mae"] == 2 / 3 and metrics["rmse"] == np.sqrt(4 / 3)


def test_multiclass_labels_are_class_indices() -> None:
    clean = clean_labels(GARBAGE, "multiclass", n_classes=3)
    assert clean.frame["request_id"].tolist() == ["a", "b", "c", "i"]  # 0, 1, 2 and "1"; -1 and 0.5 are not
    assert clean.skipped["label not a class index 0..2"] == 3


def test_multiclass_predicted_classes_join_as_indices(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    logged = pd.DataFrame(
        {"request_id": list("abcd"), "prediction": ["lo", "hi", "mid", "gone"], "ts": np.arange(4.0)}
    )
    buffer = io.BytesIO()
    logged.to_parquet(buffer)
    store.write_bytes("serving/m/v1/predictions/20260101/p.parquet", buffer.getvalue())
    labels = io.BytesIO()
    pd.DataFrame(
        {"request_id": list("abcd"), "label": [1.0, 0.0, 0.0, 2.0], "ts": np.arange(4.0)}
    ).to_parquet(labels)
    store.write_bytes("serving/m/feedback/20260101/l.parquet", labels.getvalue())
    labelled = labelled_predictions(store, "m", "1", "multiclass", ["hi", "lo", "mid"])
    assert labelled.frame.sort_values("request_id")["prediction"].tolist() == [
        1.0,
        0.0,
        2.0,
    ]  # "gone": no class
    metrics = realized_metrics(labelled.frame, "multiclass")
    assert metrics == {"labels": 3.0, "accuracy": 2 / 3, "f1_macro": metrics["f1_macro"]}
    assert 0 < metrics["f1_macro"] < 1


def test_a_column_of_string_ids_and_numeric_labels_is_checked_column_wise_alike() -> None:
    """What the service writes (string ids, float labels) takes the vectorised checks; they keep and count
    exactly what the value-by-value checks do (the same rows with one non-string id among them)."""
    ids = ["a", "", "x" * 301, "x" * 300, "b", "c"]
    numeric = pd.DataFrame({"request_id": ids, "label": [1.0, 1.0, 0.0, 0.0, 2.0, 0.0], "ts": 1.0})
    mixed = numeric.astype({"request_id": object, "label": object})
    mixed.loc[len(mixed)] = [7, 1.0, 1.0]
    fast, slow = clean_labels(numeric, "binary"), clean_labels(mixed, "binary")
    assert fast.frame["request_id"].tolist() == slow.frame["request_id"].tolist() == ["a", "x" * 300, "c"]
    assert fast.skipped == {"bad request id": 2, "label not 0 or 1": 1}
    assert slow.skipped == {"bad request id": 3, "label not 0 or 1": 1}
    flags = pd.DataFrame({"request_id": ["a", "b"], "label": [True, False], "ts": 1.0})
    assert clean_labels(flags, "binary").skipped == {"label not a finite number": 2}
