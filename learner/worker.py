"""LearnerWorker: one rank of the ZeRO-3 learner group (one Ray actor per rank).

Each rank holds a shard of three models (docs/algorithm.md steps 5-7):
  policy    pi_theta, trained (AdamW, warm-up + cosine);
  reference the frozen initial policy for the k3 KL (beta > 0, kl_target initial);
  token RM  the initial policy's backbone + zero `Linear(hidden, 1)` (only in mode oreal),
            trained by `reward_model.trainer.RMTrainer`.
Every public method is COLLECTIVE: all ranks must call it, with equally many micro-batches,
because ZeRO-3 all-gathers parameters inside each forward and reduce-scatters in backward.
"""
from __future__ import annotations

import gc
import os
import socket
import warnings
from typing import Sequence

import torch

from learner import ckpt_io
from learner.batch import Batch, GlobalCounts, RMPlan, TrainSample, add_sums, collate, keep_graph
from learner.config import AlgoConfig, LearnerConfig
from learner.correction import engine_correction
from learner.deepspeed_config import grad_norm
from learner.loss import gather_logprobs, oreal_loss, token_logprobs
from reward_model.trainer import RMTrainer

# DeepSpeed's checkpoint tag: one checkpoint per folder (the driver names the folders by step).
CKPT_TAG = "state"


