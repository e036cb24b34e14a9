"""Rollout steps: what the services' metrics say about a candidate, and whether its guardrails hold."""
