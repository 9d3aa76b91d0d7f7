"""Helpers every package may import; nothing here imports our other packages."""
