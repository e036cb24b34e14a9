"""The prediction store: upserts and lookups on a real SQLite file (and on a real PostgreSQL, slow), keys
read alike from data, JSON and URL segments, and the stack component's configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from stacks.components.prediction_store import (
    MAX_KEY_CHARS,
    BadKey,
    KeyColumn,
    PredictionReader,
    PredictionWriter,
    canonical_key,
    canonical_keys,
    key_kinds,
)
from stacks.config import StackError, parse_stack
from stacks.loader import read_yaml
from tests.postgres import postgres_url  # noqa: F401 - the fixture

FLIGHT = ["year", "month", "day", "carrier", "flight", "origin"]


def _part(n: int, offset: float = 0.0) -> pd.DataFrame:
    """A scored part as write_part leaves it (binary): row, key columns, prediction, decision."""
    rng = np.random.default_rng(n)
    p = np.clip(rng.random(n) + offset, 0, 1)
    return pd.DataFrame(
        {
            "row": np.arange(n),
            "year": np.full(n, 2013, dtype="int64"),
            "month": np.full(n, 1, dtype="int64"),
            "day": np.arange(n) % 28 + 1,
            "carrier": np.where(np.arange(n) % 2 == 0, "UA", "AA"),
            "flight": np.arange(n, dtype="int64") + 100,
            "origin": "EWR",
            "prediction": p,
            "decision": p >= 0.3,
        }
    )


def _writer(
    url: str, version: str, key_columns: list[KeyColumn], when: datetime | None = None
) -> PredictionWriter:
    return PredictionWriter(
        url=url,
        table="predictions",
        model_name="flight-delay",
        model_version=version,
        key_columns=key_columns,
        batch=f"inference/flight-delay/v{version}/out",
        scored_at=when or datetime.now(UTC),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.slow, pytest.mark.e2e])])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'predictions.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(base)
    with engine.begin() as conn:  # each test on its own tables
        conn.exec_driver_sql("DROP TABLE IF EXISTS predictions, predictions_keys")
    engine.dispose()
    yield base


def _key(row: pd.Series) -> str:
    cols = key_kinds(_part(1)[FLIGHT].dtypes.to_dict())
    return canonical_key(cols, [row[c] for c in FLIGHT])


def test_upsert_then_lookup_every_key(url: str) -> None:
    part = _part(300)
    columns = key_kinds(part[FLIGHT].dtypes.to_dict())
    assert [c.kind for c in columns] == ["number", "number", "number", "text", "number", "text"]
    first = _writer(url, "1", columns, datetime(2026, 1, 1, tzinfo=UTC))
    first.prepare()
    assert first.write(part) == 300 and first.stored() == 300
    reader = PredictionReader(url, "predictions")
    assert reader.key_columns("flight-delay") == columns
    keys = [_key(r) for _, r in part.iterrows()]
    found = reader.lookup("flight-delay", keys)
    assert len(found) == 300
    for key, (_, row) in zip(keys, part.iterrows(), strict=True):
        got = found[key]
        assert got.prediction == pytest.approx(row["prediction"], rel=1e-12)
        assert got.decision == bool(row["decision"]) and got.model_version == "1"
        assert got.scored_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert got.key == {c: (row[c] if isinstance(row[c], str) else int(row[c])) for c in FLIGHT}

    # a later run (another version) replaces the keys it scores and leaves the others as they were
    later = _part(300, offset=0.5).iloc[:100]
    second = _writer(url, "2", columns, datetime(2026, 1, 2, tzinfo=UTC))
    second.prepare()
    assert second.write(later) == 100
    found = reader.lookup("flight-delay", keys)
    assert len(found) == 300
    assert [found[k].model_version for k in keys] == ["2"] * 100 + ["1"] * 200
    assert [found[k].prediction for k in keys[:100]] == pytest.approx(later["prediction"].tolist())
    assert found[keys[150]].prediction == pytest.approx(part["prediction"].iloc[150])
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 300
    engine.dispose()
    reader.dispose()


def test_a_key_reads_alike_from_data_json_and_path(url: str) -> None:
    part = _part(5)
    columns = key_kinds(part[FLIGHT].dtypes.to_dict())
    writer = _writer(url, "1", columns)
    writer.prepare()
    writer.write(part)
    reader = PredictionReader(url, "predictions")
    row = part.iloc[3]
    forms: list[list[Any] | dict[str, Any]] = [
        ["2013", "1", str(row["day"]), row["carrier"], str(row["flight"]), "EWR"],  # path segments
        [2013, 1.0, int(row["day"]), row["carrier"], int(row["flight"]), "EWR"],  # JSON
        {
            "origin": "EWR",
            "flight": int(row["flight"]),
            "carrier": row["carrier"],
            "day": int(row["day"]),
            "month": 1,
            "year": 2013,
        },
    ]
    keys = {canonical_key(columns, form) for form in forms}
    assert len(keys) == 1
    (found,) = reader.lookup("flight-delay", keys).values()
    assert found.prediction == pytest.approx(row["prediction"])
    assert reader.lookup("flight-delay", [canonical_key(columns, [2013, 1, 1, "XX", 1, "EWR"])]) == {}
    assert reader.lookup("another-model", keys) == {}
    reader.dispose()


def test_duplicates_keep_the_last_and_keyless_rows_are_skipped(tmp_path: Path) -> None:
    part = _part(10)
    part.loc[4, FLIGHT] = part.loc[3, FLIGHT].to_numpy()  # row 4 repeats row 3's key
    part["flight"] = part["flight"].astype("float64")
    part.loc[7, "flight"] = np.nan  # no key: cannot be looked up
    columns = key_kinds(part[FLIGHT].dtypes.to_dict())
    writer = _writer(f"sqlite:///{tmp_path / 'p.db'}", "1", columns)
    rows, skipped = writer.rows(part)
    assert len(rows) == 8 and skipped == 2
    by_key = {r["key"]: r for r in rows}
    assert (
        by_key[canonical_key(columns, part.loc[3, FLIGHT].tolist())]["prediction"]
        == part.loc[4, "prediction"]
    )


def test_changed_key_columns_drop_the_old_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    part = _part(20)
    old = key_kinds(part[FLIGHT[:5]].dtypes.to_dict())
    first = _writer(url, "1", old)
    first.prepare()
    first.write(part)
    new = key_kinds(part[FLIGHT].dtypes.to_dict())
    second = _writer(url, "2", new, datetime.now(UTC) + timedelta(seconds=1))
    second.prepare()
    reader = PredictionReader(url, "predictions")
    assert reader.key_columns("flight-delay") == new
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 0
    engine.dispose()


def test_multiclass_parts_keep_the_class_and_every_probability(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    part = pd.DataFrame(
        {
            "id": ["a", "b"],
            "prediction": ["Fair", "Ideal"],
            "probability_Fair": [0.7, 0.1],
            "probability_Ideal": [0.3, 0.9],
        }
    )
    columns = key_kinds(part[["id"]].dtypes.to_dict())
    writer = _writer(url, "4", columns)
    writer.prepare()
    writer.write(part)
    found = PredictionReader(url, "predictions").lookup("flight-delay", [canonical_key(columns, ["b"])])
    (b,) = found.values()
    assert b.predicted_class == "Ideal" and b.prediction == pytest.approx(0.9)
    assert b.probabilities == {"Fair": pytest.approx(0.1), "Ideal": pytest.approx(0.9)}
    assert b.decision is None


def test_a_reader_creates_no_database(tmp_path: Path) -> None:
    db = tmp_path / "never-written.db"
    reader = PredictionReader(f"sqlite:///{db}", "predictions")
    assert reader.key_columns("flight-delay") is None
    assert reader.lookup("flight-delay", ['["x"]']) == {}
    assert not db.exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["2013", "1"], "has 6 values"),
        (["2013", "one", "1", "UA", "1", "EWR"], "key column 'month' is a number, got 'one'"),
        ([2013, True, 1, "UA", 1, "EWR"], "key column 'month' is a number"),
        ([2013, float("nan"), 1, "UA", 1, "EWR"], "'month' is missing"),
        ([2013, 1, 1, None, 1, "EWR"], "'carrier' is missing"),
        ([2013, 1, 1, {"a": 1}, 1, "EWR"], "'carrier' is a text"),
        ({"year": 2013, "nope": 1}, "unknown 'nope'; missing month, day, carrier, flight, origin"),
        ([2013, 1, 1, "U" * MAX_KEY_CHARS, 1, "EWR"], f"at most {MAX_KEY_CHARS} characters"),
    ],
)
def test_bad_keys_say_what_a_key_is(values: object, message: str) -> None:
    columns = key_kinds(_part(1)[FLIGHT].dtypes.to_dict())
    with pytest.raises(BadKey, match=message.replace("(", r"\(")):
        canonical_key(columns, values)  # type: ignore[arg-type]


def test_big_integers_stay_exact() -> None:
    columns = [KeyColumn("id", "number")]
    big = 2**60 + 1
    assert json.loads(canonical_key(columns, [np.int64(big)])) == [str(big)]
    assert canonical_key(columns, [str(big)]) == canonical_key(columns, [big])


def _stack(configuration: dict[str, object]) -> dict[str, object]:
    data = read_yaml(Path("stacks/local.yaml"))
    data["components"]["prediction_store"]["configuration"] = configuration
    return data  # type: ignore[no-any-return]


def test_the_stack_component_refuses_passwords_and_bad_names() -> None:
    with pytest.raises(StackError, match=r"key 'url' is a URL with a password inline .*u:\*\*\*@"):
        parse_stack(_stack({"url": "postgresql://u:pw@db/p"}), "s.yaml")
    with pytest.raises(StackError, match="key 'table'"):
        parse_stack(_stack({"url": "sqlite:///p.db", "table": "p; DROP TABLE x"}), "s.yaml")
    with pytest.raises(StackError, match="url must be a SQLAlchemy URL"):
        parse_stack(_stack({"url": "p.db"}), "s.yaml")
    stack = parse_stack(_stack({"url": "{{predictions.db_url}}", "fallback": "live"}), "s.yaml")
    assert [ref for _, _, ref in stack.secret_refs()] == ["{{predictions.db_url}}"]


def test_the_keys_of_a_frame_are_each_rows_key() -> None:
    from stacks.components.prediction_store import BadKey

    columns = [KeyColumn("n", "number"), KeyColumn("t", "text")]
    frame = pd.DataFrame(
        {
            "n": [2013, 2013.0, 7.5, np.nan, 3, 2**60, 1, 2],
            "t": ["UA", 'Zürich "q"', "x", "y", None, "a", "b" * 2000, 5],
        },
        dtype=object,
    )
    expected: list[str | None] = []
    for row in frame.itertuples(index=False, name=None):
        try:
            expected.append(canonical_key(columns, list(row)))
        except BadKey:
            expected.append(None)
    assert canonical_keys(columns, frame) == expected
    assert expected[0] == '["2013", "UA"]' and expected[1].startswith('["2013", "Zürich')  # type: ignore[union-attr]
    assert expected[3] is None and expected[4] is None and expected[6] is None  # missing, missing, too long
