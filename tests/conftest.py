"""Test session set-up: keep every cache inside the work tree's ignored `.cache/`."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
for key, sub in {
    "VLLM_CACHE_ROOT": "vllm",
    "TORCH_EXTENSIONS_DIR": "torch_extensions",
    "HF_HOME": "hf",
    "TRITON_CACHE_DIR": "triton",
    "WANDB_DIR": "wandb",
    "WANDB_CACHE_DIR": "wandb/cache",
    "WANDB_CONFIG_DIR": "wandb/config",
    "WANDB_DATA_DIR": "wandb/data",
    "OREAL_CACHE": "oreal",
}.items():
    os.environ.setdefault(key, str(CACHE / sub))
for key in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE"):
    os.environ.setdefault(key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

SHARED_DATA = ROOT.parent / "shared" / "data" / "benchmarks"
