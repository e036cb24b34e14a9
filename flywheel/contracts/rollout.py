"""A rollout in progress: which candidate, at which step, answering what share of the requests.

The rollout flow (flows/rollout.py) writes it as one registered-model tag; every replica of the service
reads it with the champion alias at each watch tick and routes accordingly (serving.holder). Pure: the
MLflow calls are in ``stacks.components.model_versions``. A tag that does not parse is no rollout: a
damaged tag must never take traffic away from the champion.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

ROLLOUT_TAG: Final = "flywheel.rollout"
"""On the registered model while a rollout runs: :class:`RolloutState` as JSON; absent otherwise."""
ROLLOUT_RESULT_TAG: Final = "flywheel.rollout.result"
"""On the candidate when its rollout ended: ``promoted`` or ``rolled-back``."""
ROLLOUT_REASON_TAG: Final = "flywheel.rollout.reason"
"""On the candidate: why its rollout ended so (the guardrail broken and by how much, or every step held)."""
ROLLOUT_STEPS_TAG: Final = "flywheel.rollout.steps"
"""On the candidate: each step it went through, with what the guardrails measured (JSON)."""
APPROVALS_TAG: Final = "flywheel.approvals"
"""On the candidate: every approval asked for it, in order (JSON: what, decision, by, at, comment)."""
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
PROMOTED: Final = "promoted"
ROLLED_BACK: Final = "rolled-back"

Stage = Literal["shadow", "canary"]
STAGES: Final = ("shadow", "canary")


@dataclass(frozen=True)
class RolloutState:
    """``candidate`` is scored beside the champion (``shadow``) or answers ``fraction`` of the requests
    (``canary``), at step ``step`` of ``steps``; ``key`` is the request field the canary hashes."""

    candidate: str
    champion: str
    stage: Stage
    fraction: float
    step: int
    steps: int
    started_at: float
    key: str | None = None

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tag(cls, text: str | None) -> RolloutState | None:
        """The state, or None for no tag or one that does not parse (never a rollout by mistake)."""
        if not text:
            return None
        try:
            raw: Any = json.loads(text)
            state = cls(
                candidate=str(raw["candidate"]),
                champion=str(raw["champion"]),
                stage=raw["stage"],
                fraction=float(raw["fraction"]),
                step=int(raw["step"]),
                steps=int(raw["steps"]),
                started_at=float(raw["started_at"]),
                key=None if raw.get("key") is None else str(raw["key"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        if state.stage not in STAGES or not 0.0 <= state.fraction <= 1.0 or not state.candidate.isdigit():
            return None
        return state

    def answers(self, key: object) -> bool:
        """Does the candidate answer the request whose key is ``key``? A stable hash: the same key always
        gets the same version at a given fraction, and raising the fraction only adds keys."""
        if self.stage != "canary" or self.fraction <= 0.0:
            return False
        return zlib.crc32(str(key).encode()) / 4294967296.0 < self.fraction


@dataclass(frozen=True)
class Approval:
    """One person's answer (or the timeout's) to "may this candidate go on?"."""

    what: str
    decision: Literal["approved", "rejected"]
    by: str
    at: str
    comment: str = ""

    @property
    def approved(self) -> bool:
        return self.decision == APPROVED


def approvals_tag(approvals: list[Approval]) -> str:
    """The :data:`APPROVALS_TAG` value: the newest kept when the list grows past what a tag holds."""
    rows = [asdict(a) for a in approvals]
    while rows and len(json.dumps(rows)) > 4900:
        rows.pop(0)
    return json.dumps(rows)


def parse_approvals(text: str | None) -> list[Approval]:
    try:
        rows = json.loads(text or "[]")
        return [Approval(**{k: str(v) for k, v in row.items()}) for row in rows]  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return []
