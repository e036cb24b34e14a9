"""The data validation report: what each check found, worded for the person reading it.

Produced by the validate step and the data validator, shown as a Prefect artifact and raised as the
error that stops a flow; a warning is reported and does not stop anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class CheckResult:
    """One constraint outcome. ``severity="warning"`` is shown but never fails the report."""

    name: str
    column: str
    passed: bool
    detail: str
    severity: Literal["error", "warning"] = "error"


@dataclass
class ValidationReport:
    """All constraint outcomes for one data set; ``failures`` is what stops a flow."""

    dataset: str
    rows: int
    results: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.severity == "warning"]

    def to_markdown(self) -> str:
        status = "PASSED" if self.passed else f"FAILED ({len(self.failures)} constraint(s))"
        if self.warnings:
            status += f", {len(self.warnings)} warning(s)"
        lines = [
            f"# Data validation: {self.dataset}",
            "",
            f"**{status}** on {self.rows:,} rows.",
            "",
            "| check | column | result | detail |",
            "|---|---|---|---|",
        ]
        for r in self.results:
            result = "pass" if r.passed else ("warning" if r.severity == "warning" else "**FAIL**")
            lines.append(f"| {r.name} | `{r.column}` | {result} | {r.detail} |")
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines)

    def summary(self) -> str:
        """A one-paragraph message naming each failure, for exceptions and logs."""
        if self.passed:
            extra = f" ({len(self.warnings)} warning(s))" if self.warnings else ""
            return f"{self.dataset}: all {len(self.results) - len(self.warnings)} checks passed{extra}"
        parts = [f"{r.column}: {r.detail}" for r in self.failures]
        return f"{self.dataset}: {len(parts)} check(s) failed: " + "; ".join(parts)
