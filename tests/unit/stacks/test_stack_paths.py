"""stacks/paths.py: relative paths and SQLite URIs are anchored under flywheel home."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.paths import flywheel_home, has_url_scheme, resolve_db_uri, resolve_path


def test_home_from_env(home: Path) -> None:
    assert flywheel_home() == home
    assert flywheel_home().is_absolute()


def test_home_defaults_to_dot_flywheel_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_HOME")
    monkeypatch.chdir(tmp_path)
    assert flywheel_home() == tmp_path / ".flywheel"


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLYWHEEL_HOME", "rel/home")
    assert flywheel_home() == tmp_path / "rel" / "home"


@pytest.mark.parametrize(
    "uri",
    ["s3://b/a", "gs://b/a", "gcs://b", "az://c/a", "abfs://c/a", "http://h/x", "https://h", "file:///tmp/x"],
)
def test_urls_unchanged(uri: str) -> None:
    assert has_url_scheme(uri)
    assert resolve_path(uri) == uri


def test_absolute_path_unchanged(tmp_path: Path) -> None:
    assert resolve_path(str(tmp_path / "x")) == str(tmp_path / "x")


def test_relative_path_under_home(home: Path) -> None:
    assert resolve_path("artifacts") == str(home / "artifacts")
    assert resolve_path("a/b") == str(home / "a" / "b")


def test_relative_sqlite_anchored_and_folder_created(home: Path) -> None:
    uri = resolve_db_uri("sqlite:///dbs/mlflow.db")
    assert uri == f"sqlite:///{home / 'dbs' / 'mlflow.db'}"
    assert uri.startswith("sqlite:////")
    assert (home / "dbs").is_dir()


def test_sqlite_query_kept(home: Path) -> None:
    assert resolve_db_uri("sqlite:///o.db?timeout=20") == f"sqlite:///{home / 'o.db'}?timeout=20"


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////abs/path/mlflow.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://user:pw@db:5432/optuna",
        "http://127.0.0.1:5000",
        "${FLYWHEEL_OPTUNA_DB_URL}",
    ],
)
def test_other_uris_unchanged(uri: str) -> None:
    assert resolve_db_uri(uri) == uri
