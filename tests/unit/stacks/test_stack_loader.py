"""stacks/loader.py: stacks by name or path, the selection order, `stack use`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stacks.config import StackError
from stacks.loader import (
    STACKS_DIR,
    active_stack_file,
    imported_stacks_dir,
    list_stacks,
    load_stack,
    selected_stack_name,
    stack_selection,
    use_stack,
)


def test_stacks_dir_is_the_package() -> None:
    assert Path(__file__).resolve().parents[3] / "stacks" == STACKS_DIR


def test_selection_order(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert selected_stack_name() == "local"
    assert stack_selection(None) == ("local", "the default")
    active_stack_file().parent.mkdir(parents=True)
    active_stack_file().write_text("production\n")
    assert selected_stack_name() == "production"
    monkeypatch.setenv("FLYWHEEL_STACK", "staging")
    assert selected_stack_name() == "staging"
    assert selected_stack_name("local") == "local"


def test_blank_env_and_file_fall_through(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_STACK", "  ")
    active_stack_file().parent.mkdir(parents=True)
    active_stack_file().write_text("\n")
    assert selected_stack_name() == "local"


def test_load_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_stack().name == "local"
    monkeypatch.setenv("FLYWHEEL_STACK", "staging")
    assert load_stack().name == "staging"
    assert load_stack(None).name == "staging"
    assert load_stack("production").name == "production"


def test_unknown_name_lists_available_and_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_STACK", "stagign")
    with pytest.raises(StackError) as info:
        load_stack()
    message = str(info.value)
    assert message.startswith(
        "unknown stack 'stagign' (from $FLYWHEEL_STACK); available stacks: local, production, staging"
    )


def test_load_by_path(write_stack: Callable[..., Path], minimal: Callable[..., dict[str, Any]]) -> None:
    path = write_stack(minimal(), "custom.yaml")
    stack = load_stack(str(path))
    assert stack.name == "mini"
    assert stack.source.endswith("custom.yaml")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"nope\.yaml: no such stack file"):
        load_stack(str(tmp_path / "nope.yaml"))


def test_use_stack_writes_the_active_file(home: Path) -> None:
    stack = use_stack("staging")
    assert stack.name == "staging"
    assert active_stack_file().read_text().strip() == "staging"
    assert selected_stack_name() == "staging"
    assert load_stack().name == "staging"


def test_use_stack_validates_first(home: Path) -> None:
    with pytest.raises(StackError, match="unknown stack 'nope'"):
        use_stack("nope")
    assert not active_stack_file().exists()


def test_use_stack_with_a_path(
    write_stack: Callable[..., Path], minimal: Callable[..., dict[str, Any]]
) -> None:
    path = write_stack(minimal(), "mine.yaml")
    use_stack(str(path))
    assert load_stack().name == "mini"


def test_imported_stacks_listed_and_loadable(home: Path) -> None:
    imported_stacks_dir().mkdir(parents=True)
    shutil.copy(STACKS_DIR / "local.yaml", imported_stacks_dir() / "laptop.yaml")
    assert list_stacks() == ["laptop", "local", "production", "staging"]
    assert load_stack("laptop").source.endswith("laptop.yaml")


def test_shipped_stack_wins_over_imported_file(home: Path) -> None:
    imported_stacks_dir().mkdir(parents=True)
    (imported_stacks_dir() / "local.yaml").write_text("not: a stack\n")
    assert load_stack("local").source.endswith("stacks/local.yaml")
    assert list_stacks().count("local") == 1
