"""stacks/zenml_io.py: files that `zenml stack import` accepts, and back, losing nothing of ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.config import StackError, parse_stack
from stacks.loader import imported_stacks_dir, load_stack
from stacks.zenml_io import (
    ZENML_FALLBACK_VERSION,
    export_native,
    export_zenml,
    import_zenml,
    import_zenml_with_warnings,
    to_zenml_dict,
)

SHIPPED = ("local", "staging", "production")

# What ZenML's flavor config classes accept (they forbid extra keys); from zenml-io/zenml:
# LocalArtifactStoreConfig, S3ArtifactStoreConfig, GCPArtifactStoreConfig, AzureArtifactStoreConfig,
# MLFlowExperimentTrackerConfig (+ its settings), MLFlowModelRegistryConfig, WhylogsDataValidatorConfig,
# LocalOrchestratorConfig.
ZENML_CONFIG_KEYS: dict[tuple[str, str], set[str]] = {
    ("artifact_store", "local"): {"path"},
    ("artifact_store", "s3"): {
        "path",
        "key",
        "secret",
        "token",
        "client_kwargs",
        "config_kwargs",
        "s3_additional_kwargs",
        "authentication_secret",
    },
    ("artifact_store", "gcp"): {"path", "authentication_secret"},
    ("artifact_store", "azure"): {"path", "authentication_secret"},
    ("experiment_tracker", "mlflow"): {
        "tracking_uri",
        "tracking_username",
        "tracking_password",
        "tracking_token",
        "tracking_insecure_tls",
        "databricks_host",
        "experiment_name",
        "nested",
        "tags",
    },
    ("model_registry", "mlflow"): set(),
    ("data_validator", "whylogs"): {"enable_whylabs", "dataset_id", "authentication_secret"},
    ("orchestrator", "local"): set(),
}
ZENML_TYPES = {
    "orchestrator",
    "artifact_store",
    "container_registry",
    "step_operator",
    "model_deployer",
    "feature_store",
    "experiment_tracker",
    "alerter",
    "annotator",
    "data_validator",
    "image_builder",
    "model_registry",
}


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_export_is_what_zenml_import_reads(name: str, tmp_path: Path) -> None:
    out = tmp_path / "zenml.yaml"
    warnings = export_zenml(load_stack(name), out)
    data = _read(out)
    # zenml stack import reads data["zenml_version"], data["stack_name"], data["components"].items(),
    # then component_dict["name"], ["flavor"], ["configuration"] (one mapping per type)
    assert data["stack_name"] == name
    assert isinstance(data["zenml_version"], str) and data["zenml_version"]
    assert set(data["components"]) <= ZENML_TYPES
    assert {"orchestrator", "artifact_store"} <= set(data["components"])
    for ctype, component in data["components"].items():
        assert isinstance(component, dict), ctype
        assert {"name", "flavor", "configuration"} <= set(component)
        assert component["type"] == ctype
        allowed = ZENML_CONFIG_KEYS[(ctype, component["flavor"])]
        assert set(component["configuration"]) <= allowed, (ctype, component["configuration"])
    assert any("'prefect' flavor" in w and "'local' orchestrator" in w for w in warnings)
    assert any(w.startswith("tuner: ZenML has no tuner type; skipped") for w in warnings)
    assert any(w.startswith("compute: ZenML has no compute type; skipped") for w in warnings)


def test_zenml_version_written() -> None:
    data, _ = to_zenml_dict(load_stack("local"))
    try:
        import importlib.metadata

        expected = importlib.metadata.version("zenml")
    except importlib.metadata.PackageNotFoundError:
        expected = ZENML_FALLBACK_VERSION
    assert data["zenml_version"] == expected


def test_export_keeps_references(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-SHOULD-NOT-APPEAR")
    monkeypatch.setenv("MLFLOW_PASSWORD", "pw-should-not-appear")
    stack = load_stack("production")
    export_zenml(stack, tmp_path / "z.yaml")
    export_native(stack, tmp_path / "n.yaml")
    for file in ("z.yaml", "n.yaml"):
        text = (tmp_path / file).read_text()
        assert "SHOULD-NOT-APPEAR" not in text and "should-not-appear" not in text
        assert "{{aws.access_key_id}}" in text and "{{mlflow.password}}" in text
    zen = _read(tmp_path / "z.yaml")["components"]
    assert zen["artifact_store"]["configuration"]["key"] == "{{aws.access_key_id}}"
    assert zen["experiment_tracker"]["configuration"]["tracking_password"] == "{{mlflow.password}}"


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_keeps_everything(name: str, tmp_path: Path, home: Path) -> None:
    original = load_stack(name)
    export_zenml(original, tmp_path / "z.yaml")
    imported, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name=f"{name}-copy")
    assert warnings == []
    assert imported.name == f"{name}-copy"
    for ctype in ("artifact_store", "experiment_tracker", "model_registry", "data_validator"):
        assert imported.component(ctype) == original.component(ctype), ctype
    assert imported.to_dict()["components"] == original.to_dict()["components"]
    written = imported_stacks_dir() / f"{name}-copy.yaml"
    assert written.is_file()
    assert load_stack(f"{name}-copy").to_dict() == imported.to_dict()


def _as_zenml_writes_it(data: dict[str, Any]) -> dict[str, Any]:
    """What `zenml stack export` writes for our ZenML part: one-item lists, no `flywheel` section."""
    return {
        "stack_name": data["stack_name"],
        "zenml_version": data["zenml_version"],
        "components": {k: [v] for k, v in data["components"].items()},
    }


def test_round_trip_without_flywheel_section_keeps_zenml_components(tmp_path: Path) -> None:
    data, _ = to_zenml_dict(load_stack("production"))
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(_as_zenml_writes_it(data)))
    imported, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name="from-zenml")
    original = load_stack("production")
    for ctype in ("artifact_store", "experiment_tracker", "model_registry", "data_validator"):
        assert imported.component(ctype) == original.component(ctype), ctype
    assert imported.orchestrator.configuration.api_url is None  # ZenML's local orchestrator: ours is default
    assert imported.tuner is None and imported.model_deployer is None and imported.compute is None
    assert len(warnings) == 2
    assert warnings[0].startswith("no 'flywheel' section (zenml stack export writes none)")
    assert warnings[0].endswith("pass --base STACK to take it from one of your stacks")
    assert warnings[1] == (
        "orchestrator: none that Flywheel can run; added the default Prefect orchestrator (ephemeral API)"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_base_restores_what_zenml_cannot_hold(name: str, tmp_path: Path) -> None:
    original = load_stack(name)
    data, _ = to_zenml_dict(original)
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(_as_zenml_writes_it(data)))
    imported, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name=f"{name}-back", base=original)
    assert warnings == []
    assert imported.to_dict()["components"] == original.to_dict()["components"]


def test_staging_tracker_left_out_of_zenml_and_restored_by_base(tmp_path: Path) -> None:
    staging = load_stack("staging")
    data, _ = to_zenml_dict(staging)
    assert "experiment_tracker" not in data["components"] and "model_registry" not in data["components"]
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(_as_zenml_writes_it(data)))
    alone = import_zenml(tmp_path / "z.yaml", name="no-base")
    assert alone.experiment_tracker is None and alone.model_registry is None
    based = import_zenml(tmp_path / "z.yaml", name="based", base=staging)
    assert based.experiment_tracker == staging.experiment_tracker
    assert based.model_registry == staging.model_registry


def test_zenml_values_win_over_the_base_and_removals_stay(tmp_path: Path) -> None:
    production = load_stack("production")
    data, _ = to_zenml_dict(production)
    zen = _as_zenml_writes_it(data)
    zen["components"]["experiment_tracker"][0]["configuration"]["experiment_name"] = "edited"
    zen["components"]["artifact_store"][0]["configuration"]["client_kwargs"] = {"region_name": "eu-west-1"}
    del zen["components"]["data_validator"]
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(zen))
    stack, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name="edited", base=production)
    assert stack.experiment_tracker is not None and production.experiment_tracker is not None
    assert stack.experiment_tracker.configuration.experiment_name == "edited"
    assert stack.experiment_tracker.configuration.tracking_password == "{{mlflow.password}}"
    assert stack.artifact_store.configuration.storage_options["client_kwargs"] == {"region_name": "eu-west-1"}
    assert stack.artifact_store.configuration.storage_options["key"] == "{{aws.access_key_id}}"
    assert stack.data_validator is None  # removed in ZenML: not brought back from the base
    assert warnings == [
        "data_validator: 'whylogs' of stack 'production' is not in ZenML's stack; not restored"
    ]
    for ctype in ("orchestrator", "model_deployer", "tuner", "compute"):  # ZenML cannot hold these
        assert stack.component(ctype) == production.component(ctype), ctype


def test_renamed_in_zenml_takes_zenml_alone(tmp_path: Path) -> None:
    production = load_stack("production")
    data, _ = to_zenml_dict(production)
    zen = _as_zenml_writes_it(data)
    zen["components"]["data_validator"][0]["name"] = "whylogs-2"
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(zen))
    stack, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name="renamed", base=production)
    assert stack.data_validator is not None and stack.data_validator.name == "whylogs-2"
    assert warnings == [
        "data_validator: ZenML's 'whylogs-2' (whylogs) is not 'whylogs' (whylogs) of stack 'production'; "
        "taken from ZenML alone"
    ]


def test_base_wins_over_the_section_and_is_ignored_for_native_files(tmp_path: Path) -> None:
    export_zenml(load_stack("staging"), tmp_path / "z.yaml")
    stack, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name="s", base=load_stack("staging"))
    assert warnings == ["the file's 'flywheel' section is ignored: --base staging was given"]
    assert stack.to_dict()["components"] == load_stack("staging").to_dict()["components"]
    export_native(load_stack("local"), tmp_path / "n.yaml")
    stack, warnings = import_zenml_with_warnings(tmp_path / "n.yaml", name="n", base=load_stack("staging"))
    assert stack.to_dict()["components"] == load_stack("local").to_dict()["components"]
    assert len(warnings) == 1 and "--base staging ignored" in warnings[0]


def test_export_says_which_zenml_secrets_to_create() -> None:
    _, warnings = to_zenml_dict(load_stack("production"))
    [line] = [w for w in warnings if w.startswith("secrets:")]
    assert line.endswith(
        "zenml secret create aws --access_key_id=... --secret_access_key=...; "
        "zenml secret create mlflow --password=... --username=..."
    )
    _, warnings = to_zenml_dict(load_stack("local"))
    assert not any(w.startswith("secrets:") for w in warnings)


def test_env_references_in_the_zenml_part_are_named(tmp_path: Path) -> None:
    doc = {
        "stack_name": "e",
        "components": {
            "orchestrator": {"name": "o", "flavor": "prefect"},
            "artifact_store": {"name": "a", "flavor": "local", "configuration": {"path": "/data"}},
            "experiment_tracker": {
                "name": "t",
                "flavor": "mlflow",
                "configuration": {"tracking_uri": "https://mlflow", "tracking_token": "${MLFLOW_TOKEN}"},
            },
        },
    }
    _, warnings = to_zenml_dict(parse_stack(doc, "e.yaml"))
    assert (
        "secrets: ZenML reads ${VAR} references as plain text: experiment_tracker.tracking_token = "
        "${MLFLOW_TOKEN}" in warnings
    )


def test_relative_local_paths_are_warned_about() -> None:
    _, warnings = to_zenml_dict(load_stack("local"))
    assert any(w.startswith("artifact_store: path 'artifacts' is relative") for w in warnings)
    assert any(
        w.startswith("experiment_tracker: tracking_uri sqlite:///mlflow.db is relative") for w in warnings
    )


def test_cli_import_with_base(tmp_path: Path, home: Path) -> None:
    from typer.testing import CliRunner

    from stacks.cli import stack_app

    data, _ = to_zenml_dict(load_stack("production"))
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(_as_zenml_writes_it(data)))
    runner = CliRunner()
    result = runner.invoke(
        stack_app, ["import", str(tmp_path / "z.yaml"), "--name", "p2", "--base", "production"]
    )
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert load_stack("p2").to_dict()["components"] == load_stack("production").to_dict()["components"]
    result = runner.invoke(stack_app, ["import", str(tmp_path / "z.yaml"), "--name", "p3", "--base", "nope"])
    assert result.exit_code == 1
    assert "error:" in result.output and "nope" in result.output
    assert not (home / "stacks" / "p3.yaml").exists()


ZENML_EXPORT = """\
stack_name: gcp_stack
zenml_version: 0.60.0
components:
  artifact_store:
    name: gcs_store
    type: artifact_store
    flavor: gcp
    configuration:
      path: gs://my-bucket/zenml
      authentication_secret: gcp_secret
  orchestrator:
    name: kubeflow
    type: orchestrator
    flavor: kubeflow
    configuration:
      kubernetes_context: gke
  container_registry:
    name: gcr
    type: container_registry
    flavor: gcp
    configuration:
      uri: gcr.io/project
  experiment_tracker:
    name: mlflow_tracker
    type: experiment_tracker
    flavor: mlflow
    configuration:
      tracking_uri: https://mlflow.example.com
      tracking_token: "{{mlflow_secret.token}}"
      tracking_insecure_tls: false
  data_validator:
    - name: evidently
      type: data_validator
      flavor: evidently
      configuration: {}
