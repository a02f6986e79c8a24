"""Run infrastructure: checkpoints, metric files, plots, config validation."""
