"""bench/rm_probe.py: the RM training loop tells separable pairs apart on held-out pairs,
and the CLI rejects bad arguments (the probe itself runs with `python -m bench.rm_probe`)."""
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import rm_probe  # noqa: E402


def _pairs(n: int, seed: int):
    """Correct responses drawn from one block of tokens, wrong ones from another."""
    from learner.batch import TrainSample

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = tuple(rng.randrange(10, 500) for _ in range(6))
        right = tuple(rng.randrange(100, 140) for _ in range(8))
        wrong = tuple(rng.randrange(300, 340) for _ in range(8))
        out.append((TrainSample(prompt, right, 1.0, 1.0), TrainSample(prompt, wrong, -1.0, -1.0)))
    return out


def test_train_rm_learns_separable_pairs_and_reports_every_k_steps():
    from launch.tiny_model import TinyModelConfig, ensure_tiny_model

    path = ensure_tiny_model(TinyModelConfig())
    accs = rm_probe.train_rm(path, _pairs(32, 0), _pairs(16, 1), pad_id=0, lr=1e-3, steps=30, every=10,
                             pairs_per_step=8)
    assert len(accs) == 3
    assert accs[-1] >= 0.9 and all(0.0 <= a <= 1.0 for a in accs)


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--every", "0"], ["--lrs", "0"]])
def test_cli_rejects_non_positive_arguments(argv):
    with pytest.raises(SystemExit, match="must be positive"):
        rm_probe.main(argv)
