"""Servers and load for the serving benchmark: process groups that are always stopped, wrk, a plain client.

Every server runs in a process group of its own (``start_new_session``), so stopping it also stops what it
started (uvicorn under ``mlflow models serve``, the service's profiling process). ``Processes`` stops them
all on exit, on failure and on Ctrl-C, and ``listening`` checks from /proc/net/tcp that nothing is left.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"


CLK_TCK = os.sysconf("SC_CLK_TCK")


Proc = tuple[int, float, str, int]  # process group, CPU seconds (user + system), command line, parent pid


def processes() -> dict[int, Proc]:
    """Every live process: pid -> (process group, CPU seconds, command line shortened, parent pid)."""
    out: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        fields = raw.rsplit(")", 1)[1].split()
        name = command or raw[raw.find("(") + 1 : raw.rfind(")")]
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        out[int(entry.name)] = (int(fields[2]), cpu, name[:100], int(fields[1]))
    return out


def group_cpu(pgid: int, snapshot: dict[int, Proc] | None = None) -> dict[int, float]:
    """CPU seconds of each live process in process group ``pgid``, by pid."""
    return {pid: p[1] for pid, p in (snapshot or processes()).items() if p[0] == pgid}


class Meter:
    """CPU used on the machine by processes outside this one's tree while a block runs (other users)."""

    def __enter__(self) -> Meter:
        self.p0 = processes()
        self.m0, self.s0, self.c0, self.t0 = machine_busy(), self_cpu(), children_cpu(), time.perf_counter()
        self.other_cores = 0.0
        self.top = ""
        return self

    def __exit__(self, *exc: object) -> None:
        p1 = processes()
        seconds = time.perf_counter() - self.t0
        busy = machine_busy() - self.m0
        deltas = {pid: p[1] - (self.p0[pid][1] if pid in self.p0 else 0.0) for pid, p in p1.items()}
        ours = {os.getpid()}
        changed = True
        while changed:  # the live descendants of this process (a Prefect server, its workers)
            grown = {pid for pid, p in p1.items() if p[3] in ours} - ours
            ours |= grown
            changed = bool(grown)
        mine = (self_cpu() - self.s0) + (children_cpu() - self.c0)
        mine += sum(d for pid, d in deltas.items() if pid in ours and pid != os.getpid())
        self.other_cores = max(0.0, busy - mine) / seconds if seconds else 0.0
        foreign = [(d, p1[pid][2]) for pid, d in deltas.items() if pid not in ours]
        if foreign and max(foreign)[0] >= 0.05 * seconds:
            top = max(foreign)
            self.top = f"{top[0]:.1f} s: {top[1]}"


def machine_busy() -> float:
    """CPU seconds spent not idle by all cores since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening(ports: list[int]) -> list[int]:
    """Those of ``ports`` that some socket on this machine is listening on (IPv4 and IPv6)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                    found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(p for p in ports if p in found)


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the leader (as docker stop and Kubernetes do), so that it shuts down its children
        itself; then SIGTERM and at last SIGKILL to whatever is left of its process group."""
        pgid = self.process.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not group_cpu(pgid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + timeout / 3
            while group_cpu(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class Processes:
    """Starts servers and guarantees they are stopped: ``with Processes(logs) as procs: ...``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[Server] = []
        self.ports: list[int] = []
        self._previous: Any = None

    def __enter__(self) -> Processes:
        self.log_dir.mkdir(parents=True, exist_ok=True)

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
        signal.signal(signal.SIGTERM, self._previous)

    def start(
        self, name: str, command: list[str], env: dict[str, str], port: int, cwd: Path | None = None
    ) -> Server:
        """Start ``command`` in a process group of its own, in ``cwd`` (default: the repository root)."""
        log = self.log_dir / f"{name}.log"
        handle = log.open("wb")
        try:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd or Path(__file__).resolve().parents[1],
            )
        finally:
            handle.close()
        server = Server(name, port, process, log)
        self.servers.append(server)
        self.ports.append(port)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            server.stop()
        self.servers.clear()


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    conn = http.client.HTTPConnection(name, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + rest)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: Server, path: str, timeout: float) -> float:
    """Poll ``path`` until it answers 200; seconds from process start. Fails early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode} before it was ready; "
                f"log {server.log}:\n{server.log_tail()}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = get(server.url + path, timeout=2)
            if status == 200:
                return time.perf_counter() - server.started
        time.sleep(0.25)
    raise RuntimeError(
        f"{server.name} not ready after {timeout:.0f} s; log {server.log}:\n{server.log_tail()}"
    )


class Client:
    """One persistent HTTP/1.1 connection; times whole POSTs (send to last byte read)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- wrk -------------------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- written by benchmarks/serving_procs.py: POST one body, count statuses and served versions
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local cap = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  versions = {}
  seen = 0
end

function response(status, headers, body)
  seen = seen + 1
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  local v = string.match(body, '"model_version":"([^"]*)"')
  if v then versions[v] = (versions[v] or 0) + 1 end
  if cap > 0 and seen >= cap then wrk.thread:stop() end
