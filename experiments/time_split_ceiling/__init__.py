"""How far can point-in-time "operational" features lift the time-split ROC AUC of the flight-delay model?

See README.md in this folder; run with ``python -m experiments.time_split_ceiling.run``.
"""
