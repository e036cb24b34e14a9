"""Benchmarks: one command each (`make bench`), printing a table and ratios against the named baselines."""
