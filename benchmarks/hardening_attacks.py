"""The hardening battery's clients: raw HTTP over sockets, so that any body, header, framing or pace can
be sent.

Everything here talks to 127.0.0.1 only and stops by itself: every request has a timeout (``HANG_S``: no
answer within it is a hang), every loop a deadline. Used by ``benchmarks/hardening.py`` and by
``tests/e2e/test_hardening.py``; ``python -m benchmarks.hardening_attacks flood ...`` runs the amplification
clients in a process of their own (so that they do not share the measuring client's interpreter).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import re
import select
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"
JSON = "application/json"
HANG_S = 10.0
"""A request with no answer within this many seconds is a hang."""
MB = 1e6

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")


# ------------------------------------------------------------------------------------------------- memory


def tree_rss(pid: int, children: bool = True) -> int:
    """Resident bytes of ``pid`` and (with ``children``) every live descendant; 0 when it is gone."""
    try:
        proc = psutil.Process(pid)
        family = [proc, *(proc.children(recursive=True) if children else [])]
    except psutil.Error:
        return 0
    total = 0
    for p in family:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class RssSampler:
    """The peak RSS of a process (tree) while a block runs, sampled every ``every`` seconds in a thread."""

    def __init__(self, pid: int, children: bool = False, every: float = 0.05) -> None:
        self.pid, self.children, self.every = pid, children, every
        self.before = 0
        self.peak = 0
        self.after = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, tree_rss(self.pid, self.children))

    def __enter__(self) -> RssSampler:
        self.before = self.peak = tree_rss(self.pid, self.children)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.after = tree_rss(self.pid, self.children)
        self.peak = max(self.peak, self.after)

    @property
    def peak_growth_mb(self) -> float:
        return (self.peak - self.before) / MB


# ---------------------------------------------------------------------------------------------- one request


@dataclass
class Answer:
    status: int | None
    body: bytes
    seconds: float
    error: str | None = None  # "hang": nothing within the timeout; else why there was no answer

    @property
    def kind(self) -> str:
        """``2xx``, ``4xx``, ``5xx``, ``hang`` or ``no answer`` (closed or reset without a status line)."""
        if self.status is not None:
            return f"{self.status // 100}xx"
        return "hang" if self.error == "hang" else "no answer"


def request_bytes(
    port: int,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None = JSON,
    headers: dict[str, str] | None = None,
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request as bytes: ``Content-Length`` for ``body`` (none for ``None``), any Content-Type or
    none at all."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if close:
        lines.append("Connection: close")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def send(port: int, raw: bytes, timeout: float = HANG_S) -> Answer:
    """Send ``raw`` on a fresh connection and read one response (http.client's parser).

    A large body goes out after its headers, in 64 KB pieces, with a look for an early answer before each:
    a server that refuses a body by its Content-Length answers and closes before it is sent, and the answer
    must not be lost to the reset that writing on would cause."""
    started = time.perf_counter()
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as exc:
        return Answer(None, b"", time.perf_counter() - started, f"connect: {exc}")
    try:
        sock.settimeout(timeout)
        head_end = raw.find(b"\r\n\r\n") + 4
        large = len(raw) - head_end > 65536
        pieces: list[bytes | memoryview] = [raw[:head_end], *_pieces(raw[head_end:])] if large else [raw]
        waited = 0.0  # the look for an early answer is the client's time, not the server's
        try:
            for i, piece in enumerate(pieces):
                if i:
                    t0 = time.perf_counter()
                    early = select.select([sock], [], [], 0.05 if i == 1 else 0)[0]
                    waited += time.perf_counter() - t0
                    if early:
                        break  # answered (or closed) before the whole request was sent
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer, if there is one, is read below
        except TimeoutError:
            return Answer(None, b"", time.perf_counter() - started, "hang")
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            data = response.read()
        except TimeoutError:
            return Answer(None, b"", time.perf_counter() - started - waited, "hang")
        except (http.client.HTTPException, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"[:200]
            return Answer(None, b"", time.perf_counter() - started - waited, why)
        return Answer(response.status, data, time.perf_counter() - started - waited)
    finally:
        sock.close()


def _pieces(body: bytes, size: int = 65536) -> list[memoryview]:
    view = memoryview(body)
    return [view[i : i + size] for i in range(0, len(view), size)]


def post(port: int, path: str, payload: Any, timeout: float = HANG_S) -> Answer:
    """A JSON POST of ``payload`` (serialised here)."""
    return send(port, request_bytes(port, "POST", path, json.dumps(payload).encode()), timeout)


# ------------------------------------------------------------------------------------------- bad requests


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes | None
    content_type: str | None = JSON
    expect: tuple[int, ...] = ()  # acceptable statuses; empty: any 4xx
    method: str = "POST"

    def accepts(self, status: int | None) -> bool:
        if status is None:
            return False
        return status in self.expect if self.expect else 400 <= status < 500


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int, opener: str, closer: str) -> bytes:
    return (opener * depth + closer * depth).encode()


def many_keys(n: int = 100_000) -> bytes:
    """A JSON object of ``n`` unknown keys (100,000: 1.7 MB, under the 2 MB limit)."""
    return _j({f"k{i}": i for i in range(n)})


def bad_input_cases(
    columns: list[Any], record: dict[str, Any], issued: dict[str, str], max_batch: int
) -> list[Case]:
    """Hand-made bad requests for every POST endpoint of the service.

    ``columns``: the model's feature columns (``name``, ``kind``, ``categories``, ``nullable``); ``record``:
    a valid record; ``issued``: request ids the service gave out (``one``, ``two``: one-row requests,
    ``batch``: a three-row request), for the feedback cases. The feedback cases that label an id are in
    order: the first label is accepted (202), its repeat is refused (409).
    """
    huge = "x" * 1_900_000  # under the 2 MB body limit: must be refused without being echoed back
    cases: list[Case] = []
    record_paths = ("/predict", "/explain")
    all_paths = ("/predict", "/predict/batch", "/predict/columns", "/explain", "/feedback")

    # the body itself: not JSON, not UTF-8, empty, nested past any parser's depth, the wrong media type
    for path in all_paths:
        cases += [
            Case(f"{path} empty body", path, b""),
            Case(f"{path} no body, no Content-Length", path, None),
            Case(f"{path} not JSON", path, b"hello"),
            Case(f"{path} truncated JSON", path, b'{"a": '),
            Case(f"{path} invalid UTF-8", path, b'{"\xff\xfe": 1}'),
            Case(f"{path} NaN literal", path, b"NaN"),
            Case(f"{path} JSON null", path, b"null"),
            Case(f"{path} JSON number", path, b"1"),
            Case(f"{path} JSON string", path, b'"s"'),
            Case(f"{path} JSON array", path, b"[]"),
            Case(f"{path} JSON true", path, b"true"),
            Case(f"{path} nesting 100k arrays", path, _nested(100_000, "[", "]")),
            Case(f"{path} nesting 10k objects", path, b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
            Case(f"{path} text/plain", path, _j(record), "text/plain", (415,)),
            Case(f"{path} form", path, b"a=1&b=2", "application/x-www-form-urlencoded", (415,)),
            Case(
                f"{path} multipart", path, b"--x\r\n\r\n1\r\n--x--", "multipart/form-data; boundary=x", (415,)
            ),
            Case(f"{path} application/xml", path, b"<a/>", "application/xml", (415,)),
            Case(f"{path} text/json", path, _j(record), "text/json", (415,)),
            Case(f"{path} no Content-Type", path, _j(record), None, (415,)),
            Case(f"{path} 1.9 MB extra field", path, _j({"junk": huge})),
            Case(f"{path} 2.1 MB body", path, _j({"junk": "y" * 2_100_000}), JSON, (413,)),
            Case(f"{path} 20,000 unknown keys", path, _j({f"k{i}": i for i in range(20_000)})),
            Case(f"{path} 100,000 unknown keys (1.7 MB)", path, many_keys()),
        ]

    # one record, field by field
    for path in record_paths:
        cases += [
            Case(f"{path} empty object", path, b"{}"),
            Case(f"{path} extra field", path, _j({**record, "unexpected": 1})),
            Case(f"{path} list of records", path, _j([record])),
            Case(f"{path} wrapped as records", path, _j({"records": [record]})),
        ]
        for c in columns:
            name = c.name
            without = {k: v for k, v in record.items() if k != name}
            mutations: list[tuple[str, Any]] = [("as object", {"a": 1}), ("as list", [1]), ("as bool", True)]
            if c.kind == "categorical":
                mutations += [
                    ("out of vocabulary", "NOT-A-KNOWN-VALUE"),
                    ("empty string", ""),
                    ("as number", 1),
                    ("1.9 MB string", huge),
                ]
            else:
                mutations += [
                    ("as string", "1"),
                    ("1e308", 1e308),
                    ("-1e39", -1e39),
                    ("1.9 MB string", huge),
                ]
            if not c.nullable:
                mutations.append(("null", None))
                cases.append(Case(f"{path} {name} missing", path, _j(without)))
            cases += [Case(f"{path} {name} {what}", path, _j({**record, name: v})) for what, v in mutations]
        numeric = next((c.name for c in columns if c.kind != "categorical"), None)
        if numeric is not None:
            text = json.dumps(record)
            key = f'"{numeric}": '
            start = text.index(key) + len(key)
            end = start + len(json.dumps(record[numeric]))
            cases += [
                Case(
                    f"{path} {numeric} 1e400 (overflows a double)",
                    path,
                    (text[:start] + "1e400" + text[end:]).encode(),
                ),
                Case(
                    f"{path} {numeric} Infinity literal",
                    path,
                    (text[:start] + "Infinity" + text[end:]).encode(),
                ),
                Case(
                    f"{path} {numeric} 400-digit integer",
                    path,
                    (text[:start] + "9" * 400 + text[end:]).encode(),
                ),
            ]
    cases += [
        Case("/explain top_k=0", "/explain?top_k=0", _j(record)),
        Case("/explain top_k=abc", "/explain?top_k=abc", _j(record)),
        Case("/explain top_k=100000", "/explain?top_k=100000", _j(record)),
    ]

    # batches of records
    bad = {**record, columns[0].name: {"a": 1}}
    cases += [
        Case("/predict/batch records empty", "/predict/batch", _j({"records": []})),
        Case("/predict/batch records null", "/predict/batch", _j({"records": None})),
        Case("/predict/batch records string", "/predict/batch", _j({"records": "x"})),
        Case("/predict/batch records numbers", "/predict/batch", _j({"records": [1, 2, 3]})),
        Case("/predict/batch records nested lists", "/predict/batch", _j({"records": [[[[record]]]]})),
        Case("/predict/batch one empty record", "/predict/batch", _j({"records": [{}]})),
        Case("/predict/batch 1,000 empty records", "/predict/batch", _j({"records": [{}] * 1000})),
        Case("/predict/batch 1,000 nulls", "/predict/batch", _j({"records": [None] * 1000})),
        Case(
            "/predict/batch over the batch limit",
            "/predict/batch",
            _j({"records": [record] * (max_batch + 1)}),
        ),
        Case("/predict/batch last record bad", "/predict/batch", _j({"records": [record] * 999 + [bad]})),
        Case("/predict/batch first record bad", "/predict/batch", _j({"records": [bad] + [record] * 999})),
        Case("/predict/batch extra top-level key", "/predict/batch", _j({"records": [record], "x": 1})),
        Case(
            "/predict/batch records and columns", "/predict/batch", _j({"records": [record], "columns": {}})
        ),
        Case("/predict/batch a bare record", "/predict/batch", _j(record)),
    ]

    # batches of columns
    as_columns = {k: [v] for k, v in record.items()}
    first = columns[0].name
    cases += [
        Case("/predict/columns columns empty", "/predict/columns", _j({"columns": {}})),
        Case("/predict/columns columns list", "/predict/columns", _j({"columns": [as_columns]})),
        Case("/predict/columns columns null", "/predict/columns", _j({"columns": None})),
        Case(
            "/predict/columns unknown column", "/predict/columns", _j({"columns": {**as_columns, "zz": [1]}})
        ),
        Case(
            "/predict/columns unequal lengths",
            "/predict/columns",
            _j({"columns": {**as_columns, first: [record[first]] * 2}}),
        ),
        Case(
            "/predict/columns scalar not list",
            "/predict/columns",
            _j({"columns": {**as_columns, first: record[first]}}),
        ),
        Case("/predict/columns empty lists", "/predict/columns", _j({"columns": {k: [] for k in record}})),
        Case(
            "/predict/columns over the batch limit",
            "/predict/columns",
            _j({"columns": {k: [v] * (max_batch + 1) for k, v in record.items()}}),
        ),
        Case(
            "/predict/columns wrong types",
            "/predict/columns",
            _j({"columns": {k: [{"a": 1}] for k in record}}),
        ),
        Case(
            "/predict/columns 1.9 MB value",
            "/predict/columns",
            _j({"columns": {**as_columns, first: [huge]}}),
        ),
        Case("/predict/columns a bare record", "/predict/columns", _j(record)),
    ]

    # feedback poison, unknown and forged ids, repeats
    one, two, batch = issued["one"], issued["two"], issued["batch"]
    forged = one[:-4] + ("0000" if not one.endswith("0000") else "1111")
    for label in (2, -1, 0.5, 1e308, True, "1", ["nan"], None, "nan", {"v": 1}, [1], -0.0001):
        cases.append(Case(f"/feedback label {label!r}", "/feedback", _j({"request_id": one, "label": label})))
    cases += [
        Case("/feedback label 1e400", "/feedback", f'{{"request_id": "{one}", "label": 1e400}}'.encode()),
        Case("/feedback label NaN literal", "/feedback", f'{{"request_id": "{one}", "label": NaN}}'.encode()),
        Case("/feedback unknown id", "/feedback", _j({"request_id": "abc", "label": 1}), JSON, (404,)),
        Case("/feedback forged id", "/feedback", _j({"request_id": forged, "label": 1}), JSON, (404,)),
        Case(
            "/feedback made-up id of the right shape",
            "/feedback",
            _j({"request_id": "1-1-" + "0" * 16 + "-" + "0" * 24, "label": 1}),
            JSON,
            (404,),
        ),
        Case("/feedback 300-character id", "/feedback", _j({"request_id": "a" * 300, "label": 1})),
        Case("/feedback empty id", "/feedback", _j({"request_id": "", "label": 1})),
        Case("/feedback numeric id", "/feedback", _j({"request_id": 123, "label": 1})),
        Case("/feedback no id", "/feedback", _j({"label": 1})),
        Case("/feedback no label", "/feedback", _j({"request_id": one})),
        Case("/feedback extra field", "/feedback", _j({"request_id": one, "label": 1, "x": 1})),
        Case("/feedback label and labels", "/feedback", _j({"request_id": one, "label": 1, "labels": [1]})),
        Case("/feedback labels for a one-row id", "/feedback", _j({"request_id": one, "labels": [1, 0]})),
        Case("/feedback labels empty", "/feedback", _j({"request_id": batch, "labels": []})),
        Case("/feedback labels too few", "/feedback", _j({"request_id": batch, "labels": [1, 0]})),
        Case(
            "/feedback labels too many",
            "/feedback",
            _j({"request_id": batch, "labels": [1] * (max_batch + 1)}),
        ),
        Case("/feedback labels poisoned", "/feedback", _j({"request_id": batch, "labels": [1, 2, 0]})),
        Case("/feedback one label for a batch", "/feedback", _j({"request_id": batch, "label": 1})),
        Case("/feedback row out of range", "/feedback", _j({"request_id": f"{batch}:3", "label": 1})),
        Case("/feedback row negative", "/feedback", _j({"request_id": f"{batch}:-1", "label": 1})),
        Case("/feedback row not a number", "/feedback", _j({"request_id": f"{batch}:x", "label": 1})),
        Case("/feedback row of a one-row id", "/feedback", _j({"request_id": f"{one}:1", "label": 1})),
        Case(
            "/feedback first label (accepted)", "/feedback", _j({"request_id": one, "label": 1}), JSON, (202,)
        ),
        Case("/feedback repeat", "/feedback", _j({"request_id": one, "label": 1}), JSON, (409,)),
        Case("/feedback repeat, other label", "/feedback", _j({"request_id": one, "label": 0}), JSON, (409,)),
        Case(
            "/feedback batch labels (accepted)",
            "/feedback",
            _j({"request_id": batch, "labels": [1, 0, 1]}),
            JSON,
            (202,),
        ),
        Case(
            "/feedback batch labels repeat",
            "/feedback",
            _j({"request_id": batch, "labels": [1, 0, 1]}),
            JSON,
            (409,),
        ),
        Case(
            "/feedback batch row after labels",
            "/feedback",
            _j({"request_id": f"{batch}:1", "label": 0}),
            JSON,
            (409,),
        ),
        Case(
            "/feedback second id row 0 (accepted)",
            "/feedback",
            _j({"request_id": two, "label": 0}),
            JSON,
            (202,),
        ),
        Case(
            "/feedback second id as row 0 again",
            "/feedback",
            _j({"request_id": f"{two}:0", "label": 0}),
            JSON,
            (404, 409, 422),
        ),
    ]
    return cases


# ------------------------------------------------------------------------------------------ large uploads


@dataclass
class Upload:
    status: int | None
    sent_bytes: int
    answered_s: float | None  # from the first byte sent to the server's answer
    sent_before_answer: int | None
    closed_s: float | None  # when the server closed the connection (None: it did not, or we stopped first)
    seconds: float
    error: str | None = None


def _chunks(first: bytes, filler: bytes, total: int) -> Iterator[bytes]:
    """Chunked-encoding frames of ``first`` and then ``filler`` until ``total`` body bytes, then the end."""
    yield b"%x\r\n%s\r\n" % (len(first), first)
    frame = b"%x\r\n%s\r\n" % (len(filler), filler)
    sent = len(first)
    while sent + len(filler) <= total:
        yield frame
        sent += len(filler)
    yield b"0\r\n\r\n"


def chunked_upload(
    port: int,
    path: str,
    total_bytes: int = 1 << 30,
    *,
    stop_on_answer: bool = True,
    limit_s: float = 60.0,
    chunk_bytes: int = 256 * 1024,
    content_type: str = JSON,
) -> Upload:
    """POST a ``total_bytes`` chunked body (no Content-Length) over a raw socket, generated as it goes.

    With ``stop_on_answer`` the generator stops as soon as the server answers or closes; without it, it goes
    on after the answer (an attacker does not care) until the server closes, the body is all sent or
    ``limit_s`` passes: how much a server reads after refusing a body, and for how long."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    frames = _chunks(b'{"records": [{"name": "', b"a" * chunk_bytes, total_bytes)
    started = time.perf_counter()
    sock = socket.create_connection((HOST, port), timeout=HANG_S)
    sock.setblocking(False)
    pending = memoryview(head)
    sent = 0
    received = b""
    answered_s: float | None = None
    before_answer: int | None = None
    closed_s: float | None = None
    error: str | None = None
    done_sending = False
    try:
        while time.perf_counter() - started < limit_s:
            if not pending and not done_sending:
                frame = next(frames, None)
                if frame is None:
                    done_sending = True  # the whole body went out: wait for the answer
                else:
                    pending = memoryview(frame)
            want_write = len(pending) > 0
            readable, writable, _ = select.select([sock], [sock] if want_write else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError) as exc:
                    closed_s, error = time.perf_counter() - started, type(exc).__name__
                    break
                if not data:
                    closed_s = time.perf_counter() - started
                    break
                received += data[: max(0, 4096 - len(received))]
                if answered_s is None:
                    answered_s, before_answer = time.perf_counter() - started, sent
                if stop_on_answer:
                    break
            if writable and want_write:
                try:
                    n = sock.send(pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except (ConnectionResetError, BrokenPipeError) as exc:
                    closed_s, error = time.perf_counter() - started, type(exc).__name__
                    break
                sent += n
                pending = pending[n:]
        if answered_s is None:  # the loop ended on a close or the limit: pick up an answer already there
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.settimeout(2)
                more = sock.recv(65536)
                if more:
                    received += more[:4096]
                    answered_s = time.perf_counter() - started
    finally:
        sock.close()
    match = _STATUS.match(received)
    return Upload(
        status=int(match.group(1)) if match else None,
        sent_bytes=max(0, sent - len(head)),
        answered_s=answered_s,
        sent_before_answer=None if before_answer is None else max(0, before_answer - len(head)),
        closed_s=closed_s,
        seconds=time.perf_counter() - started,
        error=error,
    )


def declared_upload(port: int, path: str, declared: int = 1 << 30) -> Answer:
    """Headers that declare a ``declared``-byte body, then 64 KB of it: the answer must not wait for more."""
    head = request_bytes(port, "POST", path, None, JSON, {"Content-Length": str(declared)}, close=True)
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=HANG_S) as sock:
        try:
            sock.sendall(head + b"{" + b" " * 65535)
            response = http.client.HTTPResponse(sock)
            response.begin()
            return Answer(response.status, response.read(), time.perf_counter() - started)
        except TimeoutError:
            return Answer(None, b"", time.perf_counter() - started, "hang")
        except (http.client.HTTPException, OSError) as exc:
            return Answer(None, b"", time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:200])


