"""Monitoring steps: serving windows vs the training reference, realized performance, the retrain policy."""
