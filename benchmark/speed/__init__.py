"""Benchmarks of the harness's own speed (extraction, head training), kept apart from the library code."""