# -------------------------------------------------------------------------------------------- slow clients


@dataclass
class Slow:
    kind: str
    sock: socket.socket
    ready_s: float  # when its last byte was sent (perf_counter)
    answered_s: float | None = None
    status: int | None = None
    closed_s: float | None = None


def open_slow(port: int, kind: str, n: int, path: str = "/predict") -> list[Slow]:
    """``n`` connections that stop part-way: ``idle`` sends nothing, ``partial-headers`` the request line and
    one header, ``partial-body`` every header (a 1,000-byte JSON body announced) and 10 bytes of the body."""
    sent = {
        "idle": b"",
        "partial-headers": f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode(),
        "partial-body": request_bytes(port, "POST", path, None, JSON, {"Content-Length": "1000"}, close=False)
        + b'{"records"',
    }[kind]
    out = []
    for _ in range(n):
        sock = socket.create_connection((HOST, port), timeout=HANG_S)
        if sent:
            sock.sendall(sent)
        sock.setblocking(False)
        out.append(Slow(kind, sock, time.perf_counter()))
    return out


def watch_closed(slow: list[Slow], limit_s: float) -> None:
    """Wait until the server closed every one of ``slow`` (or ``limit_s`` passes), noting when each was
    answered (the status of any answer) and closed; then close whatever is left, from this side."""
    selector = selectors.DefaultSelector()
    for s in slow:
        selector.register(s.sock, selectors.EVENT_READ, s)
    open_count = len(slow)
    deadline = time.perf_counter() + limit_s
    try:
        while open_count and time.perf_counter() < deadline:
            for key, _ in selector.select(timeout=0.2):
                one: Slow = key.data
                try:
                    data = one.sock.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                except BlockingIOError:
                    continue
                now = time.perf_counter()
                if data:
                    if one.answered_s is None:
                        one.answered_s = now - one.ready_s
                        match = _STATUS.match(data)
                        one.status = int(match.group(1)) if match else None
                    continue
                one.closed_s = now - one.ready_s
                selector.unregister(one.sock)
                open_count -= 1
    finally:
        selector.close()
        for s in slow:
            s.sock.close()


