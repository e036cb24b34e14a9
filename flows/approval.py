"""Human approval inside a flow: Prefect's own pause with a form (``wait_for_input``), answered in the
Prefect UI or by ``flywheel model approve|reject`` through the same API (``resume_flow_run``).

No answer within the stack's ``approval_timeout_s`` is a rejection. Every answer (who, when, the comment)
is appended to the candidate's ``flywheel.approvals`` tag.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flywheel.contracts.rollout import (
    APPROVALS_TAG,
    APPROVED,
    REJECTED,
    Approval,
    approvals_tag,
    parse_approvals,
)
from stacks.components import model_versions


class ApprovalForm(RunInput):
    """What the approver fills in (the Prefect UI shows it as a form on the paused run)."""

    approve: bool
    approver: str = ""
    comment: str = ""


def ask(model: str, version: str, what: str, timeout_s: int, poll_s: int = 2) -> Approval:
    """Pause the running flow until a person answers (or the timeout rejects); the answer is recorded."""
    logger = get_run_logger()
    logger.info(
        "waiting for approval of %s v%s: %s (flywheel model approve|reject --model %s, or the Prefect UI; "
        "no answer in %d s rejects)",
        model,
        version,
        what,
        model,
        timeout_s,
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        form = pause_flow_run(wait_for_input=ApprovalForm, timeout=timeout_s, poll_interval=poll_s)
        answer = Approval(
            what=what,
            decision=APPROVED if form.approve else REJECTED,
            by=form.approver[:200] or "unknown",
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            comment=form.comment[:1000],
        )
    except FlowPauseTimeout:
        answer = Approval(what, REJECTED, "timeout", now, f"no answer within {timeout_s} s")
    record(model, version, answer)
    logger.info("%s v%s %s by %s: %s", model, version, answer.decision, answer.by, answer.comment or "-")
    return answer


def record(model: str, version: str, answer: Approval) -> None:
    earlier = parse_approvals(model_versions.get_version(model, version).tags.raw.get(APPROVALS_TAG))
    model_versions.set_tags(model, version, {APPROVALS_TAG: approvals_tag([*earlier, answer])})
