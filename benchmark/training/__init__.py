"""Training on cached features: the heads, the logistic-regression probe, the sweep over the grid, fine-tuning."""
