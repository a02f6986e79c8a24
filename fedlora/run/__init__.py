"""Run infrastructure that keeps a run's results honest: the config fingerprint, the workdir lock and
resume policy, the CLI error boundary, and deferring Ctrl-C while a checkpoint is written."""
