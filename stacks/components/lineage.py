"""Where a run's OpenLineage events go: the stack's ``lineage`` component, through ``openlineage-python``.

A stack without the component still records lineage, to a JSON-lines file under flywheel home
(``lineage/openlineage.jsonl``), so every run is traceable with nothing to configure; ``flavor: http``
sends the same events to any OpenLineage consumer (Marquez and the like). Lineage is a record of the
run, not part of it: a transport that cannot be built or cannot deliver is reported to the caller as a
reason and never raises, so a dead consumer cannot fail a training that succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import secret_keys
from stacks.config import DEFAULT_LINEAGE_FILE, FileLineageConfig, HttpLineageConfig, Stack
from stacks.paths import resolve_path

if TYPE_CHECKING:
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport import Transport

HTTP_RETRY = {
    "total": 1,
    "read": 1,
    "connect": 1,
    "backoff_factor": 0.2,
    "status_forcelist": [500, 502, 503, 504],
    "allowed_methods": ["POST"],
}
"""One retry: an unreachable consumer costs a run two timeouts per event, not the client's five."""


def lineage_config(stack: Stack) -> FileLineageConfig | HttpLineageConfig:
    """The stack's lineage settings; without the component, the default file under flywheel home."""
    if stack.lineage is None:
        return FileLineageConfig(path=DEFAULT_LINEAGE_FILE)
    return stack.lineage.configuration


def lineage_file(stack: Stack) -> Path | None:
    """The events file of a file-flavored (or absent) lineage component; None for an HTTP consumer."""
    cfg = lineage_config(stack)
    return Path(resolve_path(cfg.path)) if isinstance(cfg, FileLineageConfig) else None


def describe(stack: Stack) -> str:
    """Where the events go, for a log line (an URL's password masked, no key shown)."""
    cfg = lineage_config(stack)
    if isinstance(cfg, FileLineageConfig):
        return str(lineage_file(stack))
    return secret_keys.mask_url(cfg.url.rstrip("/") + "/" + cfg.endpoint.lstrip("/"))


def _transport(stack: Stack) -> Transport:
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import HttpConfig, HttpTransport, create_token_provider

    cfg = lineage_config(stack)
    if isinstance(cfg, FileLineageConfig):
        path = Path(resolve_path(cfg.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    auth = {"type": "api_key", "apiKey": stack.resolve(cfg.api_key)} if cfg.api_key else {}
    return HttpTransport(
        HttpConfig(
            url=cfg.url,
            endpoint=cfg.endpoint,
            timeout=cfg.timeout_s,
            auth=create_token_provider(auth),
            retry=HTTP_RETRY,
        )
    )


@dataclass
class LineageSink:
    """An OpenLineage client on the stack's transport, or the reason there is none."""

    where: str
    client: OpenLineageClient | None
    problem: str | None = None

    def emit(self, event: Any) -> str | None:
        """Send one event; the reason it was not delivered, or None. Never raises."""
        if self.client is None:
            return self.problem
        try:
            self.client.emit(event)
        except Exception as exc:  # any transport error: lineage must not fail the run
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return None


def sink_for(stack: Stack) -> LineageSink:
    """The stack's lineage sink; a transport that cannot be built is kept as the reason, not raised."""
    where = describe(stack)
    try:
        from openlineage.client import OpenLineageClient

        return LineageSink(where, OpenLineageClient(transport=_transport(stack)))
    except Exception as exc:
        return LineageSink(where, None, f"no lineage transport ({where}): {type(exc).__name__}: {exc}")


def recorded_events(path: Path, job: str | None = None) -> list[dict[str, Any]]:
    """The events of a JSON-lines lineage file, oldest first (only ``job``'s when given); a line that is
    not a JSON object (a write cut short) is skipped."""
    import json

    found: list[dict[str, Any]] = []
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and (job is None or event.get("job", {}).get("name") == job):
            found.append(event)
    return found
