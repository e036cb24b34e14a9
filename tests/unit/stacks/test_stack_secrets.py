"""stacks/secrets.py: references are recognised exactly, resolved late, and never leak a value."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stacks import secrets
from stacks.check import check_stack
from stacks.config import Stack, StackError, parse_stack
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

if TYPE_CHECKING:
    from tests.unit.stacks.conftest import PrefectBlocks


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


def test_prefect_block_consulted_only_with_a_server(
    prefect_blocks: PrefectBlocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefect_blocks.blocks["s3-access-key"] = "from-block"
    with pytest.raises(SecretNotFoundError, match="no server was asked"):
        resolve("{{s3.access_key}}")  # no PREFECT_API_URL: no ephemeral server is booted for a lookup
    assert prefect_blocks.requests == []
    monkeypatch.setenv("PREFECT_API_URL", prefect_blocks.url)
    assert resolve("{{s3.access_key}}") == "from-block"
    assert [path for path, _ in prefect_blocks.requests] == [
        "/api/block_types/slug/secret/block_documents/name/s3-access-key?include_secrets=true"
    ]
    monkeypatch.setenv("S3_ACCESS_KEY", "env-wins")
    assert resolve("{{s3.access_key}}") == "env-wins"
    assert len(prefect_blocks.requests) == 1


def test_env_references_never_use_prefect(
    prefect_blocks: PrefectBlocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefect_blocks.blocks["not-set-anywhere"] = "x"
    monkeypatch.setenv("PREFECT_API_URL", prefect_blocks.url)
    with pytest.raises(SecretNotFoundError):
        resolve("${NOT_SET_ANYWHERE}")
    assert prefect_blocks.requests == []


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


# --------------------------------------------------------------------------- the stack's own Prefect API


def _stack_on(api_url: str | None, minimal: Callable[..., dict[str, Any]], **configuration: Any) -> Stack:
    """A stack whose orchestrator names `api_url` and whose tuner's storage is `{{optuna.db_url}}`."""
    doc = minimal(
        orchestrator={"name": "runner", "flavor": "prefect", "configuration": {"api_url": api_url}},
        tuner={"name": "optuna", "flavor": "optuna", "configuration": {"storage": "{{optuna.db_url}}"}},
        **configuration,
    )
    return parse_stack(doc, "on.yaml")


def test_a_stack_finds_its_blocks_on_its_own_prefect_api(
    prefect_blocks: PrefectBlocks, minimal: Callable[..., dict[str, Any]]
) -> None:
    prefect_blocks.blocks["optuna-db-url"] = "sqlite:///from-the-stack-server.db"
    stack = _stack_on(prefect_blocks.url, minimal)  # PREFECT_API_URL is unset (conftest)
    assert stack.secrets_api_url() == prefect_blocks.url
    assert stack.resolve("{{optuna.db_url}}") == "sqlite:///from-the-stack-server.db"
    stack.require_secrets()
    assert str(stack.optuna_storage()).endswith("from-the-stack-server.db")
    with pytest.raises(SecretNotFoundError, match="no server was asked"):
        resolve("{{optuna.db_url}}")  # without the stack, nothing names that server