"""


def test_import_a_real_zenml_export(tmp_path: Path, home: Path) -> None:
    src = tmp_path / "gcp.yaml"
    src.write_text(ZENML_EXPORT)
    stack, warnings = import_zenml_with_warnings(src)
    assert stack.name == "gcp_stack"
    assert stack.artifact_store.flavor == "gcs"
    assert stack.artifact_store.configuration.path == "gs://my-bucket/zenml"
    assert stack.experiment_tracker is not None
    assert stack.experiment_tracker.configuration.tracking_token == "{{mlflow_secret.token}}"
    assert stack.orchestrator.flavor == "prefect" and stack.orchestrator.configuration.api_url is None
    assert stack.data_validator is None
    assert warnings[0].startswith("no 'flywheel' section")
    assert warnings[1:] == [
        "artifact_store: ZenML keys ['authentication_secret'] have no Flywheel equivalent; dropped",
        "orchestrator: ZenML flavor 'kubeflow' has no Flywheel equivalent; skipped",
        "container_registry: Flywheel has no 'container_registry' component type; skipped",
        "experiment_tracker: ZenML keys ['tracking_insecure_tls'] have no Flywheel equivalent; dropped",
        "data_validator: ZenML flavor 'evidently' has no Flywheel equivalent; skipped",
        "orchestrator: none that Flywheel can run; added the default Prefect orchestrator (ephemeral API)",
    ]
    written = home / "stacks" / "gcp_stack.yaml"
    assert written.is_file()
    assert "zenml_version" not in written.read_text()  # written in our own format
    assert parse_stack(yaml.safe_load(written.read_text()), str(written)).name == "gcp_stack"


def test_import_logs_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "gcp.yaml"
    src.write_text(ZENML_EXPORT)
    with caplog.at_level("WARNING", logger="stacks.zenml_io"):
        stack = import_zenml(src, name="logged")
    assert stack.name == "logged"
    assert "container_registry: Flywheel has no 'container_registry' component type; skipped" in caplog.text


def test_import_must_still_validate(tmp_path: Path, home: Path) -> None:
    src = tmp_path / "no_store.yaml"
    src.write_text(
        "stack_name: broken\nzenml_version: 0.60.0\ncomponents:\n"
        "  artifact_store: {name: x, type: artifact_store, flavor: custom, configuration: {path: /x}}\n"
    )
    with pytest.raises(StackError, match="missing required component 'artifact_store'"):
        import_zenml(src)
    assert not (home / "stacks" / "broken.yaml").exists()


def test_import_refuses_to_shadow_a_shipped_stack(tmp_path: Path) -> None:
    export_zenml(load_stack("local"), tmp_path / "z.yaml")
    with pytest.raises(StackError, match="'local' is a stack shipped with Flywheel"):
        import_zenml(tmp_path / "z.yaml")


def test_import_native_file(tmp_path: Path) -> None:
    export_native(load_stack("staging"), tmp_path / "n.yaml")
    stack, warnings = import_zenml_with_warnings(tmp_path / "n.yaml", name="staging2")
    assert warnings == []
    assert stack.to_dict()["components"] == load_stack("staging").to_dict()["components"]


def test_export_gcs_uses_zenml_scheme_and_flavor(tmp_path: Path) -> None:
    doc = {
        "stack_name": "g",
        "components": {
            "orchestrator": {"name": "o", "flavor": "prefect"},
            "artifact_store": {
                "name": "a",
                "flavor": "gcs",
                "configuration": {"path": "gcs://bucket/x", "storage_options": {"project": "p"}},
            },
        },
    }
    data, warnings = to_zenml_dict(parse_stack(doc, "g.yaml"))
    assert data["components"]["artifact_store"]["flavor"] == "gcp"
    assert data["components"]["artifact_store"]["configuration"] == {"path": "gs://bucket/x"}
    assert any("storage_options ['project']" in w for w in warnings)


def test_s3_endpoint_url_moves_into_client_kwargs(tmp_path: Path) -> None:
    doc = {
        "stack_name": "s",
        "components": {
            "orchestrator": {"name": "o", "flavor": "prefect"},
            "artifact_store": {
                "name": "a",
                "flavor": "s3",
                "configuration": {"path": "s3://b", "storage_options": {"endpoint_url": "http://minio:9000"}},
            },
        },
    }
    stack = parse_stack(doc, "s.yaml")
    data, _ = to_zenml_dict(stack)
    assert data["components"]["artifact_store"]["configuration"] == {
        "path": "s3://b",
        "client_kwargs": {"endpoint_url": "http://minio:9000"},
    }
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(data))
    back = import_zenml(tmp_path / "z.yaml", name="s3back")
    assert back.artifact_store == stack.artifact_store


def test_changed_values_in_the_zenml_part_win(tmp_path: Path) -> None:
    data, _ = to_zenml_dict(load_stack("production"))
    data["components"]["experiment_tracker"]["configuration"]["tracking_uri"] = "http://other:5000"
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(data))
    stack = import_zenml(tmp_path / "z.yaml", name="edited")
    assert stack.experiment_tracker is not None
    assert stack.experiment_tracker.configuration.tracking_uri == "http://other:5000"
    assert stack.experiment_tracker.configuration.experiment_name == "flywheel"


def test_remote_tracker_without_credentials_is_left_out() -> None:
    # ZenML's MLflow tracker refuses a remote URI without credentials, and its registry needs a tracker
    data, warnings = to_zenml_dict(load_stack("staging"))
    assert "experiment_tracker" not in data["components"] and "model_registry" not in data["components"]
    assert any("refuses the remote tracking_uri http://127.0.0.1:5010 without" in w for w in warnings)
    assert any(w.startswith("model_registry: ZenML's MLflow registry needs an MLflow") for w in warnings)
    data, warnings = to_zenml_dict(load_stack("production"))
    assert {"experiment_tracker", "model_registry"} <= set(data["components"])
    assert not any("refuses the remote" in w for w in warnings)


def test_replaced_orchestrator_falls_back_to_ours_with_warning(tmp_path: Path) -> None:
    data, _ = to_zenml_dict(load_stack("production"))
    data["components"]["orchestrator"]["flavor"] = "kubernetes"
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(data))
    stack, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name="prod2")
    assert stack.orchestrator == load_stack("production").orchestrator
    assert warnings == [
        "orchestrator: ZenML flavor 'kubernetes' has no Flywheel equivalent; using the 'prefect' one "
        "from the 'flywheel' section"
    ]
