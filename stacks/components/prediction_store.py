"""The prediction store of a stack: a SQL table of precomputed predictions, written by batch inference and
read by the service (``GET /predictions/{key}``), through SQLAlchemy (SQLite locally, PostgreSQL on staging).

One row per (model, key): the key is the problem spec's ``keys`` columns (a flight: year, month, day,
carrier, flight, origin), stored as one canonical text (a JSON list of each value's text) so that a key
read from a DataFrame (``numpy.int64(2013)``, ``2013.0``), from JSON (``2013``, ``"2013"``) and from a URL
path segment (``"2013"``) is the same row. A second table, ``<table>_keys``, names each model's key
columns and whether each is a number or a text, which the service needs to read a key and to say what a
bad one should look like. Each run upserts its rows (``INSERT ... ON CONFLICT DO UPDATE`` in both
dialects) with the model version and the scoring time, so a key scored again by a later run or version is
replaced, and a key it did not score keeps its older answer (the answer says how old it is).

The writer is a plain picklable object (Dask workers write their own partitions): it holds the resolved
URL, which is a credential on staging, and opens one engine per process. The reader keeps a connection
pool for the service, bounded by the stack's ``pool_size``, and never creates anything: a SQLite file
that does not exist yet means that nothing was stored, not a new empty database.
"""

from __future__ import annotations

import json
import math
import numbers
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from stacks import secret_keys

__all__ = [
    "MAX_KEY_CHARS",
    "BadKey",
    "KeyColumn",
    "PredictionReader",
    "PredictionStoreUnavailable",
    "PredictionWriter",
    "StoredPrediction",
    "canonical_key",
    "key_kinds",
]

MAX_KEY_CHARS = 1024
"""The longest canonical key stored or looked up (the primary key's column width)."""
WRITE_ROWS = 5_000
"""Rows per INSERT statement: bounds the statement's memory and the time a SQLite write lock is held."""
WRITE_TIMEOUT_S = 120.0
"""How long a writer waits for SQLite's lock (another Dask worker writing its partition)."""
META_TTL_S = 10.0
"""How long the reader trusts the key columns it read (a new batch run may change them)."""

Kind = Literal["number", "text"]


class BadKey(ValueError):
    """A key that does not fit the model's key columns; the message says what it should look like."""


class PredictionStoreUnavailable(RuntimeError):
    """The database could not be reached or read; the message names it with its password masked."""


@dataclass(frozen=True)
class KeyColumn:
    name: str
    kind: Kind


def key_kinds(dtypes: Mapping[str, Any]) -> list[KeyColumn]:
    """Each key column's kind from its pandas dtype: numbers (integers, floats) or text (anything else)."""
    import pandas as pd

    return [
        KeyColumn(str(name), "number" if _numeric(pd, dtype) else "text") for name, dtype in dtypes.items()
    ]


def _numeric(pd: Any, dtype: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dtype)) and not pd.api.types.is_bool_dtype(dtype)


def _number_text(value: Any, column: str) -> str:
    if isinstance(value, bool):
        raise BadKey(f"key column '{column}' is a number, got {value!r}")
    if isinstance(value, numbers.Integral):  # numpy's integers too: exact, past float's 2**53
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            return str(int(text))
        except ValueError:
            pass
        try:
            value = float(text) if text else math.nan
        except ValueError:
            raise BadKey(f"key column '{column}' is a number, got {_quoted(value)}") from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadKey(f"key column '{column}' is a number, got {_quoted(value)}") from None
    if not math.isfinite(number):
        raise BadKey(f"key column '{column}' is missing or not a finite number")
    return str(int(number)) if number.is_integer() else repr(number)


