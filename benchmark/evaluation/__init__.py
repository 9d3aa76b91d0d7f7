"""Judging heads: clinical metrics as pure functions, and verify, which recomputes a run's numbers."""
