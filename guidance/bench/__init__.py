"""Benchmarks (`guidance bench`): per-stage medians and p99, never inside a timed test."""
