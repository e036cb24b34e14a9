"""Reading a request body under the service's limits: JSON only, a byte limit counted while reading, and a
client that goes away mid-body as one log line.

``Request.body()`` reads everything before anyone can look at the size, and a chunked body has no
Content-Length to refuse it by: a 1 GB chunked upload took the process from 0.4 to 2.5 GB before its 413.
Here the bytes are counted as they arrive and reading stops at the limit. A body that trickles in is cut off
by the server's protocol at the stack's body timeout (``serving.server_protocol``, the connection's own timer:
a timer here would cost every request microseconds), which this reader sees as a client gone.
"""

from __future__ import annotations

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
    if content_type == JSON:  # what nearly every client sends
        return True
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def too_large(max_bytes: int, record: bool) -> BodyRejected:
    if record:
        return BodyRejected(413, f"body over {max_bytes} bytes: no valid record of this model is that large")
    return BodyRejected(413, f"request body over {max_bytes} bytes")


async def read_body(request: Request, max_bytes: int, record: bool = False) -> bytes:
    """The whole body, or :class:`BodyRejected` (415, 413; 400 for a client that disconnected or whose body
    timed out). ``record``: ``max_bytes`` is the most a valid record can take, and the 413 says so."""
    headers = request.headers
    if not is_json(headers.get("content-type")):
        raise BodyRejected(415, f"send the body as {JSON} (Content-Type: {JSON})")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes, record)
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # the ASGI messages themselves: Request.stream()'s generator costs ~1 us more
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes, record)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except ClientDisconnect:
        client = request.client
        log.info(
            "client %s gone before its body was complete (it disconnected, or the body timeout closed it): "
            "%d bytes received",
            f"{client.host}:{client.port}" if client else "?",
            size,
        )
        raise BodyRejected(400, "the body was not complete: the client went away or it timed out") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
