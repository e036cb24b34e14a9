"""What travels on the prediction streams: the fields of a request, a prediction and a dead letter.

One owner for the wire format of ``flywheel stream serve`` (serving/stream), its tests, the benchmark and any
producer or reader a user writes. Every entry is a Redis stream entry of text fields:

- a request: ``record``, one record as a JSON object, exactly the body ``POST /predict`` takes;
- a prediction: ``source_id`` (the request entry's id: a reader deduplicates on it, since delivery is at
  least once), ``model_version`` and ``prediction``, the JSON that ``POST /predict`` answers for the same
  record, with a request id that ``POST /feedback`` accepts (``<id>:<row>``, one row of the read's batch);
- a dead letter: ``source_id``, ``status`` (the HTTP status the API gives the same record: 400, 413, 422,
  or 500 for a record taken too often without an outcome), ``error`` (the JSON body of that response) and
  ``record`` (the record as sent, when it was not over the size limit).
"""

from __future__ import annotations

RECORD_FIELD = "record"
SOURCE_ID_FIELD = "source_id"
MODEL_VERSION_FIELD = "model_version"
PREDICTION_FIELD = "prediction"
STATUS_FIELD = "status"
ERROR_FIELD = "error"

POISON_STATUS = 500
"""A record taken ``max_deliveries`` times with no outcome: it stopped every consumer that took it."""
