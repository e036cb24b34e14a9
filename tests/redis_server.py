"""A throwaway Redis server: Debian's ``redis-server`` (installed by scripts/apt-install.sh when missing),
on a free loopback port, no persistence, in a temporary folder; stopped and deleted whatever the tests did.

Starting one costs about 50 ms, so each test module that streams starts its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALLER = Path(__file__).resolve().parents[1] / "scripts" / "apt-install.sh"


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    installed = subprocess.run(
        ["bash", str(INSTALLER), "redis-server", "redis-server"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert installed.returncode == 0, f"redis-server could not be installed: {installed.stderr[-2000:]}"
    return installed.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a fresh server (on ``port``, else a free one), for as long as the
    context lasts."""
    import redis

    binary = redis_binary()
    root = Path(tempfile.mkdtemp(prefix="flywheel-redis-"))
    port = port or free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), "--save", ""]
    cmd += ["--appendonly", "no", "--daemonize", "no", "--logfile", str(root / "redis.log")]
    process = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None, (
                    f"redis-server exited: {(root / 'redis.log').read_text()[-2000:]}"
                )
                assert time.monotonic() < deadline, "redis-server did not answer within 30 s"
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
