"""stacks/secrets.py: references are recognised exactly, resolved late, and never leak a value."""

from __future__ import annotations

import pytest

from stacks import secrets
from stacks.secrets import (
    SecretNotFoundError,
    env_var_for,
    find_refs,
    is_secret_ref,
    mask,
    prefect_block_for,
    resolve,
    resolve_tree,
)


@pytest.mark.parametrize(
    "value", ["{{s3.access_key}}", "{{ s3.access_key }}", "${VAR}", "${_X1}", " ${VAR} "]
)
def test_references(value: str) -> None:
    assert is_secret_ref(value)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "{{s3}}",
        "{{s3.}}",
        "${}",
        "${1VAR}",
        "$VAR",
        "postgresql://u:${PW}@host/db",  # only whole values are references
        "prefix {{a.b}}",
        "",
    ],
)
def test_not_references(value: str) -> None:
    assert not is_secret_ref(value)


def test_non_strings_are_not_references() -> None:
    assert not is_secret_ref(None)
    assert not is_secret_ref(3)


def test_env_var_names() -> None:
    assert env_var_for("{{s3.access_key}}") == "S3_ACCESS_KEY"
    assert env_var_for("{{ my-store.secret.key }}") == "MY_STORE_SECRET_KEY"
    assert env_var_for("${FLYWHEEL_OPTUNA_DB_URL}") == "FLYWHEEL_OPTUNA_DB_URL"


def test_prefect_block_names_are_valid_slugs() -> None:
    assert prefect_block_for("{{s3.access_key}}") == "s3-access-key"
    assert prefect_block_for("{{MLflow.Password}}") == "mlflow-password"


def test_plain_values_pass_through() -> None:
    assert resolve("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_resolve_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", "from-env")
    monkeypatch.setenv("DB_URL", "postgresql://x")
    assert resolve("{{s3.access_key}}") == "from-env"
    assert resolve("${DB_URL}") == "postgresql://x"


def test_missing_env_reference_names_the_variable() -> None:
    with pytest.raises(SecretNotFoundError) as info:
        resolve("${NOT_SET_ANYWHERE}")
    assert str(info.value) == (
        "secret reference ${NOT_SET_ANYWHERE} is not set: set the environment variable NOT_SET_ANYWHERE"
    )
    assert info.value.ref == "${NOT_SET_ANYWHERE}"


def test_missing_zenml_reference_names_env_var_and_block() -> None:
    with pytest.raises(SecretNotFoundError) as info:
        resolve("{{s3.access_key}}")
    message = str(info.value)
    assert "{{s3.access_key}}" in message
    assert "S3_ACCESS_KEY" in message
    assert "'s3-access-key'" in message


def test_prefect_block_consulted_only_with_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_block(block: str) -> str | None:
        asked.append(block)
        return "from-block"

    monkeypatch.setattr(secrets, "_from_prefect", fake_block)
    with pytest.raises(SecretNotFoundError):
        resolve("{{s3.access_key}}")  # no PREFECT_API_URL: no ephemeral server is booted for a lookup
    assert asked == []
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert resolve("{{s3.access_key}}") == "from-block"
    assert asked == ["s3-access-key"]
    monkeypatch.setenv("S3_ACCESS_KEY", "env-wins")
    assert resolve("{{s3.access_key}}") == "env-wins"
    assert asked == ["s3-access-key"]


def test_env_references_never_use_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(secrets, "_from_prefect", lambda block: pytest.fail("Prefect consulted for ${VAR}"))
    with pytest.raises(SecretNotFoundError):
        resolve("${NOT_SET_ANYWHERE}")


def test_resolve_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", "k")
    tree = {
        "key": "{{s3.access_key}}",
        "client_kwargs": {"endpoint_url": "http://x"},
        "n": 3,
        "l": ["${S3_ACCESS_KEY}"],
    }
    assert resolve_tree(tree) == {
        "key": "k",
        "client_kwargs": {"endpoint_url": "http://x"},
        "n": 3,
        "l": ["k"],
    }


def test_find_refs_gives_dotted_paths() -> None:
    tree = {"storage_options": {"key": "{{s3.access_key}}", "list": ["x", "${V}"]}, "path": "s3://b"}
    assert find_refs(tree) == [
        ("storage_options.key", "{{s3.access_key}}"),
        ("storage_options.list.1", "${V}"),
    ]


def test_mask_shows_references_but_never_values() -> None:
    assert mask("{{s3.access_key}}") == "{{s3.access_key}}"
    assert mask("${V}") == "${V}"
    assert "hunter2" not in mask("hunter2")
    assert mask("") == ""
