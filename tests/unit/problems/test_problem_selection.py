"""Choosing a problem: --problem, then $FLYWHEEL_PROBLEM, then `flywheel problem use`, else a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.contracts.problem import PROBLEMS_DIR, SpecError
from flywheel.problem_selection import (
    NoProblemChosen,
    active_problem_file,
    problem_selection,
    selected_problem,
    use_problem,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLYWHEEL_PROBLEM", raising=False)
    monkeypatch.delenv("FLYWHEEL_STACK", raising=False)
    yield tmp_path


def test_selection_order(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NoProblemChosen) as raised:
        selected_problem(None)
    message = str(raised.value)
    assert "no problem chosen" in message and "flywheel problem use NAME" in message
    assert "known problems: diamonds, flights" in message
    use_problem("diamonds")
    assert problem_selection(None) == (
        "diamonds",
        f"set by `flywheel problem use` in {active_problem_file()}",
    )
    monkeypatch.setenv("FLYWHEEL_PROBLEM", "flights")
    assert problem_selection(None) == ("flights", "from $FLYWHEEL_PROBLEM")
    assert problem_selection("other") == ("other", "given explicitly")


def test_use_refuses_an_unknown_spec_and_stores_a_path_absolute(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such problem spec"):
        use_problem("nope")
    assert not active_problem_file().exists()
    spec = tmp_path / "mine.yaml"
    spec.write_text((PROBLEMS_DIR / "diamonds.yaml").read_text())
    use_problem(str(spec))
    assert active_problem_file().read_text().strip() == str(spec.resolve())


def test_problem_list_show_use_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    listed = runner.invoke(app, ["problem", "list"])
    assert listed.exit_code == 0, listed.output
    assert "  flights          binary      flight-delay" in listed.output
    assert "active: none (choose one with `flywheel problem use NAME`" in listed.output
    used = runner.invoke(app, ["problem", "use", "flights"])
    assert used.exit_code == 0, used.output
    assert "active problem: flights (model flight-delay;" in used.output
    assert "* flights" in runner.invoke(app, ["problem", "list"]).output
    shown = runner.invoke(app, ["problem", "show"])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output)["model_name"] == "flight-delay"
    assert yaml.safe_load(runner.invoke(app, ["problem", "show", "diamonds"]).output)["task"] == "regression"
    monkeypatch.setenv("FLYWHEEL_PROBLEM", "diamonds")
    assert "* diamonds" in runner.invoke(app, ["problem", "list"]).output
    warned = runner.invoke(app, ["problem", "use", "flights"])
    assert "FLYWHEEL_PROBLEM=diamonds is set and takes precedence" in warned.output
    bad = runner.invoke(app, ["problem", "use", "nope"])
    assert bad.exit_code == 1 and "no such problem spec (known: diamonds, flights)" in bad.output


@pytest.mark.parametrize(
    "command", [["run", "training"], ["run", "inference"], ["run", "monitoring"], ["serve"]]
)
def test_commands_without_a_problem_say_how_to_choose_one(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert (
        "no problem chosen: pass --problem NAME, set FLYWHEEL_PROBLEM=NAME, or run `flywheel problem use"
        in (result.output)
    )
    assert isinstance(result.exception, SystemExit)  # a message and exit 1, not an exception


def test_list_with_champion_names_the_problems_that_have_one(isolated: Path) -> None:
    """What `make up` reads to deploy the services: nothing before a champion, the problem after one."""
    import numpy as np
    import xgboost as xgb
    from mlflow import MlflowClient

    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack

    empty = runner.invoke(app, ["problem", "list", "--with-champion"])
    assert empty.exit_code == 0 and empty.output == "", empty.output
    configure_mlflow(load_stack("local"))
    import mlflow

    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(np.eye(4), [0, 1, 0, 1]), 2)
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(booster, name="model")
    version = mlflow.register_model(info.model_uri, "flight-delay").version
    MlflowClient().set_registered_model_alias("flight-delay", "champion", str(version))
    found = runner.invoke(app, ["problem", "list", "--with-champion"])
    assert found.exit_code == 0 and found.output.split() == ["flights"], found.output
