"""Learner and algorithm configuration: the Hydra schemas behind `conf/learner/*.yaml`
and `conf/algo/*.yaml`. Defaults are docs/algorithm.md's (the authors' released configs)."""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("reinforce", "shaped", "bc", "oreal")
# algo.rm_samples: what the token RM trains on.
RM_SAMPLES = ("pair", "all")
# The learner's models, as named by learner.offload_params / learner.offload_optimizer.
OFFLOAD_MODELS = ("policy", "rm", "reference")
# learner.sync_mode: how the policy's weights reach the engines (learner.weight_sync).
SYNC_MODES = ("shards", "gather")
# algo.overlong: what a truncated response (no stop token) does to the loss (learner.overlong).
OVERLONG = ("keep", "filter", "penalty")
# algo.kl_type: the KL estimator (learner.kl).
KL_TYPES = ("k1", "k2", "k3", "mse")


@dataclass
class OptimConfig:
    # Peak learning rate after warm-up.
    lr: float = 5e-7
    # Cosine decay floor.
    min_lr: float = 1e-7
    # Linear warm-up steps (optimiser steps).
    warmup_steps: int = 10
    # AdamW decoupled weight decay.
    weight_decay: float = 0.01
    # AdamW (beta1, beta2): torch's defaults, as the authors' script (both models); this
    # repo used [0.9, 0.95] before (issue 16), e.g. learner.policy_optim.betas=[0.9,0.95].
    betas: tuple[float, float] = (0.9, 0.999)
    # Gradient-norm clip (global norm over all ranks).
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"optim: need 0 <= min_lr <= lr and lr > 0, got lr={self.lr} min_lr={self.min_lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("optim (learner.policy_optim / learner.rm_optim): need weight_decay >= 0 and "
                             f"grad_clip >= 0, got weight_decay={self.weight_decay} grad_clip={self.grad_clip}")


