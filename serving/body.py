"""Reading a request body under the service's limits: JSON only, a byte limit counted while reading, a time
limit for the whole body, and a client that goes away mid-body as one log line.

``Request.body()`` reads everything before anyone can look at the size, and a chunked body has no
Content-Length to refuse it by: a 1 GB chunked upload took the process from 0.4 to 2.5 GB before its 413.
Here the bytes are counted as they arrive and reading stops at the limit. A body that trickles in is cut off
at the body timeout (uvicorn has no such timeout of its own), so a slow client cannot hold a connection, its
buffer and a concurrency slot forever.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import ClientDisconnect, Request

log = logging.getLogger("flywheel.serving")

JSON = "application/json"


class BodyRejected(Exception):
    """The body cannot be read: ``status`` and ``message`` are the response to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_json(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type, with or without parameters (``; charset=utf-8``).

    Anything else is refused: a form or ``text/plain`` post is what a browser page on another site may send
    without a CORS preflight, so accepting it would let any page a user visits post feedback."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, or :class:`BodyRejected` (415, 413, 408; 400 for a client that disconnected)."""
    headers = request.headers
    if not is_json(headers.get("content-type")):
        raise BodyRejected(415, f"send the body as {JSON} (Content-Type: {JSON})")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyRejected(413, f"request body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise BodyRejected(413, f"request body over {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRejected(408, f"request body not received within {timeout_s:g} s") from None
    except ClientDisconnect:
        client = request.client
        log.info(
            "client %s disconnected before its body was read (%d bytes received)",
            f"{client.host}:{client.port}" if client else "?",
            size,
        )
        raise BodyRejected(400, "client disconnected before the body was complete") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
