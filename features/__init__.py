"""Make and cache features: find images, decode them, run backbones, keep the arrays."""
