"""What monitoring remembers between runs (in the artifact store): the last window checked and the last
retrain it asked for, which the cooldown counts from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore


@dataclass
class MonitorState:
    last_window: str | None = None
    last_event_at: str | None = None
    last_event_version: str | None = None

    def last_event(self) -> datetime | None:
        return datetime.fromisoformat(self.last_event_at) if self.last_event_at else None


def load_state(store: ArtifactStore, model_name: str) -> MonitorState:
    path = layout.monitoring_state(model_name)
    if not store.exists(path):
        return MonitorState()
    return MonitorState(**json.loads(store.read_bytes(path)))


def save_state(store: ArtifactStore, model_name: str, state: MonitorState) -> None:
    store.write_bytes(layout.monitoring_state(model_name), json.dumps(asdict(state), indent=2).encode())
