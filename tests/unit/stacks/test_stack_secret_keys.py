"""stacks/secret_keys.py: plain-text credentials are refused at load time and masked in every output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from stacks.cli import stack_app
from stacks.config import LocalDeployerConfig, MlflowTrackerConfig, StackError, parse_stack
from stacks.loader import load_stack
from stacks.secret_keys import (
    has_inline_password,
    is_secret_key,
    mask_tree,
    mask_url,
    plain_secrets,
    redact,
)
from stacks.zenml_io import import_zenml_with_warnings, to_zenml_dict

PLAIN = "PlainTok3n-distinctive"
PASSWORD = "Pw-distinctive-9"

runner = CliRunner()


# --------------------------------------------------------------------------- which keys, which URLs


@pytest.mark.parametrize(
    "key",
    [
        "auth_token",
        "tracking_password",
        "tracking_token",
        "key",
        "secret",
        "token",
        "password",
        "aws_secret_access_key",
        "aws_session_token",
        "client_secret",
        "account_key",
        "sas_token",
        "connection_string",
        "HF_TOKEN",
        "DB_PASSWORD",
        "S3_ACCESS_KEY",
        "PREFECT_API_KEY",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["tracking_username", "endpoint_url", "region_name", "path", "api_url", "image", "LOG_LEVEL", "port"],
)
def test_not_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@host/db", "postgresql://u:***@host/db"),
        (
            "postgresql+psycopg2://flywheel:pw@127.0.0.1:5433/optuna",
            "postgresql+psycopg2://flywheel:***@127.0.0.1:5433/optuna",
        ),
        (
            "mysql+pymysql://u:p%40w@host:3306/db?charset=utf8",
            "mysql+pymysql://u:***@host:3306/db?charset=utf8",
        ),
        ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),  # SQLAlchemy's reading: '/' in it
        ("https://user:tok@mlflow.example/path?x=1", "https://user:***@mlflow.example/path?x=1"),
        ("http://u:p@ss@minio:9000", "http://u:***@minio:9000"),  # the last '@' ends the user info
    ],
)
def test_urls_with_inline_passwords(url: str, masked: str) -> None:
    assert has_inline_password(url)
    assert mask_url(url) == masked
    assert redact(f"cannot connect to {url}: refused") == f"cannot connect to {masked}: refused"


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://flywheel@host/db",  # a user name alone is no secret
        "postgresql://u:@host/db",
        "http://host:8080/path@v1",  # a port, then an '@' in the path
        "tcp://dask-scheduler:8786",
        "s3://bucket/key@v2",
        "sqlite:///optuna.db",
        "${FLYWHEEL_OPTUNA_DB_URL}",
        "{{optuna.db_url}}",
        "user:pw@host",  # no scheme: not a URL
        "",
    ],
)
def test_values_without_inline_passwords(value: str) -> None:
    assert not has_inline_password(value)
    assert mask_url(value) == value


def test_plain_secrets_finds_values_under_secret_keys_and_urls() -> None:
    tree = {
        "path": "s3://b/a",
        "storage_options": {
            "key": "{{s3.key}}",
            "secret": PLAIN,
            "anon": False,
            "client_kwargs": {"endpoint_url": f"http://u:{PASSWORD}@minio", "aws_session_token": 12345},
        },
        "tracking_password": None,
        "auth_token": "",
    }
    found = {f.key: f for f in plain_secrets(tree)}
    assert sorted(found) == [
        "storage_options.client_kwargs.aws_session_token",
        "storage_options.client_kwargs.endpoint_url",
        "storage_options.secret",
    ]
    assert found["storage_options.client_kwargs.endpoint_url"].shown == "http://u:***@minio"
    assert found["storage_options.secret"].shown == "********"
    masked = mask_tree(tree)
    assert masked["storage_options"]["key"] == "{{s3.key}}"  # a reference is shown as the reference
    assert masked["storage_options"]["secret"] == "********"
    assert masked["storage_options"]["client_kwargs"] == {
        "endpoint_url": "http://u:***@minio",
        "aws_session_token": "********",
    }
    assert masked["path"] == "s3://b/a" and masked["storage_options"]["anon"] is False


def test_gcsfs_token_modes_and_files_are_not_credentials() -> None:
    for token in ("google_default", "anon", "cloud", "/secrets/service-account.json"):
        assert plain_secrets({"storage_options": {"token": token}}) == []
        assert mask_tree({"token": token}) == {"token": token}
    assert [f.key for f in plain_secrets({"storage_options": {"token": {"private_key": "k"}}})] == [
        "storage_options.token.private_key"
    ]


# --------------------------------------------------------------------------- refused at load time


@pytest.mark.parametrize(
    ("ctype", "entry", "key", "ref"),
    [
        (
            "model_deployer",
            {"name": "s", "flavor": "local", "configuration": {"auth_token": PLAIN}},
            "auth_token",
            "{{serving.auth_token}}",
        ),
        (
            "model_deployer",
            {"name": "s", "flavor": "docker", "configuration": {"env": {"HF_TOKEN": PLAIN}}},
            "env.HF_TOKEN",
            "{{serving.hf_token}}",
        ),
        (
            "model_deployer",
            {"name": "s", "flavor": "kubernetes", "configuration": {"image": "i", "auth_token": PLAIN}},
            "auth_token",
            "{{serving.auth_token}}",
        ),
        (
            "experiment_tracker",
            {
                "name": "m",
                "flavor": "mlflow",
                "configuration": {"tracking_uri": "http://m", "tracking_token": PLAIN},
            },
            "tracking_token",
            "{{mlflow.tracking_token}}",
        ),
        (
            "experiment_tracker",
            {
                "name": "m",
                "flavor": "mlflow",
                "configuration": {
                    "tracking_uri": "http://m",
                    "tracking_username": "u",
                    "tracking_password": PLAIN,
                },
            },
            "tracking_password",
            "{{mlflow.tracking_password}}",
        ),
        (
            "artifact_store",
            {
                "name": "a",
                "flavor": "s3",
                "configuration": {
                    "path": "s3://b/a",
                    "storage_options": {"key": "{{s3.key}}", "secret": PLAIN},
                },
            },
            "storage_options.secret",
            "{{storage.secret}}",
        ),
        (
            "artifact_store",
            {
                "name": "a",
                "flavor": "s3",
                "configuration": {
                    "path": "s3://b/a",
                    "storage_options": {"client_kwargs": {"aws_secret_access_key": PLAIN}},
                },
            },
            "storage_options.client_kwargs.aws_secret_access_key",
            "{{storage.aws_secret_access_key}}",
        ),
        (
            "artifact_store",
            {
                "name": "a",
                "flavor": "azure",
                "configuration": {"path": "az://c/a", "storage_options": {"account_key": PLAIN}},
            },
            "storage_options.account_key",
            "{{storage.account_key}}",
        ),
        (
            "orchestrator",
            {
                "name": "runner",
                "flavor": "prefect",
                "configuration": {"job_variables": {"env": {"DB_PASSWORD": PLAIN}}},
            },
            "job_variables.env.DB_PASSWORD",
            "{{prefect.db_password}}",
        ),
    ],
)
def test_a_plain_secret_is_refused_naming_file_component_key_and_reference(
    ctype: str,
    entry: dict[str, Any],
    key: str,
    ref: str,
    minimal: Callable[..., dict[str, Any]],
    write_stack: Callable[..., Path],
) -> None:
    path = write_stack(minimal(**{ctype: entry}))
    with pytest.raises(StackError) as info:
        load_stack(str(path))
    message = str(info.value)
    assert PLAIN not in message
    assert message.startswith(
        f"{path}: component '{ctype}' (name '{entry['name']}', flavor '{entry['flavor']}'): "
    )
    assert f"key '{key}' holds a plain-text secret (not shown)" in message
    var = ref.strip("{}").replace(".", "_").upper()
    block = ref.strip("{}").replace(".", "-").replace("_", "-")
    assert (
        f"\"{ref}\" (read from the environment variable {var} or the Prefect Secret block '{block}')"
        in message
    )
    assert f'or "${{{var}}}"' in message
    assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize(
    ("ctype", "entry", "key"),
    [
        (
            "experiment_tracker",
            {
                "name": "m",
                "flavor": "mlflow",
                "configuration": {"tracking_uri": f"postgresql://u:{PASSWORD}@db/m"},
            },
            "tracking_uri",
        ),
        (
            "model_registry",
            {
                "name": "r",
                "flavor": "mlflow",
                "configuration": {"registry_uri": f"mysql+pymysql://u:{PASSWORD}@db/r"},
            },
            "registry_uri",
        ),
        (
            "tuner",
            {
                "name": "t",
                "flavor": "optuna",
                "configuration": {"storage": f"postgresql://u:{PASSWORD}@db/o"},
            },
            "storage",
        ),
        (
            "orchestrator",
            {
                "name": "runner",
                "flavor": "prefect",
                "configuration": {"api_url": f"https://u:{PASSWORD}@p/api"},
            },
            "api_url",
        ),
        (
            "artifact_store",
            {
                "name": "a",
                "flavor": "s3",
                "configuration": {
                    "path": "s3://b/a",
                    "storage_options": {"client_kwargs": {"endpoint_url": f"http://u:{PASSWORD}@minio:9000"}},
                },
            },
            "storage_options.client_kwargs.endpoint_url",
        ),
    ],
)
def test_a_url_with_a_password_is_refused_and_shown_masked(
    ctype: str,
    entry: dict[str, Any],
    key: str,
    minimal: Callable[..., dict[str, Any]],
    write_stack: Callable[..., Path],
) -> None:
    doc = minimal(**{ctype: entry})
    if ctype == "model_registry":
        doc["components"]["experiment_tracker"] = {
            "name": "m",
            "flavor": "mlflow",
            "configuration": {"tracking_uri": "sqlite:///mlflow.db"},
        }
    path = write_stack(doc)
    with pytest.raises(StackError) as info:
        load_stack(str(path))
    message = str(info.value)
    assert PASSWORD not in message
    assert f"key '{key}' is a URL with a password inline (" in message and ":***@" in message
    assert "make the whole URL a secret reference" in message


def test_references_user_names_and_no_credentials_load(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path]
) -> None:
    doc = minimal(
        model_deployer={"name": "s", "flavor": "local", "configuration": {"auth_token": "${SERVING_TOKEN}"}},
        experiment_tracker={
            "name": "m",
            "flavor": "mlflow",
            "configuration": {"tracking_uri": "postgresql://flywheel@db/mlflow", "tracking_token": "{{m.t}}"},
        },
        tuner={"name": "t", "flavor": "optuna", "configuration": {"storage": "{{optuna.db_url}}"}},
    )
    stack = load_stack(str(write_stack(doc)))
    assert stack.model_deployer is not None
    assert stack.model_deployer.configuration.auth_token == "${SERVING_TOKEN}"


def test_models_built_in_code_refuse_too_without_echoing() -> None:
    with pytest.raises(ValidationError) as info:
        LocalDeployerConfig(auth_token=PLAIN)
    assert PLAIN not in str(info.value) and "key 'auth_token' holds a plain-text secret" in str(info.value)
    with pytest.raises(ValidationError) as info:
        MlflowTrackerConfig(tracking_uri=f"postgresql://u:{PASSWORD}@db/m")
    assert PASSWORD not in str(info.value)


def test_errors_about_other_problems_do_not_echo_secrets(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path]
) -> None:
    doc = minimal(
        orchestrator={
            "name": "runner",
            "flavor": "prefect",
            "configuration": {"api_url": f"ftp://u:{PASSWORD}@h"},
        },
        model_deployer={"name": "s", "flavor": "local", "configuration": {"auth_token": 987654321}},
    )
    with pytest.raises(StackError) as info:
        load_stack(str(write_stack(doc)))
    message = str(info.value)
    assert PASSWORD not in message and "987654321" not in message
    assert "api_url must be an http(s) URL such as http://127.0.0.1:4200/api (got 'ftp://u:***@h')" in message
    assert "key 'auth_token': Input should be a valid string (got a int, not shown)" in message


# --------------------------------------------------------------------------- masked in every output


def _smuggled(minimal: Callable[..., dict[str, Any]]) -> Any:
    """A stack holding plain credentials the way only code can: copied past validation."""
    doc = minimal(
        model_deployer={"name": "s", "flavor": "local", "configuration": {}},
        experiment_tracker={"name": "m", "flavor": "mlflow", "configuration": {"tracking_uri": "http://m"}},
    )
    stack = parse_stack(doc, "smuggled.yaml")
    assert stack.model_deployer is not None and stack.experiment_tracker is not None
    deployer = stack.model_deployer.model_copy(
        update={"configuration": stack.model_deployer.configuration.model_copy(update={"auth_token": PLAIN})}
    )
    tracker_cfg = stack.experiment_tracker.configuration.model_copy(
        update={"tracking_uri": f"https://u:{PASSWORD}@mlflow.example", "tracking_token": PLAIN}
    )
    tracker = stack.experiment_tracker.model_copy(update={"configuration": tracker_cfg})
    return stack.model_copy(update={"model_deployer": deployer, "experiment_tracker": tracker})


def test_dumps_reprs_and_zenml_exports_mask_what_validation_would_refuse(
    minimal: Callable[..., dict[str, Any]],
) -> None:
    stack = _smuggled(minimal)
    for text in (
        yaml.safe_dump(stack.to_dict()),
        yaml.safe_dump(to_zenml_dict(stack)[0]),
        "\n".join(to_zenml_dict(stack)[1]),
        repr(stack),
        str(stack.model_deployer.configuration),
    ):
        assert PLAIN not in text and PASSWORD not in text, text
    components = stack.to_dict()["components"]
    assert components["model_deployer"]["configuration"]["auth_token"] == "********"
    assert components["experiment_tracker"]["configuration"]["tracking_uri"] == "https://u:***@mlflow.example"


def test_masking_leaves_a_valid_stack_unchanged() -> None:
    for name in ("local", "staging", "production"):
        stack = load_stack(name)
        raw = {c.type.value: c.configuration.model_dump(mode="json") for c in stack.components()}
        assert {k: v["configuration"] for k, v in stack.to_dict()["components"].items()} == raw


def test_show_and_export_never_print_a_plain_secret(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path]
) -> None:
    path = write_stack(
        minimal(model_deployer={"name": "s", "flavor": "local", "configuration": {"auth_token": PLAIN}})
    )
    for args in (
        ["show", str(path)],
        ["export", str(path)],
        ["export", str(path), "--format", "zenml"],
        ["check", str(path)],
    ):
        result = runner.invoke(stack_app, args)
        assert result.exit_code == 1, result.output
        assert PLAIN not in result.output
        assert "key 'auth_token' holds a plain-text secret (not shown)" in result.output


def test_a_zenml_import_with_a_plain_password_is_refused(tmp_path: Path, home: Path) -> None:
    export = tmp_path / "zenml.yaml"
    export.write_text(
        yaml.safe_dump(
            {
                "stack_name": "from-zenml",
                "zenml_version": "0.98.0",
                "components": {
                    "orchestrator": {
                        "name": "o",
                        "type": "orchestrator",
                        "flavor": "local",
                        "configuration": {},
                    },
                    "artifact_store": {
                        "name": "a",
                        "type": "artifact_store",
                        "flavor": "local",
                        "configuration": {"path": "/tmp/x"},
                    },
                    "experiment_tracker": {
                        "name": "m",
                        "type": "experiment_tracker",
                        "flavor": "mlflow",
                        "configuration": {
                            "tracking_uri": "https://mlflow.example",
                            "tracking_username": "u",
                            "tracking_password": PLAIN,
                        },
                    },
                },
            }
        )
    )
    with pytest.raises(StackError) as info:
        import_zenml_with_warnings(export)
    assert PLAIN not in str(info.value)
    assert "key 'tracking_password' holds a plain-text secret" in str(info.value)
    assert not (home / "stacks" / "from-zenml.yaml").exists()
