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


def test_round_trip_without_flywheel_section_keeps_zenml_components(tmp_path: Path) -> None:
    data, _ = to_zenml_dict(load_stack("staging"))
    del data["flywheel"]  # what survives a trip through ZenML itself
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(data))
    imported, warnings = import_zenml_with_warnings(tmp_path / "z.yaml", name="from-zenml")
    original = load_stack("staging")
    for ctype in ("artifact_store", "experiment_tracker", "model_registry", "data_validator"):
        assert imported.component(ctype) == original.component(ctype), ctype
    assert imported.orchestrator.configuration.api_url is None  # ZenML's local orchestrator: ours is default
    assert imported.tuner is None and imported.model_deployer is None and imported.compute is None
    assert warnings == [
        "orchestrator: ZenML flavor 'local' has no Flywheel equivalent; skipped",
        "orchestrator: none that Flywheel can run; added the default Prefect orchestrator (ephemeral API)",
    ]


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
    assert warnings == [
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
    data, _ = to_zenml_dict(load_stack("staging"))
    data["components"]["experiment_tracker"]["configuration"]["tracking_uri"] = "http://other:5000"
    (tmp_path / "z.yaml").write_text(yaml.safe_dump(data))
    stack = import_zenml(tmp_path / "z.yaml", name="edited")
    assert stack.experiment_tracker is not None
    assert stack.experiment_tracker.configuration.tracking_uri == "http://other:5000"
    assert stack.experiment_tracker.configuration.experiment_name == "flywheel"


def test_remote_tracker_without_credentials_warns() -> None:
    _, warnings = to_zenml_dict(load_stack("staging"))
    assert any("requires tracking_username/password or tracking_token" in w for w in warnings)
    _, warnings = to_zenml_dict(load_stack("production"))
    assert not any("requires tracking_username" in w for w in warnings)


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
