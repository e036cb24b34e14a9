"""Creating a new SQLite database's tables, one process at a time.

MLflow and Optuna both create a database's tables the first time they open it, after seeing that none
exist. Two processes doing that at once (two problems' first trainings on a fresh stack) both create them,
and the second fails (``table ... already exists``, or an alembic revision mismatch). Whoever opens a
store that may be new holds :func:`sqlite_schema_lock` meanwhile: the second waits, then finds the tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["sqlite_schema_lock"]


@contextlib.contextmanager
def sqlite_schema_lock(*uris: str) -> Iterator[None]:
    """Hold an exclusive lock per SQLite database among ``uris`` (a file beside each), across processes.

    Other URIs (a server, PostgreSQL, in-memory SQLite) take no lock. A holder that dies releases it.
    """
    import fcntl

    paths = set()
    for uri in uris:
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///").partition("?")[0])
            if db.is_absolute():
                paths.add(db)
    with contextlib.ExitStack() as held:
        for db in sorted(paths):  # one order for every process: no deadlock between two databases
            db.parent.mkdir(parents=True, exist_ok=True)
            handle = held.enter_context(open(db.with_name(f"{db.name}.init.lock"), "a+b"))
            fcntl.flock(handle, fcntl.LOCK_EX)
            held.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield
