"""Runtime objects behind stack components: what a flow builds from a stack and hands to steps.

Each module wraps one infrastructure library (fsspec, whylogs, MLflow), so replacing a library touches one
file and steps stay free of configuration parsing.
"""