def _canonical(value: Any, column: KeyColumn) -> str:
    """One key value as the text the table keys on (``2013``, ``2013.0`` and ``"2013"`` are ``2013``)."""
    if column.kind == "number":
        return _number_text(value, column.name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise BadKey(f"key column '{column.name}' is missing")
    if isinstance(value, dict | list):
        raise BadKey(f"key column '{column.name}' is a text, got a {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def canonical_key(columns: Sequence[KeyColumn], values: Sequence[Any] | Mapping[str, Any]) -> str:
    """The stored form of one key, given in column order (a list, path segments) or by name (a mapping)."""
    names = [c.name for c in columns]
    if isinstance(values, Mapping):
        unknown = [str(k) for k in values if k not in names]
        missing = [n for n in names if n not in values]
        if unknown or missing:
            parts = [f"unknown {', '.join(map(_quoted, unknown[:5]))}" if unknown else ""]
            parts.append(f"missing {', '.join(missing)}" if missing else "")
            raise BadKey(f"a key names the columns {', '.join(names)} ({'; '.join(p for p in parts if p)})")
        values = [values[n] for n in names]
    if len(values) != len(columns):
        raise BadKey(f"a key has {len(columns)} values ({', '.join(names)}), got {len(values)}")
    text = json.dumps([_canonical(v, c) for v, c in zip(values, columns, strict=True)], ensure_ascii=False)
    if len(text) > MAX_KEY_CHARS:
        raise BadKey(f"a key is at most {MAX_KEY_CHARS} characters long")
    return text


def canonical_keys(columns: Sequence[KeyColumn], frame: Any) -> list[str | None]:
    """:func:`canonical_key` of each row of ``frame`` (its key columns), None where a row has no valid key.

    Each column's distinct values are made canonical once (pandas.factorize), and the keys put together
    from those texts: a batch of 336,776 flights takes ~0.3 s where a key at a time took 5.8 s."""
    import pandas as pd

    pieces: list[Any] = []
    for column in columns:
        codes, uniques = pd.factorize(frame[column.name], use_na_sentinel=True)
        texts: list[str | None] = []
        for value in uniques:
            try:
                texts.append(json.dumps(_canonical(value, column), ensure_ascii=False))
            except BadKey:
                texts.append(None)
        texts.append(None)  # code -1: a missing value
        pieces.append(pd.Series(texts, dtype=object).to_numpy()[codes])
    keys: list[str | None] = []
    for parts in zip(*pieces, strict=True):
        if None in parts:
            keys.append(None)
            continue
        text = "[" + ", ".join(parts) + "]"
        keys.append(text if len(text) <= MAX_KEY_CHARS else None)
    return keys


def _display(columns: Sequence[KeyColumn], key: str) -> dict[str, Any]:
    """A stored key as the answer shows it: by column name, numbers as numbers."""
    shown: dict[str, Any] = {}
    for column, text in zip(columns, json.loads(key), strict=False):
        if column.kind == "number":
            number = float(text)
            shown[column.name] = int(number) if number.is_integer() else number
        else:
            shown[column.name] = text
    return shown


# --------------------------------------------------------------------------- tables and engines


def _tables(name: str) -> tuple[Any, Any]:
    """The predictions table and its key-columns table, in a MetaData of their own."""
    import sqlalchemy as sa

    meta = sa.MetaData()
    predictions = sa.Table(
        name,
        meta,
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(MAX_KEY_CHARS), primary_key=True),
        sa.Column("prediction", sa.Float, nullable=True),  # binary: P(positive); regression: the value
        sa.Column("decision", sa.Boolean, nullable=True),  # binary: at the model's threshold
        sa.Column("predicted_class", sa.String(200), nullable=True),  # multiclass
        sa.Column("probabilities", sa.Text, nullable=True),  # multiclass: JSON {class: probability}
        sa.Column("model_version", sa.String(50), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch", sa.String(1000), nullable=False),  # the batch output the row came from
    )
    keys = sa.Table(
        f"{name}_keys",
        meta,
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("key_columns", sa.Text, nullable=False),  # JSON [{name, kind}]
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return predictions, keys


_ENGINES: dict[tuple[str, int, float, bool], Any] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str, *, pool_size: int, timeout_s: float, writer: bool) -> Any:
    """One engine per URL and settings in this process (a pool is per engine, so it is shared)."""
    import sqlalchemy as sa

    cache_key = (url, pool_size, timeout_s, writer)
    with _ENGINES_LOCK:
        found = _ENGINES.get(cache_key)
        if found is not None:
            return found
        connect_args: dict[str, Any] = {}
        scheme = url.split(":", 1)[0]
        if scheme.startswith("sqlite"):
            connect_args["timeout"] = WRITE_TIMEOUT_S if writer else timeout_s  # waits on a writer's lock
        elif scheme.startswith(("postgresql", "mysql", "mariadb")):
            connect_args["connect_timeout"] = max(1, math.ceil(timeout_s))
        engine = sa.create_engine(
            url,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeout_s,
            pool_pre_ping=True,  # a server restarted under the pool costs one retry, not an error
        )
        _ENGINES[cache_key] = engine
        return engine


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None for any other database (or in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    db = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if not db or db == ":memory:" else Path(db)


def _unavailable(url: str, exc: BaseException) -> PredictionStoreUnavailable:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return PredictionStoreUnavailable(
        secret_keys.redact(f"prediction store {secret_keys.mask_url(url)}: {type(exc).__name__}: {text}")
    )


def _upsert(engine: Any, table: Any, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of every other column, in either dialect."""
    if not rows:
        return
    dialect = engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise ValueError(f"the prediction store supports SQLite and PostgreSQL, not {dialect!r}")
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    with engine.begin() as conn:
        for start in range(0, len(rows), WRITE_ROWS):
            conn.execute(stmt, rows[start : start + WRITE_ROWS])


# --------------------------------------------------------------------------- writing


@dataclass
class PredictionWriter:
    """Upserts one batch run's predictions; picklable (URL and settings only) for Dask workers.

    ``prepare`` once per run (creates the tables, records the key columns); ``write`` per scored part.
    """

    url: str  # resolved: a credential on staging, never logged
    table: str
    model_name: str
    model_version: str
    key_columns: list[KeyColumn]
    batch: str
    scored_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    timeout_s: float = 5.0

    def __repr__(self) -> str:  # the URL may hold a password
        where = secret_keys.mask_url(self.url)
        return f"PredictionWriter({where}, table={self.table!r}, model={self.model_name!r})"

    def _engine(self) -> Any:
        return _engine(self.url, pool_size=1, timeout_s=self.timeout_s, writer=True)

    def prepare(self) -> None:
        """Create the tables if needed and record this model's key columns.

        When the key columns differ from those recorded (the spec's ``keys`` changed), the model's old
        rows are deleted: their keys have another shape, so no lookup could reach them.
        """
        import sqlalchemy as sa

        engine = self._engine()
        predictions, keys = _tables(self.table)
        columns = json.dumps([{"name": c.name, "kind": c.kind} for c in self.key_columns])
        try:
            if engine.dialect.name == "sqlite":
                with engine.connect() as conn:  # readers go on reading while a batch writes
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            predictions.metadata.create_all(engine, checkfirst=True)
            with engine.begin() as conn:
                before = conn.execute(
                    sa.select(keys.c.key_columns).where(keys.c.model_name == self.model_name)
                ).scalar()
                if before is not None and before != columns:
                    conn.execute(predictions.delete().where(predictions.c.model_name == self.model_name))
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(self.url, exc) from exc
        row = {"model_name": self.model_name, "key_columns": columns, "updated_at": self.scored_at}
        try:
            _upsert(engine, keys, [row], ["model_name"])
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(self.url, exc) from exc

    def rows(self, part: Any) -> tuple[list[dict[str, Any]], int]:
        """(rows to upsert, rows skipped) for a scored part (the columns ``write_part`` writes).

        A row whose key is missing or too long is skipped (it could never be looked up); of rows with the
        same key the last is kept, as a later run's would be.
        """
        probability_columns = [c for c in part.columns if str(c).startswith("probability_")]
        keys = canonical_keys(self.key_columns, part)
        predictions = part["prediction"].tolist()
        if probability_columns:
            probabilities = part[probability_columns].to_numpy()
            classes = [str(c).removeprefix("probability_") for c in probability_columns]
            best = probabilities.max(axis=1).tolist()
            spread = [json.dumps(dict(zip(classes, row, strict=True))) for row in probabilities.tolist()]
        decisions = part["decision"].tolist() if "decision" in part.columns else None
        common = {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "scored_at": self.scored_at,
            "batch": self.batch,
        }
        by_key: dict[str, dict[str, Any]] = {}
        skipped = 0
        for i, key in enumerate(keys):
            if key is None:
                skipped += 1
                continue
            if probability_columns:
                row = {**common, "key": key, "prediction": best[i], "decision": None}
                row |= {"predicted_class": str(predictions[i]), "probabilities": spread[i]}
            else:
                decision = None if decisions is None else bool(decisions[i])
                row = {**common, "key": key, "prediction": float(predictions[i]), "decision": decision}
                row |= {"predicted_class": None, "probabilities": None}
            if key in by_key:
                skipped += 1
            by_key[key] = row
        return list(by_key.values()), skipped

    def write(self, part: Any) -> int:
        """Upsert one scored part's rows; the number of keys written."""
        import sqlalchemy as sa

        rows, _ = self.rows(part)
        predictions, _ = _tables(self.table)
        try:
            _upsert(self._engine(), predictions, rows, ["model_name", "key"])
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(self.url, exc) from exc
        return len(rows)

    def stored(self) -> int:
        """How many keys of this model the table holds from this run's batch (after every part is written)."""
        import sqlalchemy as sa

        predictions, _ = _tables(self.table)
        query = (
            sa.select(sa.func.count())
            .select_from(predictions)
            .where(predictions.c.model_name == self.model_name, predictions.c.batch == self.batch)
        )
        try:
            with self._engine().connect() as conn:
                return int(conn.execute(query).scalar() or 0)
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(self.url, exc) from exc


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class StoredPrediction:
    key: dict[str, Any]
    prediction: float | None
    decision: bool | None
    predicted_class: str | None
    probabilities: dict[str, float] | None
    model_version: str
    scored_at: datetime

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.scored_at.timestamp())


class PredictionReader:
    """Looks keys up for one model, on a pooled engine; every call may block (call it off the event loop)."""

    def __init__(
        self,
        url: str,
        table: str,
        *,
        pool_size: int = 5,
        timeout_s: float = 5.0,
        fallback: Literal["none", "live"] = "none",
        max_lookup_keys: int = 1000,
    ) -> None:
        self.url = url
        self.table = table
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self.fallback = fallback
        self.max_lookup_keys = max_lookup_keys
        self._predictions, self._keys = _tables(table)
        self._columns: dict[str, tuple[float, list[KeyColumn] | None]] = {}

    @classmethod
    def from_stack(cls, stack: Any) -> PredictionReader | None:
        """The stack's prediction store as a reader; None when the stack names none."""
        component = stack.prediction_store
        if component is None:
            return None
        cfg = component.configuration
        return cls(
            stack.prediction_store_url(),
            cfg.table,
            pool_size=cfg.pool_size,
            timeout_s=cfg.timeout_s,
            fallback=cfg.fallback,
            max_lookup_keys=cfg.max_lookup_keys,
        )

    def describe(self) -> str:
        """Where the table is, for messages (password masked)."""
        return f"table '{self.table}' in {secret_keys.mask_url(self.url)}"

    def _engine(self) -> Any | None:
        sqlite = _sqlite_file(self.url)
        if sqlite is not None and not sqlite.exists():
            return None  # nothing stored yet; connecting would create an empty database
        return _engine(self.url, pool_size=self.pool_size, timeout_s=self.timeout_s, writer=False)

    def key_columns(self, model_name: str) -> list[KeyColumn] | None:
        """The model's key columns as its last batch run recorded them; None when nothing is stored."""
        cached = self._columns.get(model_name)
        if cached is not None and time.monotonic() - cached[0] < META_TTL_S:
            return cached[1]
        import sqlalchemy as sa

        engine = self._engine()
        columns: list[KeyColumn] | None = None
        if engine is not None:
            try:
                with engine.connect() as conn:
                    if sa.inspect(conn).has_table(self._keys.name):
                        found = conn.execute(
                            sa.select(self._keys.c.key_columns).where(self._keys.c.model_name == model_name)
                        ).scalar()
                        if found is not None:
                            columns = [KeyColumn(c["name"], c["kind"]) for c in json.loads(found)]
            except sa.exc.SQLAlchemyError as exc:
                raise _unavailable(self.url, exc) from exc
        self._columns[model_name] = (time.monotonic(), columns)
        return columns

    def lookup(self, model_name: str, keys: Iterable[str]) -> dict[str, StoredPrediction]:
        """The stored predictions of the canonical ``keys`` that the table holds (missing keys are absent)."""
        import sqlalchemy as sa

        wanted = list(dict.fromkeys(keys))
        columns = self.key_columns(model_name)
        engine = self._engine()
        if not wanted or columns is None or engine is None:
            return {}
        t = self._predictions
        found: dict[str, StoredPrediction] = {}
        try:
            with engine.connect() as conn:
                for start in range(0, len(wanted), 500):  # far under any dialect's bound-parameter limit
                    chunk = wanted[start : start + 500]
                    query = sa.select(t).where(t.c.model_name == model_name, t.c.key.in_(chunk))
                    for row in conn.execute(query).mappings():
                        found[row["key"]] = _stored(columns, row)
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(self.url, exc) from exc
        return found

    def dispose(self) -> None:
        """Close the pool's connections (the engine is rebuilt on the next call)."""
        with _ENGINES_LOCK:
            for cache_key in [k for k in _ENGINES if k[0] == self.url and not k[3]]:
                _ENGINES.pop(cache_key).dispose()


def _stored(columns: list[KeyColumn], row: Mapping[str, Any]) -> StoredPrediction:
    scored_at: datetime = row["scored_at"]
    if scored_at.tzinfo is None:  # SQLite keeps no time zone: the writer wrote UTC
        scored_at = scored_at.replace(tzinfo=UTC)
    probabilities = row["probabilities"]
    return StoredPrediction(
        key=_display(columns, row["key"]),
        prediction=row["prediction"],
        decision=row["decision"],
        predicted_class=row["predicted_class"],
        probabilities=json.loads(probabilities) if probabilities is not None else None,
        model_version=row["model_version"],
        scored_at=scored_at,
    )
