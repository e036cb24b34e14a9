"""Flywheel: the command-line front of the flows, stacks and service."""
