"""The model card's IO: what the previous champion recorded, and the card into the version's MLflow run.

Kept apart from the pure builder (:mod:`steps.model.card`) so that the card can be built and tested without
a registry, and apart from :mod:`steps.model.track` whose run logging it follows.
"""

from __future__ import annotations

from mlflow import MlflowClient

from flywheel.contracts.model_version import (
    MODEL_CARD_HTML,
    MODEL_CARD_JSON,
    MODEL_CARD_MARKDOWN,
    MODEL_CARD_TAG,
    ModelVersion,
    runs_uri,
)
from stacks.components import model_versions
from steps.model.card import (
    APPROVALS_TITLE,
    ModelCard,
    PreviousChampion,
    approvals_section,
    card_from_dict,
    card_to_dict,
    to_html,
    to_markdown,
)


def recorded(
    model_name: str, version: str, champion: ModelVersion | None
) -> tuple[ModelVersion, PreviousChampion | None]:
    """The version as registration tagged it (its lineage, as the card reports it) and the champion it was
    judged against."""
    return model_versions.get_version(model_name, version), previous_champion(champion)


def previous_champion(champion: ModelVersion | None) -> PreviousChampion | None:
    """The champion a candidate was judged against, from its tags and its run's feature schema (None
    without a champion; its features None when its schema cannot be read, and the card then says less)."""
    if champion is None:
        return None
    try:
        features: list[str] | None = model_versions.feature_schema(champion.run_id).names
    except Exception:  # a version logged without a schema, or an artifact store that lost it
        features = None
    return PreviousChampion(champion.version, champion.tags.dataset, champion.tags.training, features)


def log_model_card(run_id: str, model_name: str, version: str, card: ModelCard) -> str:
    """The card as ``model_card/model_card.md`` and ``.html`` in the run, its URI tagged on the version
    (``flywheel.model_card``, which ``GET /model`` shows); returns that URI."""
    client = MlflowClient()
    client.log_text(run_id, to_markdown(card), MODEL_CARD_MARKDOWN)
    client.log_text(run_id, to_html(card), MODEL_CARD_HTML)
    client.log_dict(run_id, card_to_dict(card), MODEL_CARD_JSON)
    uri = runs_uri(run_id, MODEL_CARD_HTML)
    model_versions.set_tags(model_name, version, {MODEL_CARD_TAG: uri})
    return uri


def refresh_approvals(model_name: str, version: str) -> bool:
    """Rewrite the card's approvals-and-rollouts section from the version's tags now (its approvals, how
    its rollout ended, a rollback) and log the card again; False for a version whose card has no
    ``model_card.json`` (logged before it existed) or no run."""
    import json

    import mlflow

    from flywheel.contracts.rollout import (
        APPROVALS_TAG,
        ROLLOUT_REASON_TAG,
        ROLLOUT_RESULT_TAG,
        ROLLOUT_STEPS_TAG,
        parse_approvals,
    )

    mv = model_versions.get_version(model_name, version)
    if not mv.run_id:
        return False
    try:
        card = card_from_dict(mlflow.artifacts.load_dict(runs_uri(mv.run_id, MODEL_CARD_JSON)))
    except Exception:  # MLflow raises several kinds for a missing artifact
        return False
    tags = mv.tags.raw
    try:
        steps = json.loads(tags.get(ROLLOUT_STEPS_TAG, "[]"))
    except ValueError:
        steps = []
    rollout = {
        "result": tags.get(ROLLOUT_RESULT_TAG, ""),
        "reason": tags.get(ROLLOUT_REASON_TAG, ""),
        "steps": steps,
    }
    section = approvals_section(parse_approvals(tags.get(APPROVALS_TAG)), rollout, mv.tags.rollback)
    card.sections = [section if s.title == APPROVALS_TITLE else s for s in card.sections]
    log_model_card(mv.run_id, model_name, version, card)
    return True