class LearnerWorker:
    def __init__(self, rank: int, cfg: LearnerConfig, algo: AlgoConfig, model_path: str,
                 seed: int, total_steps: int):
        self.rank, self.cfg, self.algo = rank, cfg, algo
        self.model_path, self.seed, self.total_steps = model_path, seed, total_steps
        torch.manual_seed(seed)

    # ------------------------------------------------------------------ set-up
    def master_address(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the torch.distributed rendezvous: its Ray
        node's IP (the hostname may resolve to 127.0.1.1), 127.0.0.1 outside Ray."""
        import ray

        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        return host, rendezvous_port(host)

    def check_run_folder(self, path: str, token: str) -> tuple[str, str] | None:
        """None when this rank reads the driver's sentinel (learner.run_folder), else (this
        node, why not)."""
        from learner.run_folder import check_sentinel, node_name

        problem = check_sentinel(path, token)
        return None if problem is None else (node_name(), problem)

    def setup(self, master_addr: str, master_port: int) -> int:
        import deepspeed
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.integrations import HfDeepSpeedConfig

        from learner.deepspeed_config import ds_config, warmup_cosine
        from learner.jit_ops import eager_muon_kernels, steady_jit_builds
        from reward_model.model import TokenRewardModel

        # the libraries' objects alive now live as long as the rank: frozen, later collections
        # skip them (ZeRO-3 collects fully as it sets up each model: 1.07 -> 0.65 CPU-s a rank)
        gc.freeze()
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          LOCAL_RANK="0", WORLD_SIZE=str(self.cfg.world_size))
        backend = self.cfg.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        steady_jit_builds()
        eager_muon_kernels()
        deepspeed.init_distributed(dist_backend=backend)
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        dtype = getattr(torch, self.cfg.dtype)
        self.pad_id = AutoTokenizer.from_pretrained(self.model_path).pad_token_id or 0
        policy_steps = max(1, self.total_steps - self._unscheduled_freeze(self.algo))

        def engine(model, optim, steps, name):
            conf = ds_config(self.cfg, optim, name)
            kwargs = {}
            if optim is not None:
                kwargs["lr_scheduler"] = lambda opt: warmup_cosine(opt, optim, steps)
            if name == "rm" and self.cfg.rm_head_lr_mult != 1.0:
                # two parameter groups: the backbone at rm_optim.lr, the zero head at lr x mult
                # (the schedule scales both, keeping the ratio)
                head = [p for n, p in model.named_parameters() if n.startswith("head.")]
                body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
                kwargs["model_parameters"] = [{"params": body},
                                              {"params": head, "lr": optim.lr * self.cfg.rm_head_lr_mult}]
            eng, *_ = deepspeed.initialize(model=model, config=conf, **kwargs)
            return eng

        # HfDeepSpeedConfig must be alive during from_pretrained: ZeRO-3 then partitions
        # the weights as they load, so no rank ever holds a full copy.
        self._hf_ds = HfDeepSpeedConfig(ds_config(self.cfg, self.cfg.policy_optim, "policy"))
        policy = _for_training(AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype),
                               self.cfg.gradient_checkpointing)
        self.policy = engine(policy, self.cfg.policy_optim, policy_steps, "policy")
        self.ref = None
        if self.algo.uses_ref:
            self._hf_ds = HfDeepSpeedConfig(ds_config(self.cfg, None, "reference"))
            ref = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype).eval()
            ref.requires_grad_(False)
            self.ref = engine(ref, None, 1, "reference")
        self.rm, self.rm_trainer = None, None
        if self.algo.uses_rm:
            self._hf_ds = HfDeepSpeedConfig(ds_config(self.cfg, self.cfg.rm_optim, "rm"))
            rm_checkpointing = self.cfg.rm_gradient_checkpointing
            rm = _for_training(TokenRewardModel.from_pretrained(self.model_path, dtype=dtype),
                               self.cfg.gradient_checkpointing if rm_checkpointing is None else rm_checkpointing)
            self.rm = engine(rm, self.cfg.rm_optim, self.algo.rm_updates_total(self.total_steps), "rm")
            self.rm_trainer = RMTrainer(self.rm, self.algo, self.pad_id, self.device, self.cfg.world_size,
                                        self.cfg.micro_batch_size)
        return self.rank

    def set_algo(self, algo: AlgoConfig) -> None:
        """Switch the ablation mode / coefficients between steps (the models stay)."""
        if algo.uses_rm and self.rm is None:
            raise ValueError(f"algo.mode={algo.mode!r} needs the token RM, but this learner was built without it")
        if algo.uses_rm and algo.rm_schedule(self.total_steps) != self.algo.rm_schedule(self.total_steps):
            raise ValueError("algo.rm_epochs, rm_minibatches, rm_only_epochs or actor_freeze_steps change the RM "
                             "updates per step that this learner's RM LR schedule was built for")
        if self._unscheduled_freeze(algo) != self._unscheduled_freeze(self.algo):
            raise ValueError("algo.schedule_through_freeze / actor_freeze_steps change the length this learner's "
                             "policy LR schedule was built for")
        if algo.uses_ref and self.ref is None:
            raise ValueError("algo.beta > 0 with kl_target=initial needs the reference model, "
                             "but this learner was built without it")
        self.algo = algo
        if self.rm is not None:
            self.rm_trainer.algo = algo

    @staticmethod
    def _unscheduled_freeze(algo: AlgoConfig) -> int:
        """Frozen steps the policy's LR schedule skips (0 when it advances through them)."""
        return algo.actor_freeze_steps if algo.freezes_policy and not algo.schedule_through_freeze else 0

    # ------------------------------------------------------------------ training
    def train_step(self, micro_batches: Sequence[Sequence[TrainSample]], counts: GlobalCounts,
                   step: int, rm_plan: RMPlan | None = None) -> dict[str, float]:
        """The RM's updates (mode oreal: `reward_model.trainer.RMTrainer.step`, with `rm_plan`
        when `algo.rm_own_data`) and one policy update (unless frozen).

        The token weights come from the RM as it was before this step's updates (docs/algorithm.md
        step 5), and so do the RM's instruments. During the RM-only steps the policy's LR schedule
        still advances (algo.schedule_through_freeze). `learner/lr`, `reward_model/lr`: the LR of
        this step's (first) update. Losses are per-rank shares of the global loss (normalised by
        the global N+, N-, S); DeepSpeed averages gradients over ranks, hence `* world_size`.
        """
        batches = [collate(mb, self.pad_id, self.device) for mb in micro_batches]
        sums: dict[str, float] = {}
        rm_scores: list[torch.Tensor | None] = [None] * len(batches)
        if self.algo.uses_rm:
            rm_scores = self.rm_trainer.step(batches, micro_batches, counts, rm_plan, self._rm_eval_due(step), sums)

        frozen = self.algo.freezes_policy and step < self.algo.actor_freeze_steps
        sums["learner/lr"] = self.policy.get_lr()[0] / self.cfg.world_size
        if frozen and self.algo.schedule_through_freeze:
            with warnings.catch_warnings():  # torch warns of a scheduler step before any optimizer step
                warnings.simplefilter("ignore", UserWarning)
                self.policy.lr_scheduler.step()
        if not frozen:
            for i, b in enumerate(batches):
                self.policy.set_gradient_accumulation_boundary(i == len(batches) - 1)
                logits = self.policy(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits
                logprobs, entropy = token_logprobs(logits, b.input_ids, with_entropy=True)
                # kl_target "old": on-policy, pi_old is the current policy before this update.
                ref_logprobs = self._ref_logprobs(b) if self.algo.uses_ref else logprobs.detach()
                # the engine's log-probs: the mismatch, TIS weights, or the off-policy ratio's pi_old
                tis, corrected = engine_correction(logprobs, b.engine_logprobs, b.mask, self.algo.tis_cap)
                add_sums(sums, corrected)
                off_policy = (b.engine_logprobs if (self.algo.max_staleness or self.algo.off_policy) and tis is None
                              else None)
                out = oreal_loss(
                    logprobs, ref_logprobs, rm_scores[i], b.mask, b.rewards, b.advantages,
                    mode=self.algo.mode, eta=self.algo.eta, beta=self.algo.beta,
                    pos_mult_adv=self.algo.pos_mult_adv,
                    n_pos_tokens=counts.n_pos_tokens, n_neg_tokens=counts.n_neg_tokens,
                    weight_rule=self.algo.weight_rule,
                    force_w_pos_one=self.algo.force_w_pos_one, shuffle_weights=self.algo.shuffle_token_weights,
                    old_logprobs=off_policy, kl_type=self.algo.kl_type, tis_weights=tis, positive=b.labels,
                )
                self.policy.backward(keep_graph(out["loss"], logprobs, b) * self.cfg.world_size,
                                     scale_wrt_gas=False)
                add_sums(sums, {
                    "learner/loss": out["loss"], "learner/pos": out["pos"], "learner/neg": out["neg"],
                    "learner/kl": out["kl"],
                    "learner/kl_k3_sum": out["kl_k3_mean"] * b.mask.sum(),
                    "learner/w_pos_sum": out["w_pos_mean"] * out["n_pos_tokens"],
                    "learner/w_neg_sum": out["w_neg_mean"] * out["n_neg_tokens"],
                    "learner/entropy_sum": _entropy_sum(entropy, b.mask),
                })
            self.policy.step()
            sums["learner/grad_norm"] = grad_norm(self.policy) / self.cfg.world_size
        sums["learner/tokens"] = float(sum(b.mask.sum().item() for b in batches))
        sums["learner/policy_frozen"] = float(frozen) / self.cfg.world_size
        return sums

    def _rm_eval_due(self, step: int) -> bool:
        """After step `step` (0-based) the RM's instruments are logged: every algo.rm_eval_every
        steps and after the last (as `launch.evaluation.rm_heldout.RMHeldout.due`)."""
        every = self.algo.rm_eval_every
        return bool(every) and ((step + 1) % every == 0 or step + 1 == self.total_steps)

    def rm_position_scores(self, samples: Sequence[TrainSample]) -> list[list[float]]:
        """The RM's raw position scores per sample (`RMTrainer.position_scores`). Collective:
        every rank calls it with equally many samples (an empty list runs one placeholder forward)."""
        return self.rm_trainer.position_scores(samples)

    def token_weights(self, samples: Sequence[TrainSample]) -> list[tuple[list[float], list[float]]]:
        """(w+, w-) along each sample's response tokens under the current RM (for plots)."""
        return self.rm_trainer.token_weights(samples)

    def _ref_logprobs(self, b: Batch) -> torch.Tensor:
        with torch.no_grad():
            logits = self.ref(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits
            return gather_logprobs(logits, b.input_ids)

    # ------------------------------------------------------------------ weights
    # The weight sync (learner.weight_sync): only metadata crosses Ray, the bytes go over the
    # weight-sync groups (sync_mode shards: rank r + every vLLM worker, one group per rank;
    # gather: learner rank 0 + every vLLM worker), one bucket (or part) per broadcast.
    def weight_plan(self):
        """The bucket plan of the policy (names, shapes, dtypes, offsets: metadata only)."""
        from learner.weight_sync.zero3 import bucket_bytes, policy_plan

        if getattr(self, "_plan", None) is None:
            self._plan = policy_plan(self.policy.module, bucket_bytes(self.cfg.sync_bucket_mb))
        return self._plan

    def sync_backend(self) -> str:
        """The weight-sync group's backend: the learner's own (nccl on GPUs, gloo on CPU);
        gloo when colocated, where only CUDA-IPC handles and acks travel on it."""
        return "nccl" if self.device.type == "cuda" and not self.cfg.colocate else "gloo"

    def open_sync_endpoint(self) -> tuple[str, int]:
        """Bind (and keep) the socket on which this rank will serve a sync group's store: its
        Ray node's IP and a free port, held until `join_weight_sync` (no port race)."""
        host = self.master_address()[0]
        self._sync_listen = socket.create_server((host, 0))
        return host, self._sync_listen.getsockname()[1]

    def join_weight_sync(self, endpoints: Sequence[tuple[str, int]], world_size: int) -> int:
        """Join this rank's weight-sync group (`endpoints`: one (host, port) per group, in
        group order; a rank serves the store of the group it roots from the socket of
        `open_sync_endpoint`). sync_mode shards: rank r is group rank 0 of group r. gather:
        only rank 0 is a member, of the one group. Colocated: every rank r is group rank r of
        the one group, the source of engine r on its own GPU. Blocks until every engine
        worker has joined."""
        from learner.weight_sync.group import init_group

        if self.cfg.colocate:
            group, rank = 0, self.rank
        elif self.cfg.sync_shards:
            group, rank = self.rank, 0
        elif self.rank == 0:
            group, rank = 0, 0
        else:
            return self.rank
        host, port = endpoints[group]
        listen = getattr(self, "_sync_listen", None) if rank == 0 else None
        self._sync_group = init_group(host, port, rank, world_size, self.sync_backend(), listen_socket=listen)
        self._sync_listen = None  # the store owns it now
        return self.rank

    def broadcast_weights(self, version: int, plan=None) -> dict[str, float]:
        """Every rank calls it. sync_mode shards: each rank broadcasts its own ZeRO-3
        partitions of each bucket on its own group (no collective among the ranks). gather:
        every rank joins each bucket's ZeRO-3 gather, rank 0 packs it and broadcasts it while
        the next one is gathered. `plan` overrides the policy's own bucket plan (the
        benchmark's per-tensor scheme)."""
        from dataclasses import asdict

        from learner.weight_sync.cuda_ipc import send_colocated
        from learner.weight_sync.group import send_buckets
        from learner.weight_sync.shards import send_shards
        from learner.weight_sync.zero3 import bucket_gatherer, partition_reader

        plan = (plan or self.weight_plan()).with_version(version)
        if self.cfg.sync_shards:
            world = self.cfg.world_size
            return asdict(send_shards(self._sync_group, plan, partition_reader(self.policy.module, self.rank, world),
                                      world, device=self.device))
        gather = bucket_gatherer(self.policy.module)
        if self.cfg.colocate:  # every rank hands its gathered buckets to its own engine
            return asdict(send_colocated(self._sync_group, plan, gather, device=self.device))
        group = self._sync_group if self.rank == 0 else None
        return asdict(send_buckets(group, plan, gather, device=self.device))

    def load_policy_from(self, model_path: str) -> int:
        """Reset the policy's parameters from a model folder (e.g. the initial policy), read
        by rank 0 and scattered into the ZeRO-3 partitions. Optimiser state is kept."""
        from learner.weight_sync.zero3 import load_from_path

        return load_from_path(self.policy.module, model_path, self.rank)

    def publish_weights(self) -> bytes | None:
        """The whole policy as one safetensors blob on rank 0 (others None): for
        `save_pretrained` and the benchmark's object-store baseline, never for the sync."""
        from safetensors.torch import save

        from learner.weight_sync.zero3 import bucket_gatherer

        state: dict[str, torch.Tensor] = {}
        gather = bucket_gatherer(self.policy.module)
        for bucket in self.weight_plan().buckets:
            with gather(bucket) as tensors:
                if self.rank == 0:
                    state.update({n: t.detach().to("cpu", copy=True).contiguous() for n, t in tensors.items()})
        return save(state) if self.rank == 0 else None

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """log pi_theta(x_t | x_<t), t >= 1, of a fixed sequence (the weight-sync check)."""
        ids = torch.tensor([list(token_ids)], device=self.device)
        with torch.no_grad():
            logits = self.policy(input_ids=ids, use_cache=False).logits
            return gather_logprobs(logits, ids)[0].tolist()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, folder: str, step: int) -> int:
        """DeepSpeed's own checkpoint of each trained model (the policy; the token RM in mode
        oreal): module, optimiser and LR schedule, ZeRO partitions one file per rank, under
        `folder/<model>/`; plus this rank's torch RNG (`folder/rng_rank<r>.pt`; nothing in
        training draws from it today, dropout being off, but a resumed rank starts from the
        state it had). The reference is frozen and comes from the model path. Collective:
        every rank writes its own files, so `folder` must be one that all ranks see. Returns the
        SHA-256 of the files this rank wrote (relative to `folder`), for the checkpoint's manifest."""
        for name, engine in self._trained_models():
            engine.save_checkpoint(os.path.join(folder, name), tag=CKPT_TAG, client_state={"step": step},
                                   save_latest=False)
        torch.save(torch.get_rng_state(), os.path.join(folder, f"rng_rank{self.rank}.pt"))
        return ckpt_io.hash_own_files(folder, self.rank)

    def load_checkpoint(self, folder: str) -> int:
        """Back to what `save_checkpoint` wrote (weights, optimiser, LR schedule, RNG); returns
        the step it was saved at. Collective."""
        steps = {}
        for name, engine in self._trained_models():
            ckpt_io.use_weights_only(engine)
            path, client = engine.load_checkpoint(os.path.join(folder, name), tag=CKPT_TAG,
                                                  load_optimizer_states=True, load_lr_scheduler_states=True)
            if path is None:
                raise FileNotFoundError(f"learner rank {self.rank}: no {name} checkpoint in {os.path.join(folder, name)}")
            steps[name] = int(client["step"])
        if len(set(steps.values())) != 1:
            raise ValueError(f"learner checkpoint in {folder} mixes steps {steps}")
        torch.set_rng_state(ckpt_io.load_weights_only(os.path.join(folder, f"rng_rank{self.rank}.pt")))
        return next(iter(steps.values()))

    def _trained_models(self):
        return [(name, engine) for name, engine in (("policy", self.policy), ("rm", self.rm)) if engine is not None]

    def save_pretrained(self, out_dir: str) -> None:
        """Full policy in Hugging Face format (rank 0 writes)."""
        from safetensors.torch import load
        from transformers import AutoTokenizer

        blob = self.publish_weights()
        if self.rank == 0:
            module = self.policy.module
            module.config.save_pretrained(out_dir)
            from safetensors.torch import save_file
            save_file(load(blob), os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(out_dir)
            if getattr(module, "generation_config", None) is not None:
                module.generation_config.save_pretrained(out_dir)


def rendezvous_port(host: str, tries: int = 64) -> int:
    """A free port for the rendezvous, from below the kernel's ephemeral range (and above
    Ray's worker ports, 10002-19999): rank 0 binds it only seconds later, after its imports,
    and a port picked by binding port 0 could meanwhile be handed to any process binding
    port 0 (the vLLM engines starting beside the learner do: EADDRINUSE)."""
    import random

    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(tries):
        port = rng.randint(20000, max(20001, low - 1))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: the kernel's choice
        s.bind((host, 0))
        return s.getsockname()[1]


def _entropy_sum(entropy: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum over response tokens of the policy's entropy H(pi(. | prefix)) (from `token_logprobs`)."""
    return float(torch.where(mask.bool(), entropy.detach(), 0.0).sum())


def _for_training(model: torch.nn.Module, checkpointing: bool) -> torch.nn.Module:
    """`model` in training mode: `from_pretrained` returns eval mode, DeepSpeed keeps it, and
    HF only checkpoints layers in training mode. Non-reentrant checkpointing (recomputed under
    ZeRO-3's gather hooks, no input that requires grad needed). Dropout off: the loss wants the
    log-probs of the policy that sampled (rho = 1, k3 against the reference in eval mode)."""
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # HF attention's own rate
            m.attention_dropout = 0.0
    return model.train()
