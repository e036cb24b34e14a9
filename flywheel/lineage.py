"""Walk a registered model back to its data: version -> run -> dataset digest -> snapshot -> source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lineage:
    model: str
    version: str
    aliases: list[str]
    run_id: str
    dataset_digest: str
    snapshot_uri: str
    source_uri: str
    rows: str
    joins: dict[str, dict[str, str]]
    promotion: str

    def lines(self) -> list[str]:
        out = [
            f"model version   {self.model} v{self.version}  (aliases: {', '.join(self.aliases) or '-'})",
            f"  -> run         {self.run_id}",
            f"  -> dataset     digest {self.dataset_digest} ({self.rows} rows)",
            f"  -> snapshot    {self.snapshot_uri}",
            f"  -> source      {self.source_uri}",
        ]
        for name, join in self.joins.items():
            out.append(
                f"  joined {name}: digest {join.get('digest')} snapshot {join.get('snapshot')} "
                f"source {join.get('source')}"
            )
        out.append(f"promotion       {self.promotion}")
        return out


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` (or ``models:/`` forms) into (name, alias, version)."""
    ref = reference.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.split("/", 1)
        return name, None, version
    return ref, "champion", None


def lineage(reference: str) -> Lineage:
    from mlflow import MlflowClient

    client = MlflowClient()
    name, alias, version = parse_reference(reference)
    mv: Any = (
        client.get_model_version_by_alias(name, alias)
        if alias
        else client.get_model_version(name, str(version))
    )
    tags = dict(mv.tags or {})
    run_id = mv.run_id or tags.get("flywheel.run_id", "")
    joins: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        if key.startswith("flywheel.dataset.join."):
            join_name, field = key.removeprefix("flywheel.dataset.join.").rsplit(".", 1)
            joins.setdefault(join_name, {})[field] = value
    digest = tags.get("flywheel.dataset.digest", "")
    if run_id and not digest:  # fall back on the run's dataset inputs
        run = client.get_run(run_id)
        for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
            digest = dataset_input.dataset.digest
            break
    decision = tags.get("flywheel.promotion.decision", "undecided")
    return Lineage(
        model=name,
        version=str(mv.version),
        aliases=list(getattr(mv, "aliases", []) or []),
        run_id=run_id,
        dataset_digest=digest,
        snapshot_uri=tags.get("flywheel.dataset.snapshot", ""),
        source_uri=tags.get("flywheel.dataset.source", ""),
        rows=tags.get("flywheel.dataset.rows", "?"),
        joins=joins,
        promotion=f"{decision}: {tags.get('flywheel.promotion.reason', '')}",
    )
