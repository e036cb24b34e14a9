"""Whether the MLflow registry can be read, and how a message names it.

A registry that cannot be read (a missing or corrupt database, an unreachable server) raises
:class:`RegistryUnavailable` with one sentence naming it. A SQLite database is looked at read-only before
MLflow opens it, because MLflow turns a missing or empty file into a fresh database, which a reader must
never do; a server is asked once, briefly, because MLflow's own client retries a dead one for minutes.
Messages end up in logs and on an unauthenticated endpoint, so no password is ever in one.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class RegistryUnavailable(RuntimeError):
    """The registry cannot be read: a missing, empty or corrupt database, or a server that does not answer."""


def registry_location(uri: str) -> str:
    """How a message names a registry: a SQLite database by its path, anything else by its URL with any
    password left out (a message ends up in logs and on an unauthenticated endpoint)."""
    path = _sqlite_path(uri)
    if path is not None:
        return f"the MLflow database {path}"
    parts = urllib.parse.urlsplit(uri)
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        uri = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return f"the MLflow registry at {uri}"


def check_registry(timeout_s: float = 5.0) -> None:
    """Raise :class:`RegistryUnavailable` when the registry (or tracking store) MLflow points at cannot be
    read, without letting MLflow open it: a SQLite file must exist and hold MLflow's tables, an HTTP server
    must answer at all (MLflow's own client retries a dead server for minutes)."""
    import mlflow

    tracking = mlflow.get_tracking_uri()
    registry = mlflow.get_registry_uri() or tracking
    _check_store(registry, "registered_models", timeout_s)
    if tracking != registry:
        _check_store(tracking, "runs", timeout_s)


def _sqlite_path(uri: str) -> str | None:
    """The file of a ``sqlite:///`` URI; None for other URIs and in-memory SQLite."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return None if not database or database == ":memory:" else str(Path(database).expanduser().absolute())


def _check_store(uri: str, table: str, timeout_s: float) -> None:
    path = _sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, table)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri, timeout_s)


def _check_sqlite(path: str, table: str) -> None:
    where = f"the MLflow database {path}"
    file = Path(path)
    if not file.exists():
        raise RegistryUnavailable(f"{where} does not exist")
    if not file.is_file():
        raise RegistryUnavailable(f"{where} is not a file")
    if file.stat().st_size == 0:
        raise RegistryUnavailable(f"{where} is empty")
    try:
        with contextlib.closing(sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
            ).fetchone()
    except sqlite3.Error as exc:
        raise RegistryUnavailable(f"{where} cannot be read: {exc}") from exc
    if found is None:
        raise RegistryUnavailable(f"{where} is not an MLflow database (it has no {table} table)")


def _check_server(uri: str, timeout_s: float) -> None:
    """Any answer counts: a 401 or 404 from a proxy still means the server is there, and so does a TLS
    handshake this probe cannot verify (MLflow's client has its own CA and TLS settings)."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    netloc = host if parts.port is None else f"{host}:{parts.port}"  # credentials stay out of the probe
    probe = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLError):
            return
        raise RegistryUnavailable(f"{registry_location(uri)} cannot be reached: {reason}") from exc


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, shortened and with any password in a URL starred out: drivers
    append the SQL and a help URL, and MLflow's client quotes the URL it called, credentials included."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper: the driver's own error says it
    lines = str(cause).strip().splitlines()
    text = _URL_PASSWORD.sub(r"\1***@", lines[0] if lines else "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")