def partial_body_client(port: int, path: str = "/predict") -> socket.socket:
    """One connection with a request in flight: every header, and 10 of its 1,000 announced body bytes."""
    sock = socket.create_connection((HOST, port), timeout=HANG_S)
    sock.sendall(
        request_bytes(port, "POST", path, None, JSON, {"Content-Length": "1000"}, close=False) + b'{"records"'
    )
    return sock


def disconnect_mid_body(port: int, path: str = "/predict", wait_s: float = 0.3) -> None:
    """Send the headers and 100 of 3,000 announced body bytes (a record's size: under the bound a record's
    body has, so the service waits for the rest), wait, and go away."""
    with socket.create_connection((HOST, port), timeout=HANG_S) as sock:
        sock.sendall(
            request_bytes(port, "POST", path, None, JSON, {"Content-Length": "3000"}, close=False)
            + b"{" * 100
        )
        time.sleep(wait_s)


# ----------------------------------------------------------------------------------------- closed loops


@dataclass
class Loop:
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    hangs: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else math.nan

    def merge(self, other: Loop) -> None:
        self.requests += other.requests
        self.seconds = max(self.seconds, other.seconds)
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.errors += other.errors
        self.hangs += other.hangs


def closed_loop(
    port: int,
    path: str,
    body: bytes,
    seconds: float,
    stop: threading.Event | None = None,
    pause_s: float = 0.0,
    keep_latencies: bool = False,
) -> Loop:
    """One client on a persistent connection: POST, read the answer, repeat, for ``seconds`` (or until
    ``stop``); a broken connection is counted and reopened."""
    out = Loop()
    conn = http.client.HTTPConnection(HOST, port, timeout=HANG_S)
    started = time.perf_counter()
    deadline = started + seconds
    try:
        while time.perf_counter() < deadline and not (stop is not None and stop.is_set()):
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": JSON})
                response = conn.getresponse()
                response.read()
            except TimeoutError:
                out.hangs += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=HANG_S)
                continue
            except (http.client.HTTPException, OSError):
                out.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=HANG_S)
                time.sleep(0.01)
                continue
            out.requests += 1
            key = str(response.status)
            out.statuses[key] = out.statuses.get(key, 0) + 1
            if keep_latencies:
                out.latencies.append(time.perf_counter() - t0)
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=HANG_S)
            if pause_s:
                time.sleep(pause_s)
    finally:
        conn.close()
        out.seconds = time.perf_counter() - started
    return out


