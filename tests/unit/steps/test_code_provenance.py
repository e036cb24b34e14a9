"""What training records for a reproduction: code provenance and the champion it trained against, as tags
and back; and what provenance says outside a git checkout."""

from __future__ import annotations

from pathlib import Path

from flywheel.contracts.model_version import (
    CODE_COMMIT_TAG,
    CodeProvenance,
    TrainingRecord,
    VersionTags,
)
from steps.model.provenance import LIBRARIES, ROOT, capture


def test_code_provenance_round_trips_through_tags() -> None:
    recorded = CodeProvenance("a" * 40, "false", "b" * 64, {"xgboost": "3.2.0", "numpy": "2.4.6"})
    tags = recorded.to_tags()
    assert tags[CODE_COMMIT_TAG] == "a" * 40 and tags["flywheel.lib.xgboost"] == "3.2.0"
    assert VersionTags(tags).code == recorded


def test_a_version_without_provenance_reads_as_none() -> None:
    assert VersionTags({"flywheel.training.mode": "full"}).code is None


def test_training_record_keeps_the_champion_it_trained_against() -> None:
    record = TrainingRecord(mode="full", champion_version="3", champion_feedback_until=1_700_000_000.123456)
    back = TrainingRecord.from_tags(record.to_tags())
    assert back.champion_version == "3" and back.champion_feedback_until == 1_700_000_000.123456
    assert TrainingRecord.from_tags(TrainingRecord().to_tags()).champion_feedback_until is None


def test_outside_a_git_checkout_the_code_is_unknown(tmp_path: Path) -> None:
    found = capture(tmp_path)
    assert found.commit == found.dirty == found.lock_sha256 == "unknown"
    assert set(found.libraries) >= {*LIBRARIES, "python"}


def test_in_this_tree_the_commit_and_lock_are_found() -> None:
    found = capture()
    assert len(found.lock_sha256) == 64
    if (ROOT / ".git").exists():
        assert len(found.commit) == 40 and found.dirty in {"true", "false"}
    else:  # an unpacked tree: no commit to name
        assert found.commit == found.dirty == "unknown"


def test_an_incremental_version_without_its_base_says_so(tmp_path: Path) -> None:
    from flywheel.contracts.model_version import ModelVersion
    from flywheel.reproduce import reproduce
    from stacks.components.artifact_store import ArtifactStore

    # grown from a champion it does not name (tags written by hand): nothing to continue from
    tags = TrainingRecord(mode="incremental").to_tags()
    mv = ModelVersion("flight-delay", "5", "run-5", tags=VersionTags(tags))
    report = reproduce(mv, ArtifactStore(str(tmp_path)))
    assert not report.reproduced
    assert (
        "cannot reproduce: the incremental version records no champion version it continued" in report.text()
    )
