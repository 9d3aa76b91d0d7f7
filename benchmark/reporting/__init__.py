"""What a run writes: the leaderboard tables, the plots, and the provenance they carry."""