def test_the_stacks_server_is_asked_before_prefect_api_url(
    start_prefect_blocks: Callable[[], PrefectBlocks],
    minimal: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own, configured = start_prefect_blocks(), start_prefect_blocks()
    monkeypatch.setenv("PREFECT_API_URL", configured.url)
    configured.blocks["optuna-db-url"] = "from-prefect-api-url"
    stack = _stack_on(own.url, minimal)
    assert stack.resolve("{{optuna.db_url}}") == "from-prefect-api-url"  # not on the stack's: the next one
    assert len(own.requests) == 1 and len(configured.requests) == 1
    own.blocks["optuna-db-url"] = "from-the-stack-server"
    assert stack.resolve("{{optuna.db_url}}") == "from-the-stack-server"
    assert len(configured.requests) == 1


def test_a_missing_block_names_each_server_asked(
    prefect_blocks: PrefectBlocks, minimal: Callable[..., dict[str, Any]]
) -> None:
    stack = _stack_on(prefect_blocks.url, minimal)
    with pytest.raises(SecretNotFoundError) as info:
        stack.resolve("{{optuna.db_url}}")
    assert str(info.value) == (
        "secret reference {{optuna.db_url}} is not set: set the environment variable OPTUNA_DB_URL, or "
        f"create a Prefect Secret block named 'optuna-db-url' on {prefect_blocks.url} (the stack's "
        "orchestrator api_url; asked: no such block there)"
    )
    with pytest.raises(StackError, match=r"on.yaml: component 'tuner' .*: key 'storage': .*no such block"):
        stack.require_secrets()


def test_a_server_that_is_down_is_reported_not_waited_on(
    free_port: int, minimal: Callable[..., dict[str, Any]]
) -> None:
    url = f"http://127.0.0.1:{free_port}/api"
    stack = _stack_on(url, minimal)
    start = time.monotonic()
    with pytest.raises(SecretNotFoundError) as info:
        stack.resolve("{{optuna.db_url}}")
    assert time.monotonic() - start < secrets.LOOKUP_TIMEOUT_S
    assert f"on {url} (the stack's orchestrator api_url; asked: server unreachable (" in str(info.value)


def test_a_server_that_never_answers_costs_the_timeout_once(
    silent_server: str, minimal: Callable[..., dict[str, Any]]
) -> None:
    stack = _stack_on(silent_server, minimal)
    resolver = stack.secret_resolver(timeout=0.5)
    start = time.monotonic()
    for ref in ("{{optuna.db_url}}", "{{s3.access_key}}"):
        with pytest.raises(SecretNotFoundError, match=r"asked: server did not answer within 0.5 s"):
            resolver.resolve(ref)
    assert time.monotonic() - start < 0.95  # the second reference did not wait on the same server


def test_a_reference_as_api_url_names_no_server(minimal: Callable[..., dict[str, Any]]) -> None:
    stack = _stack_on("${PREFECT_URL_FOR_TEST}", minimal)
    assert stack.secrets_api_url() is None
    with pytest.raises(SecretNotFoundError, match="no server was asked"):
        stack.resolve("{{optuna.db_url}}")


def test_structured_block_values_come_back_as_json_text(
    prefect_blocks: PrefectBlocks, minimal: Callable[..., dict[str, Any]]
) -> None:
    prefect_blocks.blocks["optuna-db-url"] = {"user": "u", "n": 1}
    assert _stack_on(prefect_blocks.url, minimal).resolve("{{optuna.db_url}}") == '{"user": "u", "n": 1}'


def test_the_api_key_goes_only_to_the_server_it_is_configured_for(
    prefect_blocks: PrefectBlocks, minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefect_blocks.blocks["optuna-db-url"] = "sqlite:///x.db"
    monkeypatch.setenv("PREFECT_API_KEY", "key-of-another-server")
    stack = _stack_on(prefect_blocks.url, minimal)
    stack.resolve("{{optuna.db_url}}")
    assert prefect_blocks.requests[-1][1] is None  # PREFECT_API_URL is unset: the key is not this server's
    monkeypatch.setenv("PREFECT_API_URL", prefect_blocks.url)
    monkeypatch.setenv("PREFECT_API_KEY", "key-of-this-server")
    stack.resolve("{{optuna.db_url}}")
    assert prefect_blocks.requests[-1][1] == "Bearer key-of-this-server"


def test_stack_check_resolves_through_the_stacks_server(
    prefect_blocks: PrefectBlocks, minimal: Callable[..., dict[str, Any]], home: Path
) -> None:
    prefect_blocks.blocks["optuna-db-url"] = "sqlite:///optuna.db"
    results = {r.component_type: r for r in check_stack(_stack_on(prefect_blocks.url, minimal), timeout=3)}
    assert results["tuner"].ok, results["tuner"].detail
    assert "study storage" in results["tuner"].detail


def test_stack_check_in_a_shell_without_prefect_api_url_finds_the_staging_blocks(
    start_prefect_blocks: Callable[[], PrefectBlocks],
    write_stack: Callable[..., Path],
) -> None:
    """What `flywheel stack check staging` does after `make staging-up`, with no credentials.env loaded."""
    from typer.testing import CliRunner

    from stacks.cli import stack_app
    from stacks.loader import load_stack

    server = start_prefect_blocks()
    server.blocks.update(
        {
            "s3-access-key": "AKIA-block-1",
            "s3-secret-key": "block-secret-2",
            "optuna-db-url": "sqlite:///o.db",
            "predictions-db-url": "sqlite:///p.db",
            "redis-url": "redis://:block-secret-3@127.0.0.1:9/0",
        }
    )
    doc = load_stack("staging").to_dict()
    doc["components"]["orchestrator"]["configuration"]["api_url"] = server.url
    path = write_stack(doc, "staging-here.yaml")
    result = CliRunner().invoke(stack_app, ["check", str(path), "--timeout", "2"])
    assert "unresolvable secret" not in result.output, result.output
    assert "ok    tuner" in result.output, result.output
    assert "AKIA-block-1" not in result.output and "block-secret-2" not in result.output
    assert "block-secret-3" not in result.output
    asked = sorted({p.split("?")[0].rsplit("/", 1)[1] for p, _ in server.requests if "block_documents" in p})
    assert asked == ["optuna-db-url", "predictions-db-url", "redis-url", "s3-access-key", "s3-secret-key"]


def test_stack_check_names_the_server_that_is_down(free_port: int, write_stack: Callable[..., Path]) -> None:
    from typer.testing import CliRunner

    from stacks.cli import stack_app
    from stacks.loader import load_stack

    url = f"http://127.0.0.1:{free_port}/api"
    doc = load_stack("staging").to_dict()
    doc["components"]["orchestrator"]["configuration"]["api_url"] = url
    result = CliRunner().invoke(stack_app, ["check", str(write_stack(doc)), "--timeout", "2"])
    assert result.exit_code == 1
    tuner = next(line for line in result.output.splitlines() if "tuner" in line)
    assert tuner.startswith("FAIL")
    assert (
        "unresolvable secret key 'storage' ({{optuna.db_url}}: set the environment variable OPTUNA_DB_URL"
        in tuner
    )
    assert f"'optuna-db-url' on {url} (the stack's orchestrator api_url; asked: server unreachable (" in tuner
