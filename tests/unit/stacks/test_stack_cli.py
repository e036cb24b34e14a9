"""stacks/cli.py through Typer's CliRunner: list, show, use, check, export, import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stacks.cli import stack_app
from stacks.loader import active_stack_file, load_stack

runner = CliRunner()

SECRET_VALUES = {
    "S3_ACCESS_KEY": "AKIA-DISTINCTIVE-1",
    "S3_SECRET_KEY": "distinctive-secret-2",
    "AWS_ACCESS_KEY_ID": "AKIA-DISTINCTIVE-3",
    "AWS_SECRET_ACCESS_KEY": "distinctive-secret-4",
    "MLFLOW_USERNAME": "distinctive-user-5",
    "MLFLOW_PASSWORD": "distinctive-password-6",
    "SERVING_AUTH_TOKEN": "distinctive-token-7",
    "FLYWHEEL_OPTUNA_DB_URL": "postgresql://u:distinctive-pw-8@127.0.0.1:1/optuna",
    "OPTUNA_DB_URL": "postgresql://u:distinctive-pw-9@127.0.0.1:1/optuna",
}


@pytest.fixture
def with_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in SECRET_VALUES.items():
        monkeypatch.setenv(var, value)


def _assert_no_secret(text: str) -> None:
    for value in SECRET_VALUES.values():
        assert value not in text
    assert "distinctive" not in text


def test_list_marks_the_active_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(stack_app, ["list"])
    assert result.exit_code == 0, result.output
    assert "* local" in result.output and "  staging" in result.output
    assert "active: local (the default)" in result.output
    monkeypatch.setenv("FLYWHEEL_STACK", "production")
    result = runner.invoke(stack_app, ["list"])
    assert "* production" in result.output and "  local" in result.output
    assert "active: production (from $FLYWHEEL_STACK)" in result.output


def test_show_prints_references(with_secrets: None) -> None:
    for name in ("staging", "production"):
        result = runner.invoke(stack_app, ["show", name])
        assert result.exit_code == 0, result.output
        _assert_no_secret(result.output)
        shown = yaml.safe_load(result.output)
        assert shown == load_stack(name).to_dict()
    result = runner.invoke(stack_app, ["show", "staging"])
    assert "'{{s3.access_key}}'" in result.output and "'{{optuna.db_url}}'" in result.output


def test_show_defaults_to_the_selected_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_STACK", "staging")
    result = runner.invoke(stack_app, ["show"])
    assert result.exit_code == 0
    assert "stack_name: staging" in result.output


def test_show_unknown_and_invalid(write_stack: Callable[..., Path]) -> None:
    result = runner.invoke(stack_app, ["show", "nope"])
    assert result.exit_code == 1
    assert "error: unknown stack 'nope' (given explicitly); available stacks: local, production, staging" in (
        result.output
    )
    bad = write_stack({"stack_name": "b", "components": {"orchestrator": {"name": "o", "flavor": "prefect"}}})
    result = runner.invoke(stack_app, ["show", str(bad)])
    assert result.exit_code == 1
    assert "missing required component 'artifact_store'" in result.output


def test_use(home: Path) -> None:
    result = runner.invoke(stack_app, ["use", "staging"])
    assert result.exit_code == 0, result.output
    assert active_stack_file().read_text().strip() == "staging"
    assert "active stack: staging" in result.output
    listing = runner.invoke(stack_app, ["list"]).output
    assert "* staging" in listing and "set by `flywheel stack use`" in listing
    result = runner.invoke(stack_app, ["use", "nope"])
    assert result.exit_code == 1
    assert active_stack_file().read_text().strip() == "staging"


def test_use_warns_when_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_STACK", "production")
    result = runner.invoke(stack_app, ["use", "staging"])
    assert result.exit_code == 0
    assert "FLYWHEEL_STACK=production is set and takes precedence" in result.output


def test_check_local_ok(write_stack: Callable[..., Path], free_port: int) -> None:
    doc = load_stack("local").to_dict()
    doc["components"]["model_deployer"]["configuration"]["port"] = free_port  # 8080 may be busy here
    result = runner.invoke(stack_app, ["check", str(write_stack(doc)), "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert "all 12 components reachable" in result.output
    assert "FAIL" not in result.output


def test_check_failure_exits_1(
    write_stack: Callable[..., Path], minimal: Callable[..., dict[str, Any]], free_port: int
) -> None:
    url = f"http://127.0.0.1:{free_port}/api"
    doc = minimal(orchestrator={"name": "remote", "flavor": "prefect", "configuration": {"api_url": url}})
    result = runner.invoke(stack_app, ["check", str(write_stack(doc)), "--timeout", "1"])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL"))
    assert "orchestrator" in line and "remote" in line and f"cannot reach {url}/health" in line
    assert "1 of 2 components not reachable" in result.output


def test_check_never_prints_secrets(with_secrets: None) -> None:
    result = runner.invoke(stack_app, ["check", "staging", "--timeout", "1"])
    assert result.exit_code == 1  # nothing of staging runs here
    _assert_no_secret(result.output)


@pytest.mark.parametrize("fmt", ["native", "zenml"])
def test_export_to_file_and_stdout(fmt: str, tmp_path: Path, with_secrets: None) -> None:
    out = tmp_path / f"production-{fmt}.yaml"
    result = runner.invoke(stack_app, ["export", "production", "-o", str(out), "--format", fmt])
    assert result.exit_code == 0, result.output
    _assert_no_secret(result.output + out.read_text())
    data = yaml.safe_load(out.read_text())
    assert data["stack_name"] == "production"
    assert ("zenml_version" in data) == (fmt == "zenml")
    stdout = runner.invoke(stack_app, ["export", "production", "--format", fmt])
    assert stdout.exit_code == 0
    _assert_no_secret(stdout.output)
    if fmt == "zenml":
        assert "warning: orchestrator: ZenML has no 'prefect' flavor" in result.output
        assert "zenml stack import production -f" in result.output


def test_export_rejects_unknown_format() -> None:
    result = runner.invoke(stack_app, ["export", "local", "--format", "toml"])
    assert result.exit_code == 2


def test_import_then_use(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "z.yaml"
    assert runner.invoke(stack_app, ["export", "staging", "-o", str(out), "--format", "zenml"]).exit_code == 0
    result = runner.invoke(stack_app, ["import", str(out), "--name", "staging-copy"])
    assert result.exit_code == 0, result.output
    assert "imported stack 'staging-copy'" in result.output
    assert (home / "stacks" / "staging-copy.yaml").is_file()
    assert "  staging-copy" in runner.invoke(stack_app, ["list"]).output
    assert runner.invoke(stack_app, ["use", "staging-copy"]).exit_code == 0
    assert load_stack().name == "staging-copy"


def test_import_errors_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "z.yaml"
    runner.invoke(stack_app, ["export", "local", "-o", str(out), "--format", "zenml"])
    result = runner.invoke(stack_app, ["import", str(out)])
    assert result.exit_code == 1
    assert "'local' is a stack shipped with Flywheel" in result.output
    result = runner.invoke(stack_app, ["import", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read the file" in result.output
