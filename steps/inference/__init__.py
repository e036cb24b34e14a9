"""Batch inference steps: score a source with a registered model, in chunks, into the artifact store."""
