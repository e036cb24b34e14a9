"""Data steps: ingest, validate, features, split."""
