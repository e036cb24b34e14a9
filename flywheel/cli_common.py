"""What the ``flywheel`` subcommands share: the options that name a stack, a model or a problem, how a
model is chosen from them, and how a command fails (one red line on stderr, exit 1, never a traceback)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from stacks.config import Stack

StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help="stack name or file (default: FLYWHEEL_STACK, then `flywheel stack use`, then local)",
    ),
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="registered model name (default: the problem's model)")
]
ProblemOption = Annotated[
    str | None,
    typer.Option(
        "--problem",
        "-p",
        help="problem spec name (flows/problems/NAME.yaml) or path (default: FLYWHEEL_PROBLEM, then "
        "`flywheel problem use`)",
    ),
]


def fail(message: str) -> NoReturn:
    """``error: <message>`` in red on stderr, exit status 1."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def resolve_model(model: str | None, problem: str | None) -> str:
    """The model a command acts on: ``--model``, else the model_name of ``--problem`` or of the chosen
    problem. ``SpecError`` (a subclass: no problem chosen) when there is none, saying how to name one."""
    from flywheel.contracts.problem import SpecError, load_spec

    if model is not None:
        if not model.strip():
            raise SpecError("--model is empty: give a registered model's name")
        return model
    if problem is None:
        from flywheel.problem_selection import NoProblemChosen, selected_problem

        try:
            problem = selected_problem(None)
        except NoProblemChosen as exc:
            raise NoProblemChosen(f"which model? pass --model NAME, or {exc}") from None
    return load_spec(problem).model_name


def model_or_fail(model: str | None, problem: str | None) -> str:
    """:func:`resolve_model`, or :func:`fail` with why not."""
    from flywheel.contracts.problem import SpecError

    try:
        return resolve_model(model, problem)
    except SpecError as exc:
        fail(str(exc))


def prepared_stack(stack: str | None) -> Stack:
    """The stack a flow will run on, with Prefect pointed at its API first (Prefect reads its settings
    when it is imported), or :func:`fail` with why the stack does not load."""
    from flows.runtime import prepare_prefect
    from stacks.config import StackError

    try:
        return prepare_prefect(stack)
    except StackError as exc:
        fail(str(exc))
