"""A shadow candidate retrained on newer data knows other categories than the champion: the champion's matrix
is translated to the codes the candidate's own encoder gives the same request (serving.rollout.translation),
so its shadow scores are the ones it would have answered with."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from serving.encoding import RowEncoder
from serving.rollout import translation


def _served(*columns: FeatureColumn) -> Any:
    """What translation reads of a served version: its feature schema."""
    return SimpleNamespace(model=SimpleNamespace(schema=FeatureSchema(list(columns), "y", "binary")))


CHAMPION = _served(
    FeatureColumn("distance", "numeric"),
    FeatureColumn("carrier", "categorical", ["AA", "DL", "UA"]),
    FeatureColumn("origin", "categorical", ["EWR", "JFK"]),
)
RECORDS = [
    {"distance": 100.0, "carrier": "UA", "origin": "JFK"},
    {"distance": None, "carrier": "AA", "origin": "EWR"},
    {"distance": 5.0, "carrier": None, "origin": None},
    {"distance": 7.0, "carrier": "DL", "origin": "JFK"},
]


def test_new_categories_are_translated_as_the_candidates_encoder_would_code_them() -> None:
    candidate = _served(
        FeatureColumn("distance", "numeric"),
        FeatureColumn("carrier", "categorical", ["9E", "AA", "B6", "UA"]),  # DL gone, 9E and B6 new
        FeatureColumn("origin", "categorical", ["EWR", "JFK"]),
    )
    translate = translation(CHAMPION, candidate)
    assert translate is not None
    ours = RowEncoder(CHAMPION.model.schema).encode(RECORDS)
    # DL: a carrier the candidate never saw is missing to it (its own service would refuse the value)
    known = [{**r, "carrier": None} if r["carrier"] == "DL" else r for r in RECORDS]
    theirs = RowEncoder(candidate.model.schema).encode(known)
    np.testing.assert_array_equal(translate(ours), theirs)  # NaN where equal NaN
    assert np.isnan(translate(ours)[3, 1]) and not np.isnan(ours[3, 1])
    np.testing.assert_array_equal(ours, RowEncoder(CHAMPION.model.schema).encode(RECORDS))  # not changed


def test_the_same_encoding_is_used_as_it_is() -> None:
    translate = translation(CHAMPION, CHAMPION)
    assert translate is not None
    matrix = RowEncoder(CHAMPION.model.schema).encode(RECORDS)
    assert translate(matrix) is matrix


def test_other_features_cannot_be_shadowed_from_the_champions_matrix() -> None:
    reordered = _served(*reversed(CHAMPION.model.schema.columns))
    assert translation(CHAMPION, reordered) is None
    fewer = _served(*CHAMPION.model.schema.columns[:2])
    assert translation(CHAMPION, fewer) is None
    now_categorical = _served(
        FeatureColumn("distance", "categorical", ["short", "long"]), *CHAMPION.model.schema.columns[1:]
    )
    assert translation(CHAMPION, now_categorical) is None
