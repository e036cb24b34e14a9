"""Where a stack's relative paths and database URIs point.

Stack files are shared between machines, so they hold relative paths (`artifacts`,
`sqlite:///mlflow.db`). Those are anchored here, under one *flywheel home*, instead of the
current directory of whichever process happens to read them: a Prefect worker, the
serving process and a notebook then all agree on where the local artifacts and databases are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["flywheel_home", "has_url_scheme", "resolve_db_uri", "resolve_path"]

# `s3://`, `gs://`, `abfs://`, `http://`, `file://` ... (RFC 3986 scheme, then `://`)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE = "sqlite:///"


def flywheel_home() -> Path:
    """The folder that anchors relative paths: `$FLYWHEEL_HOME`, else `./.flywheel` (absolute)."""
    env = os.environ.get("FLYWHEEL_HOME", "").strip()
    home = Path(env).expanduser() if env else Path.cwd() / ".flywheel"
    return home.absolute()


def has_url_scheme(value: str) -> bool:
    """True for `s3://bucket`, `http://host` and the like; False for plain local paths."""
    return bool(_SCHEME.match(value))


def resolve_path(p: str) -> str:
    """Return a URL or absolute path unchanged; anchor a relative local path under `flywheel_home()`."""
    if has_url_scheme(p):
        return p
    path = Path(p).expanduser()
    if path.is_absolute():
        return str(path)
    return str(flywheel_home() / path)


def resolve_db_uri(uri: str) -> str:
    """Anchor a relative SQLite URI under `flywheel_home()` (creating its folder); leave others alone.

    `sqlite:///mlflow.db` (three slashes: relative) becomes `sqlite:////<home>/mlflow.db`;
    absolute SQLite paths, in-memory SQLite and any other URI (postgresql://, http://) are
    returned as given. Secret references are *not* resolved here: callers resolve first.
    """
    if not uri.startswith(_SQLITE):
        return uri
    rest = uri[len(_SQLITE) :]
    db, sep, query = rest.partition("?")
    if not db or db == ":memory:" or db.startswith("/") or Path(db).expanduser().is_absolute():
        return uri
    target = flywheel_home() / Path(db).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    return f"{_SQLITE}{target}{sep}{query}"
