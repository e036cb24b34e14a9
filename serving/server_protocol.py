"""uvicorn's HTTP/1.1 protocol with the limits it lacks: a header timeout, a body timeout, a connection cap.

uvicorn arms its keep-alive timer only after a response, and cancels it at the first byte of the next
request, so a connection that opens and sends nothing, or sends its headers a byte at a time, is held forever
(each one a file descriptor and a concurrency slot: 21,000 of them left the process unable to accept /ready).
Here a timer starts when a connection opens, and for a later request when the data that brought its first
bytes left its headers incomplete (headers that come whole, nearly every request, arm none); it is cancelled
when the request's headers are complete; when it fires the connection is closed, after a ``408`` if part of a
request had arrived. The idle time between requests stays uvicorn's keep-alive timeout, which may be longer
than the header timeout (behind a load balancer it should outlast the balancer's own idle timeout). A
connection past ``max_connections`` is closed at once, so descriptors never run out: the process can always
accept its probes once a flood is gone. A body that has not arrived ``body_timeout_s`` after its headers is
answered ``408`` and its connection closed (the app, waiting on it, sees the client gone); the timer is armed
only when a body is still on its way after the data at hand is parsed, so a request whose body came with its
headers, nearly every one, pays nothing for it (a timer in the app cost 3.6-11 us a request, measured).

A request still running when the graceful-shutdown timeout cancels it is answered ``503`` with
``Connection: close`` and a ``Retry-After`` (uvicorn answers any exception, this cancellation included, with a
``500``, which says the service failed rather than that it is going away: a client or balancer retries a 503
on another replica). Only that cancellation is: a real error in the app is still uvicorn's 500.

The cost is one ``loop.call_later`` and its ``cancel`` per request (about 1 us with uvloop, measured). uvicorn
loads this class by its import string (``--http serving.server_protocol:ServerProtocol``, rendered by
``stacks.components.deployers.server_options``) in every server process, workers included, before it
listens; importing it prepares that process: the limits are read from the selected stack (``FLYWHEEL_STACK``,
with the ``FLYWHEEL_HEADER_TIMEOUT_S`` and ``FLYWHEEL_MAX_CONNECTIONS`` overrides), the soft open-file limit
is raised to the hard one, and uvicorn's log of a request cut short by its client or by the shutdown timeout
becomes one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.h11_impl import RequestResponseCycle as H11Cycle

from serving.settings import service_limits

__all__ = [
    "FD_HEADROOM",
    "H11ServerProtocol",
    "HttpToolsServerProtocol",
    "ProcessLimits",
    "QuietClientErrors",
    "ServerProtocol",
    "prepare_process",
    "raise_open_file_limit",
    "shutdown_aware",
]

log = logging.getLogger("uvicorn.error")

FD_HEADROOM = 256
"""Descriptors kept for everything but client connections: model files, the registry's database and HTTP
pool, logs, the profiler's pipes. ``max_connections`` is lowered to fit the open-file limit less these."""

PROBES = frozenset({b"/health", b"/ready"})
"""Request targets answered even past ``limit_concurrency`` (cheap, and what orchestrators restart by)."""

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
SHUTTING_DOWN = (
    b'{"detail": "the service is shutting down: this request was not finished within its graceful shutdown '
    b'timeout; send it again"}'
)
SHUTDOWN_RESPONSE_RETRY_AFTER_S = 1


def shutdown_aware(cycle: type[Any]) -> type[Any]:
    """uvicorn's request cycle ``cycle`` answering ``503`` instead of ``500`` when its task was cancelled
    (by uvicorn's graceful-shutdown timeout, the only canceller of a request task).

    uvicorn's ``run_asgi`` catches the ``CancelledError`` and calls ``send_500_response`` from within the
    cancelled task, whose ``cancelling()`` is then non-zero; any other exception leaves it at zero."""

    class ShutdownAwareCycle(cycle):  # type: ignore[misc,valid-type]
        async def send_500_response(self) -> None:
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                await super().send_500_response()
                return
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(SHUTTING_DOWN)).encode()),
                (b"connection", b"close"),
                (b"retry-after", str(SHUTDOWN_RESPONSE_RETRY_AFTER_S).encode()),
            ]
            await self.send({"type": "http.response.start", "status": 503, "headers": headers})
            await self.send({"type": "http.response.body", "body": SHUTTING_DOWN, "more_body": False})

    ShutdownAwareCycle.__name__ = ShutdownAwareCycle.__qualname__ = f"ShutdownAware{cycle.__name__}"
    return ShutdownAwareCycle