end

local function encode(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format('"%s":%d', k, v)) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local st, ve = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("statuses") or {}) do st[k] = (st[k] or 0) + v end
    for k, v in pairs(thread:get("versions") or {}) do ve[k] = (ve[k] or 0) + v end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status_errors":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"statuses":%s,' ..
    '"versions":%s}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    encode(st), encode(ve)))
end
"""


def ensure_wrk() -> str:
    """wrk on PATH, installing the Debian package if it is missing; a clear error if that fails."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    notes = []
    if apt and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print("wrk is missing: apt-get install -y wrk", flush=True)
        for command in ([apt, "install", "-y", "wrk"], [apt, "update"], [apt, "install", "-y", "wrk"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            notes.append(f"{' '.join(command[1:])}: rc {done.returncode} {done.stderr.strip()[-300:]}")
            if command[1] == "install" and done.returncode == 0:
                break
        found = shutil.which("wrk")
    elif not apt:
        notes.append("no apt-get on this machine")
    else:
        notes.append("not root: cannot apt-get install")
    if not found:
        raise SystemExit(
            "the serving benchmark needs the load generator wrk and it could not be installed "
            f"({'; '.join(notes)}). Install it (Debian/Ubuntu: `apt-get install -y wrk`, macOS: "
            "`brew install wrk`) and run again."
        )
    return found


@dataclass
class LoadResult:
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int]
    versions: dict[str, int]
    socket_errors: int
    timeouts: int
    capped: bool
    server_cpu_s: float = 0.0  # the server's whole process group
    server_top_cpu_s: float = 0.0  # its busiest process (the one serving)
    wrk_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # every other process on the machine (not the benchmark's)
    other_top: str = ""  # the busiest of those, with its CPU seconds

    @property
    def non_2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not s.startswith("2"))

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors + self.timeouts


class Wrk:
    def __init__(self, work_dir: Path) -> None:
        self.binary = ensure_wrk()
        self.work_dir = work_dir
        self.script = work_dir / "post.lua"
        self.script.write_text(WRK_SCRIPT)
        self.version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0:1]

    def body_file(self, name: str, payload: Any) -> Path:
        path = self.work_dir / f"{name}.json"
        path.write_bytes(json.dumps(payload).encode())
        return path

    def start(
        self,
        url: str,
        body: Path,
        connections: int,
        seconds: float,
        max_requests: int,
        timeout_s: float = 5.0,
    ) -> subprocess.Popen[str]:
        env = {**os.environ, "BENCH_BODY": str(body), "BENCH_MAX_REQUESTS": str(max_requests)}
        command = [
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_s:g}s",
            "--latency",
            "-s",
            str(self.script),
            url,
        ]
        return subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def finish(self, process: subprocess.Popen[str], seconds: float, max_requests: int) -> LoadResult:
        try:
            out, err = process.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(f"wrk did not finish within {seconds + 30:.0f} s") from None
        line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
        if process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed (rc {process.returncode}): {err.strip()[-500:]} {out[-500:]}")
        data = json.loads(line.removeprefix("BENCH_JSON "))
        duration = data["duration_us"] / 1e6
        return LoadResult(
            connections=0,
            seconds=duration,
            requests=data["requests"],
            rps=data["requests"] / duration if duration else 0.0,
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            mean_ms=data["mean_us"] / 1000,
            statuses=data["statuses"],
            versions=data["versions"],
            socket_errors=data["connect"] + data["read"] + data["write"],
            timeouts=data["timeout"],
            capped=max_requests > 0 and data["requests"] >= max_requests,
        )

    def run(
        self,
        url: str,
        body: Path,
        connections: int,
        seconds: float,
        max_requests: int = 0,
        group: int | None = None,
    ) -> LoadResult:
        """One bounded load phase; with ``group`` (a server's process group) also where the CPU went."""
        cap = max_requests or int(seconds * 20_000)
        p0 = processes()
        c0, m0, s0 = children_cpu(), machine_busy(), self_cpu()
        result = self.finish(self.start(url, body, connections, seconds, cap), seconds, cap)
        c1, m1, s1 = children_cpu(), machine_busy(), self_cpu()
        p1 = processes()
        result.connections = connections
        deltas = {pid: p1[pid][1] - (p0[pid][1] if pid in p0 else 0.0) for pid in p1}
        if group:
            mine = [d for pid, d in deltas.items() if p1[pid][0] == group]
            result.server_cpu_s = sum(mine)
            result.server_top_cpu_s = max(mine, default=0.0)
        result.wrk_cpu_s = c1 - c0
        result.other_cpu_s = max(0.0, (m1 - m0) - result.server_cpu_s - result.wrk_cpu_s - (s1 - s0))
        foreign = [(d, p1[pid][2]) for pid, d in deltas.items() if p1[pid][0] != group and pid != os.getpid()]
        if foreign:
            top = max(foreign)
            if top[0] >= 0.05 * result.seconds:
                result.other_top = f"{top[0]:.1f} s: {top[1]}"
        return result
