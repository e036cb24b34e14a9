"""Walk a registered model back to its data: version -> run -> dataset digest -> snapshot -> source, and the
feedback snapshot (labelled served traffic) it learned from besides."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    mode: str = "full"
    feedback_digest: str = ""
    feedback_snapshot: str = ""
    feedback_rows: int = 0

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
        if self.feedback_digest:
            out += [
                f"  + feedback    digest {self.feedback_digest} ({self.feedback_rows:,} rows served)",
                f"  -> snapshot    {self.feedback_snapshot}",
            ]
        if self.mode != "full":
            out.append(f"training        {self.mode} (the previous champion boosted on the feedback)")
        out.append(f"promotion       {self.promotion}")
        return out


def lineage(reference: str) -> Lineage:
    """The lineage of a version; ``VersionNotFound`` (a LookupError, its message the line to print) when the
    reference names none or the registry cannot be read."""
    from stacks.components import model_versions

    mv = model_versions.resolve(reference)
    name = mv.name
    dataset = mv.tags.dataset
    digest = dataset.digest
    if mv.run_id and not digest:  # fall back on the run's dataset inputs
        digest = model_versions.run_dataset_digest(mv.run_id)
    promotion = mv.tags.promotion
    return Lineage(
        model=name,
        version=mv.version,
        aliases=list(mv.aliases),
        run_id=mv.run_id,
        dataset_digest=digest,
        snapshot_uri=dataset.snapshot,
        source_uri=dataset.source,
        rows="?" if dataset.rows is None else str(dataset.rows),
        joins={n: asdict(j) for n, j in dataset.joins.items()},
        promotion="undecided: " if promotion is None else f"{promotion.decision}: {promotion.reason}",
        mode=mv.tags.training.mode,
        feedback_digest=mv.tags.training.feedback_digest,
        feedback_snapshot=mv.tags.training.feedback_snapshot,
        feedback_rows=mv.tags.training.feedback_rows,
    )
