"""stacks/config.py: every shipped stack validates; every invalid one fails with a precise message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from stacks.config import (
    FLAVORS,
    ArtifactStoreComponent,
    ComponentType,
    DockerDeployerConfig,
    DockerModelDeployer,
    KubernetesDeployerConfig,
    KubernetesModelDeployer,
    LocalDeployerConfig,
    ModelDeployer,
    ModelDeployerComponent,
    Stack,
    StackError,
    parse_stack,
)
from stacks.loader import STACKS_DIR, display_path, load_stack

INVALID_DIR = Path(__file__).parent / "invalid"
SHIPPED = ("local", "staging", "production")

# (file in invalid/, the exact problem the message must state after "<file>: ")
INVALID_CASES = [
    (
        "unknown_top_level_key.yaml",
        "unknown top-level key 'description'; allowed: stack_name, components, zenml_version",
    ),
    (
        "unknown_component_key.yaml",
        "component 'artifact_store' (name 'store', flavor 'local'): unknown key 'pth'; did you mean 'path'?",
    ),
    (
        "unknown_component_entry_key.yaml",
        "component 'orchestrator' (name 'runner', flavor 'prefect'): unknown key 'config'; "
        "did you mean 'configuration'?",
    ),
    (
        "unknown_flavor.yaml",
        "component 'orchestrator' (name 'runner', flavor 'airflow'): unknown flavor 'airflow'; "
        "known flavors for orchestrator: prefect",
    ),
    (
        "unknown_deployer_flavor.yaml",
        "component 'model_deployer' (name 'serving', flavor 'sagemaker'): unknown flavor 'sagemaker'; "
        "known flavors for model_deployer: local, docker, kubernetes",
    ),
    (
        "unknown_deployer_key.yaml",
        "component 'model_deployer' (name 'serving', flavor 'docker'): unknown key 'imgae'; "
        "did you mean 'image'?",
    ),
    (
        "key_of_another_flavor.yaml",
        "component 'model_deployer' (name 'serving', flavor 'local'): unknown key 'replicas'; "
        "flavor 'local' does not take it, flavor 'kubernetes' does",
    ),
    (
        "unknown_nested_key.yaml",
        "component 'data_validator' (name 'whylogs', flavor 'whylogs'): unknown key 'retraining.n_window'; "
        "did you mean 'retraining.n_windows'?",
    ),
    (
        "unknown_component_type.yaml",
        "unknown component type 'feature_store'; known types: orchestrator, artifact_store, "
        "experiment_tracker, model_registry, data_validator, model_deployer, tuner, compute",
    ),
    ("missing_orchestrator.yaml", "missing required component 'orchestrator'"),
    ("missing_artifact_store.yaml", "missing required component 'artifact_store'"),
    (
        "bad_artifact_scheme.yaml",
        "component 'artifact_store' (name 'store', flavor 's3'): key 'path': 'gs://bucket/artifacts' "
        "does not match flavor 's3': expected a URI starting with s3://",
    ),
    (
        "local_artifact_store_with_url.yaml",
        "component 'artifact_store' (name 'store', flavor 'local'): key 'path': 's3://bucket/artifacts' "
        "is a URL but flavor 'local' takes a local folder",
    ),
    (
        "wrong_type.yaml",
        "component 'orchestrator' (name 'runner', flavor 'prefect'): key 'max_workers': "
        "Input should be a valid integer (got 'four')",
    ),
    (
        "out_of_range.yaml",
        "component 'data_validator' (name 'whylogs', flavor 'whylogs'): key 'drift_threshold': "
        "Input should be less than or equal to 1 (got 1.5)",
    ),
    (
        "missing_required_key.yaml",
        "component 'model_deployer' (name 'serving', flavor 'kubernetes'): missing required key 'image'",
    ),
    ("empty.yaml", "the file is empty; a stack needs stack_name and components"),
    ("comment_only.yaml", "the file is empty; a stack needs stack_name and components"),
    ("malformed.yaml", "invalid YAML: line 5, column 4: while parsing a block mapping"),
    (
        "unquoted_secret_ref.yaml",
        "invalid YAML: line 10, column 15: while constructing a mapping; found unhashable key "
        '(secret references must be quoted: key: "{{name.key}}")',
    ),
    (
        "duplicate_component_list.yaml",
        "component 'orchestrator': 2 components given ('first', 'second'); a stack has at most one per type",
    ),
    (
        "duplicate_component_key.yaml",
        "invalid YAML: line 5, column 3: duplicate key 'orchestrator' (first at line 3)",
    ),
    ("missing_stack_name.yaml", "missing required top-level key 'stack_name'"),
    (
        "registry_without_tracker.yaml",
        "component 'model_registry' (name 'registry', flavor 'mlflow'): registry_uri is null and the stack "
        "has no experiment_tracker",
    ),
    (
        "dask_address_with_threads.yaml",
        "component 'orchestrator' (name 'runner', flavor 'prefect'): dask_address is set but task_runner is "
        "'threads'",
    ),
    (
        "tuner_storage_not_url.yaml",
        "component 'tuner' (name 'optuna', flavor 'optuna'): key 'storage': storage must be a SQLAlchemy URL",
    ),
    (
        "type_mismatch.yaml",
        "component 'orchestrator' (name 'runner', flavor 'prefect'): key 'type' is 'tuner' but the entry "
        "is under 'orchestrator'",
    ),
    ("not_a_mapping.yaml", "expected a mapping with stack_name and components, got a list"),
    (
        "plain_auth_token.yaml",
        "component 'model_deployer' (name 'serving', flavor 'local'): key 'auth_token' holds a plain-text "
        "secret (not shown); a stack file holds no credentials: write a secret reference instead, "
        '"{{serving.auth_token}}" (read from the environment variable SERVING_AUTH_TOKEN or the Prefect '
        "Secret block 'serving-auth-token') or \"${SERVING_AUTH_TOKEN}\"",
    ),
    (
        "url_with_password.yaml",
        "component 'tuner' (name 'optuna', flavor 'optuna'): key 'storage' is a URL with a password inline "
        "(postgresql://flywheel:***@127.0.0.1:5433/optuna); a stack file holds no credentials: make the "
        'whole URL a secret reference, "{{optuna.storage}}" (read from the environment variable '
        "OPTUNA_STORAGE or the Prefect Secret block 'optuna-storage') or \"${OPTUNA_STORAGE}\"",
    ),
]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_stack_loads(name: str) -> None:
    stack = load_stack(name)
    assert stack.name == name  # the file name is the stack's name
    assert stack.source.endswith(f"{name}.yaml")
    assert stack.orchestrator.flavor == "prefect"
    assert stack.experiment_tracker is not None and stack.model_registry is not None
    assert stack.data_validator is not None and stack.model_deployer is not None
    assert stack.tuner is not None and stack.compute is not None


def test_every_shipped_file_is_covered() -> None:
    assert sorted(p.stem for p in STACKS_DIR.glob("*.yaml")) == sorted(SHIPPED)


SECRET_KEYS = {
    "key",
    "secret",
    "token",
    "tracking_password",
    "tracking_username",
    "tracking_token",
    "auth_token",
}


def _walk(obj: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in _walk(v, str(k))]
    if isinstance(obj, list):
        return [pair for v in obj for pair in _walk(v, key)]
    return [(key, obj)]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_secrets_are_references_only(name: str) -> None:
    doc = yaml.safe_load((STACKS_DIR / f"{name}.yaml").read_text())
    for key, value in _walk(doc):
        if key in SECRET_KEYS and value is not None:
            assert isinstance(value, str) and (value.startswith("{{") or value.startswith("${")), (key, value)
        if isinstance(value, str) and "://" in value and "@" in value:
            pytest.fail(f"{name}.yaml: credentials inside a URL: {key}")


def test_local_stack_values() -> None:
    stack = load_stack("local")
    assert stack.orchestrator.configuration.api_url is None
    assert stack.orchestrator.configuration.task_runner == "threads"
    assert stack.orchestrator.configuration.max_workers == 4
    assert stack.artifact_store.flavor == "local"
    assert stack.artifact_store.configuration.path == "artifacts"
    assert stack.experiment_tracker is not None
    assert stack.experiment_tracker.configuration.tracking_uri == "sqlite:///mlflow.db"
    assert stack.experiment_tracker.configuration.experiment_name == "flywheel"
    assert stack.model_registry is not None and stack.model_registry.configuration.registry_uri is None
    assert stack.model_deployer is not None and isinstance(
        stack.model_deployer.configuration, LocalDeployerConfig
    )
    assert stack.model_deployer.configuration.port == 8080
    assert stack.tuner is not None and stack.tuner.configuration.storage == "sqlite:///optuna.db"
    assert stack.compute is not None and stack.compute.configuration.device == "cpu"
    assert stack.secret_refs() == []


def test_staging_and_production_values() -> None:
    staging = load_stack("staging")
    assert staging.orchestrator.configuration.api_url == "http://127.0.0.1:4210/api"
    assert staging.orchestrator.configuration.work_pool == "staging-process"
    assert staging.artifact_store.flavor == "s3"
    assert staging.artifact_store.configuration.storage_options["client_kwargs"] == {
        "endpoint_url": "http://127.0.0.1:5055"
    }
    assert staging.model_deployer is not None and staging.model_deployer.configuration.port == 8081
    production = load_stack("production")
    assert production.orchestrator.configuration.task_runner == "dask"
    assert production.orchestrator.configuration.work_pool_type == "kubernetes"
    assert (
        production.orchestrator.configuration.job_variables["image"] == "ghcr.io/flywheel-ml/flywheel:latest"
    )
    assert production.model_deployer is not None
    assert isinstance(production.model_deployer.configuration, KubernetesDeployerConfig)
    assert production.model_deployer.configuration.replicas == 3


@pytest.mark.parametrize(("filename", "expected"), INVALID_CASES)
def test_invalid_stack_fails_precisely(filename: str, expected: str) -> None:
    path = INVALID_DIR / filename
    with pytest.raises(StackError) as info:
        load_stack(str(path))
    message = str(info.value)
    assert f"{display_path(path)}: {expected}" in message, message
    assert len(message.splitlines()) == 1, message  # one problem per file: nothing else may fire


def test_every_invalid_file_has_a_case() -> None:
    assert sorted(p.name for p in INVALID_DIR.glob("*.yaml")) == sorted(f for f, _ in INVALID_CASES)


def test_all_problems_reported_one_line_each(minimal: Callable[..., dict[str, Any]]) -> None:
    doc = minimal(
        orchestrator={"name": "o", "flavor": "prefect", "configuration": {"max_workers": 0, "bogus": 1}},
        tuner={"name": "t", "flavor": "hyperopt"},
    )
    doc["extra"] = True
    with pytest.raises(StackError) as info:
        parse_stack(doc, "f.yaml")
    lines = str(info.value).splitlines()
    assert lines == [
        "f.yaml: unknown top-level key 'extra'; allowed: stack_name, components, zenml_version",
        "f.yaml: component 'orchestrator' (name 'o', flavor 'prefect'): key 'max_workers': "
        "Input should be greater than or equal to 1 (got 0)",
        "f.yaml: component 'orchestrator' (name 'o', flavor 'prefect'): unknown key 'bogus'",
        "f.yaml: component 'tuner' (name 't', flavor 'hyperopt'): unknown flavor 'hyperopt'; "
        "known flavors for tuner: optuna",
    ]


def test_strict_types_no_coercion(minimal: Callable[..., dict[str, Any]]) -> None:
    doc = minimal(model_deployer={"name": "d", "flavor": "local", "configuration": {"port": "8080"}})
    with pytest.raises(StackError, match=r"key 'port': Input should be a valid integer \(got '8080'\)"):
        parse_stack(doc, "f.yaml")


def test_single_item_list_accepted(minimal: Callable[..., dict[str, Any]]) -> None:
    doc = minimal()
    doc["components"]["orchestrator"] = [doc["components"]["orchestrator"]]
    doc["zenml_version"] = "0.98.0"
    assert parse_stack(doc, "f.yaml").orchestrator.name == "runner"


def test_models_are_frozen() -> None:
    stack = load_stack("local")
    with pytest.raises(pydantic.ValidationError):
        stack.orchestrator.configuration.max_workers = 8  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        stack.name = "other"  # type: ignore[misc]


def test_components_in_type_order() -> None:
    stack = load_stack("local")
    assert [c.type for c in stack.components()] == list(ComponentType)
    assert stack.component("tuner") is stack.tuner


def test_flavor_picks_the_configuration_model(minimal: Callable[..., dict[str, Any]]) -> None:
    deployers = pydantic.TypeAdapter(ModelDeployer)
    docker = deployers.validate_python({"name": "d", "flavor": "docker", "configuration": {"port": 9000}})
    assert isinstance(docker, DockerModelDeployer) and isinstance(docker.configuration, DockerDeployerConfig)
    local = deployers.validate_python({"name": "d", "flavor": "local", "configuration": {"port": 9000}})
    assert isinstance(local.configuration, LocalDeployerConfig) and local.configuration.port == 9000
    assert isinstance(local, ModelDeployerComponent)  # every flavor's class is the type's component
    stack = parse_stack(
        minimal(
            model_deployer={
                "name": "d",
                "flavor": "kubernetes",
                "type": "model_deployer",
                "configuration": {"image": "i"},
            }
        ),
        "f.yaml",
    )
    assert isinstance(stack.model_deployer, KubernetesModelDeployer)
    assert stack.model_deployer.configuration.replicas == KubernetesDeployerConfig(image="i").replicas


def test_flavor_and_configuration_must_agree() -> None:
    with pytest.raises(pydantic.ValidationError, match="takes a DockerDeployerConfig configuration"):
        ModelDeployerComponent(name="d", flavor="docker", configuration=LocalDeployerConfig())
    with pytest.raises(pydantic.ValidationError, match="does not match flavor 'gcs'"):
        ArtifactStoreComponent(name="a", flavor="gcs", configuration={"path": "s3://b"})  # type: ignore[arg-type]


def test_flavor_table_read_off_the_stack() -> None:
    assert FLAVORS[ComponentType.MODEL_DEPLOYER] == {
        "local": LocalDeployerConfig,
        "docker": DockerDeployerConfig,
        "kubernetes": KubernetesDeployerConfig,
    }
    assert list(FLAVORS[ComponentType.ARTIFACT_STORE]) == ["local", "s3", "gcs", "azure"]
    assert set(FLAVORS) == set(ComponentType)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"name": "d", "configuration": {}},
            "component 'model_deployer' (name 'd'): missing required key 'flavor'; "
            "known flavors for model_deployer: local, docker, kubernetes",
        ),
        (
            {"name": "d", "flavor": "local", "configuration": [1]},
            "component 'model_deployer' (name 'd', flavor 'local'): key 'configuration' must be a mapping "
            "(got a list)",
        ),
        (
            {"name": "d", "flavor": "docker", "type": "tuner"},
            "component 'model_deployer' (name 'd', flavor 'docker'): key 'type' is 'tuner' but the entry is "
            "under 'model_deployer'",
        ),
        (
            {"name": "d", "flavor": "local", "configuration": {"image": "x"}},
            "component 'model_deployer' (name 'd', flavor 'local'): unknown key 'image'; flavor 'local' does "
            "not take it, flavors 'docker', 'kubernetes' do",
        ),
        (
            {"name": "d", "flavor": "local", "configuration": {"server": {"max_conections": 3}}},
            "component 'model_deployer' (name 'd', flavor 'local'): unknown key 'server.max_conections'; "
            "did you mean 'server.max_connections'?",
        ),
        (
            None,
            "component 'model_deployer': expected a mapping with name, flavor and configuration, got None",
        ),
        ([], "component 'model_deployer': empty list; give one mapping with name, flavor and configuration"),
    ],
)
def test_entry_errors_name_component_and_key(
    minimal: Callable[..., dict[str, Any]], entry: Any, expected: str
) -> None:
    with pytest.raises(StackError) as info:
        parse_stack(minimal(model_deployer=entry), "f.yaml")
    assert str(info.value) == f"f.yaml: {expected}"


def test_unknown_flavor_hides_its_configuration_errors(minimal: Callable[..., dict[str, Any]]) -> None:
    doc = minimal(tuner={"name": "t", "flavor": "hyperopt", "configuration": {"trials": 5}})
    with pytest.raises(StackError) as info:
        parse_stack(doc, "f.yaml")
    assert str(info.value) == (
        "f.yaml: component 'tuner' (name 't', flavor 'hyperopt'): unknown flavor 'hyperopt'; "
        "known flavors for tuner: optuna"
    )


@pytest.mark.parametrize(
    ("flavor", "path"),
    [
        ("s3", "s3://b/a"),
        ("gcs", "gs://b/a"),
        ("gcs", "gcs://b"),
        ("azure", "az://c/a"),
        ("azure", "abfs://c/a"),
    ],
)
def test_artifact_schemes_accepted(flavor: str, path: str) -> None:
    store = ArtifactStoreComponent(name="a", flavor=flavor, configuration={"path": path})  # type: ignore[arg-type]
    assert store.configuration.path == path


def test_require_secrets_names_file_component_and_key(
    monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    shown = display_path(STACKS_DIR / "staging.yaml")
    doc = yaml.safe_load((STACKS_DIR / "staging.yaml").read_text())
    # its Prefect server moved to a port nobody listens on: a staging server running here has the blocks
    doc["components"]["orchestrator"]["configuration"]["api_url"] = f"http://127.0.0.1:{free_port}/api"
    stack = parse_stack(doc, shown)
    monkeypatch.setenv("S3_ACCESS_KEY", "VALUE-THAT-MUST-NOT-LEAK")
    with pytest.raises(StackError) as info:
        stack.require_secrets()
    lines = str(info.value).splitlines()
    assert lines[0].startswith(
        f"{shown}: component 'artifact_store' (name 's3-staging', flavor 's3'): "
        "key 'storage_options.secret': secret reference {{s3.secret_key}} is not set: "
        "set the environment variable S3_SECRET_KEY"
    )
    assert lines[1].startswith(
        f"{shown}: component 'tuner' (name 'optuna-postgres', flavor 'optuna'): key 'storage': "
        "secret reference {{optuna.db_url}} is not set: "
        "set the environment variable OPTUNA_DB_URL"
    )
    assert lines[2].startswith(
        f"{shown}: component 'prediction_store' (name 'predictions-postgres', flavor 'sql'): key 'url': "
        "secret reference {{predictions.db_url}} is not set: "
        "set the environment variable PREDICTIONS_DB_URL"
    )
    assert lines[3].startswith(
        f"{shown}: component 'stream' (name 'redis-staging', flavor 'redis'): key 'url': "
        "secret reference {{redis.url}} is not set: set the environment variable REDIS_URL"
    )
    assert len(lines) == 4
    assert "VALUE-THAT-MUST-NOT-LEAK" not in str(info.value)


def test_require_secrets_passes_when_all_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "OPTUNA_DB_URL", "PREDICTIONS_DB_URL", "REDIS_URL"):
        monkeypatch.setenv(var, "x")
    load_stack("staging").require_secrets()
    load_stack("local").require_secrets()


def test_loading_does_not_resolve_secrets() -> None:
    stack = load_stack("production")  # no secret set: loading must still work
    assert ("mlflow-production", "tracking_password", "{{mlflow.password}}") in stack.secret_refs()
    assert stack.artifact_store.configuration.storage_options["key"] == "{{aws.access_key_id}}"


def test_accessors_resolve_paths_and_uris(home: Path) -> None:
    stack = load_stack("local")
    assert stack.artifact_root() == str(home / "artifacts")
    assert stack.mlflow_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}"
    assert stack.mlflow_registry_uri() == stack.mlflow_tracking_uri()
    assert stack.optuna_storage() == f"sqlite:///{home / 'optuna.db'}"
    assert stack.storage_options() == {}
    assert stack.mlflow_env() == {}


def test_accessors_resolve_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_OPTUNA_DB_URL", "postgresql://u:p@db/optuna")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    monkeypatch.setenv("MLFLOW_USERNAME", "me")
    monkeypatch.setenv("MLFLOW_PASSWORD", "pw")
    stack = load_stack("production")
    assert stack.artifact_root() == "s3://flywheel-production/artifacts"
    assert stack.optuna_storage() == "postgresql://u:p@db/optuna"
    assert stack.storage_options()["key"] == "ak"
    assert stack.mlflow_tracking_uri() == "https://mlflow.example.internal"
    assert stack.mlflow_env() == {"MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "pw"}
    # the model still holds references
    assert stack.artifact_store.configuration.storage_options["key"] == "{{aws.access_key_id}}"


def test_registry_uri_overrides_tracker(minimal: Callable[..., dict[str, Any]], home: Path) -> None:
    doc = minimal(
        experiment_tracker={
            "name": "t",
            "flavor": "mlflow",
            "configuration": {"tracking_uri": "http://t:5000"},
        },
        model_registry={
            "name": "r",
            "flavor": "mlflow",
            "configuration": {"registry_uri": "sqlite:///reg.db"},
        },
    )
    stack = parse_stack(doc, "f.yaml")
    assert stack.mlflow_registry_uri() == f"sqlite:///{home / 'reg.db'}"


def test_optional_components_absent(minimal: Callable[..., dict[str, Any]]) -> None:
    stack = parse_stack(minimal(), "f.yaml")
    assert stack.experiment_tracker is None and stack.tuner is None
    assert stack.mlflow_tracking_uri() is None and stack.mlflow_registry_uri() is None
    assert stack.optuna_storage() is None
    assert isinstance(stack, Stack)