def server_cpu_ms(pid: int, port: int, path: str, body: bytes, seconds: float) -> tuple[float, Loop]:
    """The serving process's CPU per request (ms) of one body, sent by one client on one connection for
    ``seconds``: what answering it costs the server, whatever the clients' share of the machine (on two
    shared cores a neighbour's throughput moves by a fifth from run to run; this does not)."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    loop = closed_loop(port, path, body, seconds)
    after = process.cpu_times()
    spent = (after.user - before.user) + (after.system - before.system)
    return (spent / loop.requests * 1000 if loop.requests else math.inf), loop


def flood(port: int, path: str, body: bytes, clients: int, seconds: float) -> Loop:
    """``clients`` closed loops at once (threads), merged."""
    results: list[Loop] = []
    threads = [
        threading.Thread(target=lambda: results.append(closed_loop(port, path, body, seconds)), daemon=True)
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 2 * HANG_S)
    total = Loop()
    for r in results:
        total.merge(r)
    return total


def start_flood(port: int, path: str, body_file: Path, clients: int, seconds: float) -> Any:
    """The flood in a process of its own (``python -m benchmarks.hardening_attacks flood``); read its result
    with :func:`finish_flood`."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.hardening_attacks", "flood", "--port", str(port)]
    command += [
        "--path",
        path,
        "--body",
        str(body_file),
        "--clients",
        str(clients),
        "--seconds",
        str(seconds),
    ]
    return subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish_flood(process: Any, seconds: float) -> Loop:
    import os
    import signal
    import subprocess

    try:
        out, err = process.communicate(timeout=seconds + 3 * HANG_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError("the flood process did not finish in time") from None
    line = next((x for x in out.splitlines() if x.startswith("FLOOD ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"the flood process failed (rc {process.returncode}): {err[-500:]}")
    data = json.loads(line.removeprefix("FLOOD "))
    return Loop(data["requests"], data["seconds"], data["statuses"], data["errors"], data["hangs"])


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hardening_attacks")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("flood", help="closed-loop clients posting one body to 127.0.0.1 for a while")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--path", required=True)
    f.add_argument("--body", type=Path, required=True)
    f.add_argument("--clients", type=int, default=8)
    f.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    seconds = min(args.seconds, 600.0)
    result = flood(args.port, args.path, args.body.read_bytes(), args.clients, seconds)
    payload = {
        "requests": result.requests,
        "seconds": result.seconds,
        "statuses": result.statuses,
        "errors": result.errors,
        "hangs": result.hangs,
    }
    print("FLOOD " + json.dumps(payload), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
