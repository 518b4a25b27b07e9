"""What a run keeps: checkpoints and exact resume, metrics, the summary and plots, the W&B samples table, results provenance."""
