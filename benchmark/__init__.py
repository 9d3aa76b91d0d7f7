"""Heads, metrics, runs and reports: from cached features to a leaderboard."""
