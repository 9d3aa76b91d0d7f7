"""``cxr-bench export``: a run's model as one self-contained file per format, checked against the run's own
predictions, with a model card beside it."""
