"""A throwaway PostgreSQL server for one test module: Debian's binaries, a cluster in a temporary folder, a
free loopback port, stopped and deleted afterwards whatever the tests did.

Starting one costs a few seconds (initdb, then the server), against minutes for the whole staging stack
(``tests/e2e/test_staging.py``), so the tests of what is stored in PostgreSQL start their own. As there,
the cluster runs as Debian's ``postgres`` user when the tests run as root (PostgreSQL refuses root), in a
folder outside pytest's private temporary root that the ``postgres`` user can reach.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALLER = Path(__file__).resolve().parents[1] / "scripts" / "apt-install.sh"


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql://flywheel@127.0.0.1:PORT/postgres`` on a fresh cluster (loopback, trust auth)."""
    pg_bin = _pg_bin()
    if pg_bin is None:  # a fresh machine: Debian's package, as scripts/staging-up.sh installs it
        installed = subprocess.run(
            ["bash", str(INSTALLER), "postgresql"], capture_output=True, text=True, timeout=900, check=False
        )
        pg_bin = _pg_bin()
        assert pg_bin is not None, f"PostgreSQL could not be installed: {installed.stderr[-2000:]}"
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    root.chmod(0o711)
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:
        uid = pwd.getpwnam("postgres").pw_uid
        for folder in (data, sock):
            os.chown(folder, uid, -1)
    port = _free_port()
    pg_ctl = [str(pg_bin / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        init = _run([str(pg_bin / "initdb"), "-D", str(data), "-U", "flywheel", "--auth=trust", "-E", "UTF8"])
        assert init.returncode == 0, f"initdb failed: {init.stderr[-2000:]}"
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = _run([*pg_ctl, "-l", str(data / "log"), "-w", "-t", "60", "-o", opts, "start"])
        started = True
        assert start.returncode == 0, f"PostgreSQL did not start: {start.stderr[-2000:]}"
        yield f"postgresql://flywheel@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _run([*pg_ctl, "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(root, ignore_errors=True)