@dataclass(frozen=True)
class ProcessLimits:
    """What the protocol enforces in this process."""

    header_timeout_s: float
    max_connections: int
    open_files: int  # the soft RLIMIT_NOFILE after raising it
    body_timeout_s: float = 30.0


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the default soft 1024 is a few hundred clients);
    returns (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a hard limit above the kernel's nr_open
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


class QuietClientErrors(logging.Filter):
    """uvicorn's ``Exception in ASGI application`` for a request the client abandoned, or that the shutdown
    timeout cancelled, as one line (uvicorn logs a 35-50 line traceback for either); its ``Exceeded
    concurrency limit.`` warning at most once a second, with the count of the ones left out."""

    ABANDONED = ("ClientDisconnect", "CancelledError", "ConnectionResetError", "BrokenPipeError")

    def __init__(self) -> None:
        super().__init__()
        self._last_overload = 0.0
        self._overloads_left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Exceeded concurrency limit.":
            return self._overload(record)
        exc = record.exc_info[1] if record.exc_info else None
        abandoned = exc is not None and type(exc).__name__ in self.ABANDONED
        if abandoned and str(record.msg).startswith("Exception"):
            cancelled = isinstance(exc, asyncio.CancelledError)
            record.msg = (
                "request cancelled: the graceful shutdown timeout passed before it finished"
                if cancelled
                else "request abandoned: the client went away before its response (%s)"
            )
            record.args = () if cancelled else (type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
            level = logging.WARNING if cancelled else logging.INFO  # a client that left is routine
            record.levelno, record.levelname = level, logging.getLevelName(level)
        return True

    def _overload(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last_overload < 1.0:
            self._overloads_left_out += 1
            return False
        if self._overloads_left_out:
            record.msg = "Exceeded concurrency limit (and %d more times in the last %.0f s)."
            record.args = (self._overloads_left_out, now - self._last_overload)
        self._last_overload = now
        self._overloads_left_out = 0
        return True


def prepare_process() -> ProcessLimits:
    """Read this process's limits, raise its open-file limit, quiet uvicorn's client-error tracebacks."""
    limits = service_limits()
    soft, _hard = raise_open_file_limit()
    max_connections = limits.max_connections
    room = soft - FD_HEADROOM if soft != resource.RLIM_INFINITY else max_connections
    if max_connections > room:
        log.warning(
            "the open-file limit (%d) leaves room for %d connections: max_connections %d lowered to that; "
            "raise the hard limit (ulimit -Hn, docker run --ulimit nofile=N:N) to hold more",
            soft,
            max(room, 1),
            max_connections,
        )
        max_connections = max(room, 1)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietClientErrors) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(QuietClientErrors())
    return ProcessLimits(limits.header_timeout_s, max_connections, soft, limits.body_timeout_s)


LIMITS = prepare_process()


class _Limited:
    """What both protocols add; ``header_timeout_s`` and ``max_connections`` are class attributes so a
    subclass can carry others."""

    header_timeout_s: ClassVar[float] = LIMITS.header_timeout_s
    body_timeout_s: ClassVar[float] = LIMITS.body_timeout_s
    max_connections: ClassVar[int] = LIMITS.max_connections

    # set by uvicorn's protocol classes
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _shutting_down = False
    # uvicorn's request cycle class, and the one that answers 503 when the shutdown cancels it
    _cycle: ClassVar[type[Any]]
    _shutdown_cycle: ClassVar[type[Any]]

    # cooperative: placed before uvicorn's protocol class, super() is that class
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if self._admitted():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_done()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        # a body still on its way once this data is parsed: time it (a body that came whole with its
        # headers, nearly every request, never arms the timer)
        if self._body_timer is None and self._body_pending():
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_late)

    def shutdown(self) -> None:
        """uvicorn's call on every connection when the graceful shutdown begins: from now on a request of
        this connection cut off by the shutdown timeout is answered 503 (:func:`shutdown_aware`). Swapping the
        cycle's class here, not when each request begins, keeps the request path free of it."""
        self._shutting_down = True
        self._shutdown_aware()
        super().shutdown()  # type: ignore[misc]

    def _shutdown_aware(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.__class__ is self._cycle:
            cycle.__class__ = self._shutdown_cycle

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self) -> None:
        """The body did not arrive within ``body_timeout_s``: 408 (unless an answer has begun) and close.
        The app, waiting on the body, sees the client gone."""
        self._body_timer = None
        if self.transport.is_closing() or not self._body_pending():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    def _body_pending(self) -> bool:
        """Whether a request's headers are in and its body is not complete yet."""
        raise NotImplementedError

    def _admitted(self) -> bool:
        """False (and the connection closed) past ``max_connections``."""
        if len(self.connections) > self.max_connections:
            self.transport.close()
            return False
        return True

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined request is late while the one before it is served: let that finish
            return
        if self._request_begun():
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    def _request_begun(self) -> bool:
        """Whether part of a request has arrived (it is then told 408; a silent connection is just closed)."""
        raise NotImplementedError


class H11ServerProtocol(_Limited, H11Protocol):
    """uvicorn's h11 protocol with the header timeout and the connection cap (when httptools is missing)."""

    _cycle = H11Cycle
    _shutdown_cycle = shutdown_aware(H11Cycle)

    def handle_events(self) -> None:
        super().handle_events()
        if self._shutting_down:
            self._shutdown_aware()  # a request whose headers came in after the shutdown began
        if self._body_timer is not None and not self._body_pending():
            self._body_done()
        waiting = self.conn.their_state is h11.IDLE  # no request line and headers parsed yet
        if self._header_timer is None:
            if waiting and self._request_begun():
                self._arm()  # the first bytes of a request on a kept-alive connection
        elif not waiting:
            self._disarm()

    def _request_begun(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _body_pending(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


ServerProtocol: type[asyncio.Protocol]
"""What ``--http`` names: the httptools protocol (uvicorn[standard]), else the h11 one."""

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as HttpToolsCycle
except ImportError:  # pragma: no cover - uvicorn without httptools
    ServerProtocol = H11ServerProtocol
else:

    class HttpToolsServerProtocol(_Limited, HttpToolsProtocol):
        """uvicorn's httptools protocol with the header timeout and the connection cap."""

        _in_headers = False
        _cycle = HttpToolsCycle
        _shutdown_cycle = shutdown_aware(HttpToolsCycle)

        def data_received(self, data: bytes) -> None:
            # uvicorn's own, then both checks here (not through _Limited's: a frame less per request)
            HttpToolsProtocol.data_received(self, data)
            # headers still incomplete once this data is parsed: time them (a new connection's timer runs
            # on from when it opened). Headers that came whole, nearly every request, never arm a timer.
            if self._in_headers and self._header_timer is None:
                self._arm()
            # a body still on its way: time it (one that came whole with its headers arms nothing)
            if self._body_timer is None:
                cycle = self.cycle
                if cycle is not None and cycle.more_body and not cycle.disconnected:
                    self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_late)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True

        def on_headers_complete(self) -> None:
            self._in_headers = False
            timer = self._header_timer
            if timer is not None:
                timer.cancel()
                self._header_timer = None
            if self.url in PROBES and self.limit_concurrency is not None:
                # a probe is answered past the concurrency limit: under overload a liveness probe that got
                # 503 would have the orchestrator restart a healthy process, and the load move to the rest
                limit, self.limit_concurrency = self.limit_concurrency, None
                try:
                    super().on_headers_complete()
                finally:
                    self.limit_concurrency = limit
            else:
                super().on_headers_complete()
            if self._shutting_down:
                self._shutdown_aware()  # a request whose headers came in after the shutdown began

        def on_message_complete(self) -> None:
            self._body_done()
            super().on_message_complete()

        def _request_begun(self) -> bool:
            return self.scope is not None  # httptools has begun a message

        def _body_pending(self) -> bool:
            cycle = self.cycle
            return cycle is not None and cycle.more_body and not cycle.disconnected

    ServerProtocol = HttpToolsServerProtocol
