"""The protocol module's process preparation and uvicorn log filter (its timeouts and connection cap are
tested against the real service in tests/e2e/test_server_limits.py).

Importing ``serving.server_protocol`` prepares the process (limits read from the stack, open-file limit
raised), so those checks run it in a fresh interpreter with the limit set low first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect

ROOT = Path(__file__).resolve().parents[3]


def _prepared(home: Path, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import logging, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        import serving.server_protocol as p
        print(p.LIMITS.open_files, p.LIMITS.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print(any(isinstance(f, p.QuietClientErrors) for f in logging.getLogger("uvicorn.error").filters))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_open_file_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    current = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if current == resource.RLIM_INFINITY else min(current, 4096)
    done = _prepared(tmp_path, 300, hard)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(hard), str(min(2000, hard - 256)), str(hard), "True"]


def test_a_low_hard_limit_lowers_max_connections_and_says_so(tmp_path: Path) -> None:
    done = _prepared(tmp_path, 300, 1000)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "744", "1000", "True"]  # 1000 less 256 for everything else
    assert "max_connections 2000 lowered" in done.stderr


def _record(exc: BaseException | None, msg: str = "Exception in ASGI application\n") -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, msg, (), exc_info)


@pytest.fixture
def quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> logging.Filter:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.delenv("FLYWHEEL_STACK", raising=False)
    from serving.server_protocol import QuietClientErrors

    return QuietClientErrors()


def test_a_client_that_went_away_is_one_info_line(quiet: logging.Filter) -> None:
    for exc in (ClientDisconnect(), ConnectionResetError(104, "reset")):
        record = _record(exc)
        assert quiet.filter(record) is True
        assert record.exc_info is None and record.levelno == logging.INFO
        assert record.getMessage() == (
            f"request abandoned: the client went away before its response ({type(exc).__name__})"
        )


def test_a_request_cut_by_the_shutdown_timeout_is_one_warning(quiet: logging.Filter) -> None:
    record = _record(asyncio.CancelledError())
    assert quiet.filter(record) is True
    assert record.exc_info is None and record.levelno == logging.WARNING
    assert record.getMessage().startswith("request cancelled: the graceful shutdown timeout passed")


def test_a_real_error_keeps_its_traceback(quiet: logging.Filter) -> None:
    record = _record(ValueError("a bug"))
    assert quiet.filter(record) is True
    assert record.exc_info is not None and record.levelno == logging.ERROR
    assert record.getMessage() == "Exception in ASGI application\n"


def test_the_concurrency_warning_is_at_most_once_a_second(quiet: logging.Filter) -> None:
    shown = [quiet.filter(_record(None, "Exceeded concurrency limit.")) for _ in range(50)]
    assert shown == [True] + [False] * 49
    time.sleep(1.05)
    record = _record(None, "Exceeded concurrency limit.")
    assert quiet.filter(record) is True
    assert record.getMessage().startswith("Exceeded concurrency limit (and 49 more times in the last 1 s)")