@dataclass
class AlgoConfig:
    # Ablation row (docs/algorithm.md): reinforce | shaped | bc | oreal (the full method).
    mode: str = "oreal"
    # eta: weight of the negative (shaped) term.
    eta: float = 0.5
    # beta: weight of the KL (algo.kl_type, k3 by default) to the frozen initial policy (0 skips the
    # reference model).
    beta: float = 0.01
    # Positive samples weighted by A+ (released configs) rather than 1 (paper prose).
    pos_mult_adv: bool = True
    # Advantage estimator over the K samples of a query: rloo (default) | grpo.
    advantage: str = "rloo"
    # Keep one correct + one incorrect sample per mixed query (bc / oreal); drop the rest.
    filter_groups: bool = True
    # Reward of a correct / any other response (released configs: +1 / -1; paper prose: 1 / 0).
    reward_correct: float = 1.0
    reward_incorrect: float = -1.0
    # Policy frozen for this many first steps while the token RM trains (oreal mode only,
    # unless freeze_without_rm).
    actor_freeze_steps: int = 10
    # Freeze the policy for actor_freeze_steps in the modes without a token RM too (bc, shaped,
    # reinforce): an ablation with the same policy updates as oreal's (issue 16's bc check).
    freeze_without_rm: bool = False
    # The policy's LR schedule advances during those frozen steps (authors' script: with 10
    # warm-up and 10 frozen steps the first policy update runs at the peak LR); false: it
    # starts at the first policy update (warm-up after the freeze, this repo's old behaviour).
    schedule_through_freeze: bool = True
    # Negative-sample coefficient: "rloo" = A- (proportional to p; released configs) or
    # "paper" = (1 - p) * r (the paper's prose). eta multiplies either.
    neg_weight: str = "rloo"
    # KL target: "initial" = the frozen initial policy (released configs) or "old" = pi_old,
    # the policy that sampled the batch (paper prose; zero on-policy, no reference model).
    kl_target: str = "initial"
    # A token's RM score: "prefix_mean" of the logits read at the position that predicts each
    # token (released configs), or "token": its own logit w(s_<=t), read at the token's own
    # position (paper prose), which is then also what the RM's sequence score averages.
    rm_score: str = "prefix_mean"
    # The authors' topk_rescale (commented out in their configs): per sequence only the
    # int(n * ratio) tokens of highest q (w+) / 1-q (w-) get a weight, min-max scaled to [0, 1];
    # off: w+ = max(2q-1, 0), w- = max(1-2q, 0) (their threshold_rescale at 0.5).
    topk_rescale: bool = False
    # Fractions of a sequence's tokens kept by topk_rescale (their commented config: 0.25).
    topk_ratio_pos: float = 0.25
    topk_ratio_neg: float = 0.25
    # q_t = sigmoid(wbar_t / T) in the token weights (a deviation below 1; 1: the paper). An RM
    # kept calibrated (rm_token_l2) scores in a narrow band, so w+ = 2q - 1 stays small and the
    # positives' cloning is mostly switched off; T < 1 widens the weights, not their order.
    rm_weight_temperature: float = 1.0
    # w+ = 1 on every positive token (mode oreal): the positive term becomes bc's exactly; an
    # ablation switch (is the gap to bc the positives being switched off while the RM is at chance?).
    force_w_pos_one: bool = False
    # Ablation: w+ / w- permuted at random among the tokens of their class (positives' w+,
    # negatives' w-) in each micro-batch: the same mean and spread as the RM's, no token-level
    # information (does the learned RM do better than noise?).
    shuffle_token_weights: bool = False
    # Passes of the token RM over each step's kept samples (one optimiser step each). 1 is the
    # paper's; more let an RM that sees few pairs per step learn faster (like a critic's
    # epochs). The token weights always come from the RM before the first pass.
    rm_epochs: int = 1
    # What the token RM trains on (a deviation from the paper when not "pair"): "pair" = the
    # kept (correct, incorrect) pair of each mixed query (docs/algorithm.md step 5); "all" = all K
    # samples of each mixed query, each weighted 1 / (its class's count in the query), so
    # every query counts once per class as a pair does, with K/2 times the sequences.
    rm_samples: str = "pair"
    # The RM trains on the RM samples of the last N steps (this one included), a replay
    # buffer the driver keeps (saved in checkpoints). 1: this step's only (the paper).
    rm_replay_steps: int = 1
    # Each of the rm_epochs passes over the RM's data (the replay buffer) is split into this
    # many shuffled mini-batches, one optimiser step each: rm_epochs x rm_minibatches RM
    # updates per RL step. 1: one step per pass (the paper, with rm_epochs 1).
    rm_minibatches: int = 1
    # The RM's BCE targets 1 - s/2 (correct) and s/2 (incorrect) instead of 1 and 0 (a
    # deviation; 0: the paper): the loss stops rewarding ever larger scores, so an RM that
    # ranks well does not grow overconfident on pairs it trained on (its held-out BCE).
    rm_label_smoothing: float = 0.0
    # Adds rm_token_l2 x (mean over a response's tokens of the squared token score) to the RM's
    # per-sequence BCE (a deviation; 0: the paper). The BCE fits only the mean score, so the
    # token scores are otherwise free to swing far apart around it (the token weights and the
    # first-error drop then read noise); the penalty keeps them near 0 where a pair's responses
    # agree and lets them move where they part.
    rm_token_l2: float = 0.0
    # The RM samples of the run's first N steps stay in its replay for the whole run, besides
    # the last rm_replay_steps' (a deviation; 0: none). With the RM-only steps they are the
    # starting policy's: the RM keeps ranking the responses it learnt first while the policy
    # moves away from them (its held-out pairs are the starting policy's too).
    rm_replay_anchor_steps: int = 0
    # RL steps at the start in which only the RM trains (the policy frozen): the name
    # for actor_freeze_steps (the authors'); null keeps actor_freeze_steps, a number sets it.
    rm_only_steps: int | None = None
    # Queries drawn in each RM-only step (a deviation; null: prompts_per_step, the paper). The
    # policy is frozen then, so more queries are more of the starting policy's pairs for the RM
    # before the policy moves: they cost generation and RM updates, no policy update.
    rm_only_prompts_per_step: int | None = None
    # The RM's passes over its data in each RM-only step (a deviation; null: rm_epochs). Needs
    # the RM's own data path (rm_own_data); its LR schedule counts these steps' extra updates.
    rm_only_epochs: int | None = None
    # The RM's held-out instruments (reward_model/heldout_*): scored at step 0 and every N
    # steps on a fixed set of (correct, incorrect) pairs sampled once from the starting
    # policy on held-out problems (rm_heldout_pairs.jsonl in the run folder). 0: off.
    rm_eval_every: int = 5
    # Pairs in that fixed set (at least; from as many held-out problems as it takes).
    rm_eval_pairs: int = 256
    # Keep EVERY correct sample of a mixed query (and one incorrect): the authors' no-RM
    # baseline (conf/algo/wo_tokenrm.yaml: mode bc, no freeze). false: one of each (docs/algorithm.md step 4).
    keep_all_correct: bool = False
    # 0: on-policy (docs/algorithm.md: generate, grade, train, sync, in turn). 1: one step off-policy:
    # step t+1's rollouts are generated on the weights of before step t's update while the
    # learner trains step t (launch.streaming.Prefetcher); the negative term's ratio then uses
    # the sampling engine's log-probs as pi_old (rollout.behaviour_logprobs is turned on);
    # samples more than max_staleness versions old are dropped (rollout/stale_dropped).
    max_staleness: int = 0
    # The policy terms' importance ratio takes the engines' log-probs as pi_old even on-policy
    # (as max_staleness=1 does). The run turns it on with rollout.partial: a carried sample's
    # tokens come from the several versions that sampled them.
    off_policy: bool = False
    # A truncated response (no stop token: cut at rollout.max_new_tokens) is "keep": graded
    # like any other, reward_incorrect (the paper); "filter": left out of the loss, of its
    # query's pass rate and advantages, of the kept pair and of the RM's samples (DAPO's
    # overlong filtering, TRL's mask_truncated_completions); "penalty": DAPO's soft overlong
    # punishment added to every sample's reward, 0 up to max_new_tokens - overlong_buffer
    # tokens, then falling linearly to -1 at max_new_tokens.
    overlong: str = "keep"
    # Tokens before rollout.max_new_tokens over which overlong=penalty ramps from 0 to -1 (DAPO:
    # 4096 of 20480); needed by penalty (> 0 and < rollout.max_new_tokens), unused otherwise.
    overlong_buffer: int | None = None
    # Truncated importance sampling: every policy term (not the KL) is weighted per token by
    # min(pi_learner_old / pi_engine, tis_cap), the ratio of the learner's probability of the
    # sampled token to the engine's (learner.correction; verl's rollout correction, TRL's
    # vllm_importance_sampling_cap). null: off (the paper). At least 1.
    tis_cap: float | None = None
    # KL estimator of the penalty to the reference (learner.kl): k3 = exp(d) - d - 1 with
    # d = logp_ref - logp (released configs, the authors' "unbias"), k1 = -d, k2 = d^2 / 2,
    # mse = d^2 / 2 (the authors' name for k2's formula).
    kl_type: str = "k3"
    # DAPO's dynamic sampling (verl's algorithm.filter_groups): when the filter leaves fewer than
    # prompts_per_step mixed queries, draw more from the data order, generated and graded as the
    # step's own, until prompts_per_step are mixed (the first drawn are trained on) or
    # max_refill_rounds rounds ran (launch.streaming.refill). Needs the filter (mode bc or
    # oreal, filter_groups). false: the paper's, the batch shrinks as queries become all right.
    dynamic_sampling: bool = False
    # Refill rounds a step may take at most; each draws the missing mixed queries divided by
    # the step's mixed share so far, at most prompts_per_step (a fresh batch when none was mixed).
    max_refill_rounds: int = 4

    def __post_init__(self) -> None:
        if self.overlong not in OVERLONG:
            raise ValueError(f"algo.overlong must be one of {OVERLONG}, got {self.overlong!r}")
        if self.overlong_buffer is not None and self.overlong_buffer < 1:
            raise ValueError(f"algo.overlong_buffer must be >= 1 token or null, got {self.overlong_buffer}")
        if self.overlong == "penalty" and self.overlong_buffer is None:
            raise ValueError("algo.overlong=penalty needs algo.overlong_buffer: the tokens before "
                             "rollout.max_new_tokens over which the penalty ramps (DAPO: 4096 of 20480)")
        if self.tis_cap is not None and not self.tis_cap >= 1:
            raise ValueError(f"algo.tis_cap must be >= 1 or null (off), got {self.tis_cap}: a cap below 1 "
                             "would shrink the tokens on which the engine and the learner agree")
        if self.kl_type not in KL_TYPES:
            raise ValueError(f"algo.kl_type must be one of {KL_TYPES}, got {self.kl_type!r}")
        if self.kl_type == "k1" and self.kl_target == "old" and self.beta > 0:
            raise ValueError("algo.kl_type=k1 with algo.kl_target=old: k1 to pi_old has value 0 and a gradient that "
                             "is pure noise (grad log pi of the samples); use k2, k3 or mse, or kl_target=initial")
        if self.max_staleness not in (0, 1):
            raise ValueError(f"algo.max_staleness must be 0 (on-policy) or 1 (one step off-policy), "
                             f"got {self.max_staleness}")
        if self.mode not in MODES:
            raise ValueError(f"algo.mode must be one of {MODES}, got {self.mode!r}")
        if self.advantage not in ("rloo", "grpo"):
            raise ValueError(f"algo.advantage must be 'rloo' or 'grpo', got {self.advantage!r}")
        for key, allowed in (("neg_weight", ("rloo", "paper")), ("kl_target", ("initial", "old")),
                             ("rm_score", ("prefix_mean", "token"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"algo.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("topk_ratio_pos", "topk_ratio_neg"):
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"algo.{key} must be in (0, 1], got {getattr(self, key)}")
        for key in ("rm_epochs", "rm_replay_steps", "rm_minibatches", "rm_eval_pairs"):
            if getattr(self, key) < 1:
                raise ValueError(f"algo.{key} must be >= 1, got {getattr(self, key)}")
        if self.rm_replay_anchor_steps < 0:
            raise ValueError(f"algo.rm_replay_anchor_steps must be >= 0, got {self.rm_replay_anchor_steps}")
        if not self.rm_weight_temperature > 0.0:
            raise ValueError(f"algo.rm_weight_temperature must be > 0, got {self.rm_weight_temperature}")
        if not self.rm_token_l2 >= 0.0:
            raise ValueError(f"algo.rm_token_l2 must be >= 0, got {self.rm_token_l2}")
        if not 0.0 <= self.rm_label_smoothing < 1.0:
            raise ValueError(f"algo.rm_label_smoothing must be in [0, 1), got {self.rm_label_smoothing}")
        if self.rm_samples not in RM_SAMPLES:
            raise ValueError(f"algo.rm_samples must be one of {RM_SAMPLES}, got {self.rm_samples!r}")
        if self.rm_eval_every < 0:
            raise ValueError(f"algo.rm_eval_every must be >= 0 (0: off), got {self.rm_eval_every}")
        for key in ("rm_only_prompts_per_step", "rm_only_epochs"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"algo.{key} must be >= 1 or null, got {getattr(self, key)}")
        if self.rm_only_epochs is not None and self.uses_rm and not self.rm_own_data:
            raise ValueError("algo.rm_only_epochs needs the RM's own data (algo.rm_samples=all, rm_replay_steps > 1, "
                             "rm_minibatches > 1 or rm_replay_anchor_steps > 0); on the paper's pairs use algo.rm_epochs")
        if self.rm_only_steps is not None:
            if self.rm_only_steps < 0:
                raise ValueError(f"algo.rm_only_steps must be >= 0 or null, got {self.rm_only_steps}")
            self.actor_freeze_steps = self.rm_only_steps
        for key in ("eta", "beta", "actor_freeze_steps"):  # coefficients: a negative one flips a term
            if getattr(self, key) < 0:
                raise ValueError(f"algo.{key} must be >= 0, got {getattr(self, key)}")
        if self.max_refill_rounds < 0:
            raise ValueError(f"algo.max_refill_rounds must be >= 0, got {self.max_refill_rounds}")
        if self.dynamic_sampling and not self.filters:
            raise ValueError(f"algo.dynamic_sampling=true refills the mixed queries the filter keeps: it needs "
                             f"algo.filter_groups=true and mode bc or oreal, got filter_groups="
                             f"{str(self.filter_groups).lower()}, mode={self.mode}")
        if self.reward_correct <= self.reward_incorrect:
            raise ValueError("algo.reward_correct must be greater than algo.reward_incorrect")

    @property
    def uses_rm(self) -> bool:
        return self.mode == "oreal"

    @property
    def freezes_policy(self) -> bool:
        """The policy waits `actor_freeze_steps` steps: oreal's RM-only steps, or any mode's
        with `freeze_without_rm`."""
        return self.uses_rm or self.freeze_without_rm

    @property
    def rm_updates_per_step(self) -> int:
        """RM optimiser steps in one RL step after the RM-only ones (rm_epochs passes x
        rm_minibatches each)."""
        return self.rm_epochs * self.rm_minibatches

    def rm_only_step(self, step: int) -> bool:
        """Step `step` (0-based) is one of the RM-only steps: the RM trains, the policy waits."""
        return self.uses_rm and step < self.actor_freeze_steps

    def prompts_at(self, step: int, prompts_per_step: int | None) -> int | None:
        """Queries drawn in step `step` (0-based): rm_only_prompts_per_step in the RM-only steps
        when set, else `prompts_per_step` (`TrainConfig.prompts_at`; the offline probe's too)."""
        more = self.rm_only_prompts_per_step
        return more if more is not None and self.rm_only_step(step) else prompts_per_step

    def rm_epochs_at(self, step: int) -> int:
        """The RM's passes over its data in step `step` (rm_only_epochs in the RM-only steps)."""
        return self.rm_only_epochs if self.rm_only_epochs is not None and self.rm_only_step(step) else self.rm_epochs

    def rm_schedule(self, steps: int) -> list[int]:
        """RM optimiser steps in each of a run's `steps` RL steps; their sum is the length of
        the RM's LR schedule."""
        return [self.rm_epochs_at(s) * self.rm_minibatches for s in range(steps)]

    def rm_updates_total(self, steps: int) -> int:
        """RM optimiser steps in a run of `steps` RL steps: the length of the RM's LR schedule."""
        return sum(self.rm_schedule(steps))

    @property
    def rm_own_data(self) -> bool:
        """The RM trains on data of its own (all samples, a replay buffer, or mini-batches),
        not in one pass over the policy's kept pairs."""
        return (self.rm_samples != "pair" or self.rm_replay_steps > 1 or self.rm_minibatches > 1
                or self.rm_replay_anchor_steps > 0)

    @property
    def topk_ratios(self) -> tuple[float, float] | None:
        """(ratio for w+, ratio for w-) when topk_rescale is on, else None."""
        return (self.topk_ratio_pos, self.topk_ratio_neg) if self.topk_rescale else None

    @property
    def weight_rule(self):
        """How the RM's scores become token weights (`reward_model.loss.WeightRule`)."""
        from reward_model.loss import WeightRule  # torch: not at config import

        return WeightRule(self.rm_score, self.topk_ratios, self.rm_weight_temperature)

    @property
    def uses_ref(self) -> bool:
        return self.beta > 0 and self.kl_target == "initial"

    @property
    def filters(self) -> bool:
        return self.filter_groups and self.mode in ("bc", "oreal")


@dataclass
class LearnerConfig:
    # Ranks of the ZeRO-3 data-parallel group (one Ray actor each).
    world_size: int = 2
    # torch.distributed backend: auto (nccl with GPUs, else gloo) | gloo | nccl.
    backend: str = "auto"
    # ZeRO stage of all three models (policy, reference, token RM).
    zero_stage: int = 3
    # The token RM's zero-initialised head learns at rm_optim's LR times this (the backbone at
    # rm_optim's LR): a larger step for the head alone (1: one LR for the whole RM, the paper's).
    rm_head_lr_mult: float = 1.0
    # Sequences per forward/backward on one rank; gradients accumulate over micro-batches.
    # With max_tokens_per_micro_batch set it only caps the rows of a micro-batch.
    micro_batch_size: int = 8
    # Token budget of one micro-batch, counted in PADDED tokens (rows x longest row, prompt +
    # response): samples are packed by length (learner.batch.pack), every rank still runs
    # equally many micro-batches. null: micro_batch_size sequences each (no budget). One
    # sample longer than the budget gets a micro-batch of its own.
    max_tokens_per_micro_batch: int | None = None
    # Compute dtype: float32 | bfloat16 (GPU).
    dtype: str = "float32"
    # Gradient checkpointing of the policy (long responses on GPU).
    gradient_checkpointing: bool = False
    # Gradient checkpointing of the token RM's backbone; null: as gradient_checkpointing.
    rm_gradient_checkpointing: bool | None = None
    # Policy optimiser (docs/algorithm.md: 5e-7 cosine to 1e-7, 10 warm-up steps).
    policy_optim: OptimConfig = field(default_factory=OptimConfig)
    # Token RM optimiser (docs/algorithm.md: 2e-6 cosine to 4e-7).
    rm_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-6, min_lr=4e-7))
    # Ray resources per rank (the ranks are packed on as few nodes as possible). Ray sets each
    # rank's OMP_NUM_THREADS (torch's CPU threads) from it: optimizer offload's Adam runs on them.
    num_cpus_per_rank: float = 0.5
    num_gpus_per_rank: float = 0.0
    # Engine i and rank i share placement bundle i (one GPU each pair, both taking a fraction
    # of it: rollout.num_gpus_per_actor + num_gpus_per_rank <= 1); needs
    # rollout.num_engines == world_size and rollout.tensor_parallel_size 1.
    colocate: bool = False
    # Largest |log pi_vllm - log pi_learner| on the probe sequence after a weight sync.
    sync_tolerance: float = 1e-3
    # Weight sync: MiB of parameters gathered, packed and broadcast at once (one bucket); at
    # most two buckets are alive on the sender and on each receiver during a sync.
    sync_bucket_mb: float = 256.0
    # Weight sync path (learner.weight_sync): "shards" = every rank broadcasts its own ZeRO-3
    # partitions of each bucket on its own group (no gather; the engines reassemble), or
    # "gather" = every rank joins each bucket's ZeRO-3 all-gather and rank 0 alone broadcasts
    # it. Ignored when colocate is true (that path lends gathered buckets by CUDA IPC).
    sync_mode: str = "shards"
    # ZeRO-3 parameter offload to CPU memory, per model: any of "policy", "rm", "reference".
    offload_params: list[str] = field(default_factory=list)
    # ZeRO-3 optimizer-state offload to CPU (Adam steps on the CPU), per model: "policy", "rm"
    # (the reference has no optimizer).
    offload_optimizer: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"learner.world_size must be >= 1, got {self.world_size}")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"learner.backend must be auto, gloo or nccl, got {self.backend!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"learner.zero_stage must be 0..3, got {self.zero_stage}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"learner.dtype must be float32 or bfloat16, got {self.dtype!r}")
        if not self.rm_head_lr_mult > 0:
            raise ValueError(f"learner.rm_head_lr_mult must be > 0, got {self.rm_head_lr_mult}")
        if not self.sync_bucket_mb > 0:
            raise ValueError(f"learner.sync_bucket_mb must be > 0, got {self.sync_bucket_mb}")
        if self.sync_mode not in SYNC_MODES:
            raise ValueError(f"learner.sync_mode must be one of {SYNC_MODES}, got {self.sync_mode!r}")
        if self.micro_batch_size < 1:
            raise ValueError("learner.micro_batch_size must be >= 1")
        if self.max_tokens_per_micro_batch is not None and self.max_tokens_per_micro_batch < 1:
            raise ValueError(f"learner.max_tokens_per_micro_batch must be >= 1 or null, "
                             f"got {self.max_tokens_per_micro_batch}")
        for key, allowed in (("offload_params", OFFLOAD_MODELS), ("offload_optimizer", ("policy", "rm"))):
            names = list(getattr(self, key))
            bad = [n for n in names if n not in allowed]
            if bad:
                hint = " (the reference has no optimizer)" if "reference" in bad and key == "offload_optimizer" else ""
                raise ValueError(f"learner.{key} items must be among {allowed}, got {bad}{hint}")
            if len(set(names)) != len(names):
                raise ValueError(f"learner.{key} lists a model twice: {names}")
        # DeepSpeed offloads parameters under ZeRO-3 only, optimizer state under ZeRO 1-3.
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"learner.offload_params needs learner.zero_stage 3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("learner.offload_optimizer needs learner.zero_stage 1, 2 or 3, got 0")

    @property
    def sync_shards(self) -> bool:
        """Every rank broadcasts its own partitions (sync_mode shards; colocated never does)."""
        return self.sync_mode == "shards" and not self.colocate

    @property
    def sync_groups(self) -> int:
        """Weight-sync groups: one per rank in sync_mode shards, else one (rank 0's broadcast,
        or the colocated group of every rank)."""
        return self.world_size if self.sync_shards else 1
