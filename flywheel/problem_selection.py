"""Which problem a command works on: ``--problem``, then ``$FLYWHEEL_PROBLEM``, then ``flywheel problem use``.

As with stacks (``stacks/loader.py``), the choice is stored as one line in the flywheel home, so every
command run from the same home agrees on it. Unlike stacks there is no default: running a flow on a problem
nobody chose would train, serve or replay the wrong model, so without a choice the commands stop and say how
to make one.
"""

from __future__ import annotations

from pathlib import Path

from flywheel.contracts.problem import PROBLEMS_DIR, ProblemSpec, SpecError, load_spec
from stacks.paths import flywheel_home
from stacks.selection import remember_choice, remembered_choice

__all__ = [
    "ENV_VAR",
    "NoProblemChosen",
    "active_problem_file",
    "known_problems",
    "problem_selection",
    "selected_problem",
    "use_problem",
]

ENV_VAR = "FLYWHEEL_PROBLEM"


class NoProblemChosen(SpecError):
    """No ``--problem``, no ``$FLYWHEEL_PROBLEM`` and no ``flywheel problem use``: the message says how."""


def active_problem_file() -> Path:
    """The file `flywheel problem use` writes: one line, a problem name or a spec's absolute path."""
    return flywheel_home() / "active_problem"


def known_problems() -> list[str]:
    """The names of the specs shipped in flows/problems/, sorted."""
    return sorted(p.stem for p in PROBLEMS_DIR.glob("*.yaml"))


def problem_selection(explicit: str | None) -> tuple[str, str]:
    """(name or path, where it came from) by the selection order; NoProblemChosen when nothing chose one."""
    if explicit and explicit.strip():
        return explicit.strip(), "given explicitly"
    remembered = remembered_choice(ENV_VAR, active_problem_file(), "flywheel problem use")
    if remembered is not None:
        return remembered
    known = ", ".join(known_problems()) or "none in flows/problems/"
    raise NoProblemChosen(
        f"no problem chosen: pass --problem NAME, set {ENV_VAR}=NAME, or run `flywheel problem use NAME` "
        f"(known problems: {known})"
    )


def selected_problem(explicit: str | None = None) -> str:
    """The problem to use (a name in flows/problems/ or a spec's path), by the selection order."""
    return problem_selection(explicit)[0]


def use_problem(name: str) -> ProblemSpec:
    """Make ``name`` (a problem name or a spec's path) the chosen problem of this home, once it loads."""
    spec = load_spec(name)
    remember_choice(active_problem_file(), name)
    return spec
