"""Ablations on the demo task: the paper's four modes (`python -m launch.ablation`, `paper.py`) and
what the token RM buys (`python -m launch.ablation.rm`, `rm.py`)."""
