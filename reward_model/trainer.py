"""RMTrainer: the token RM's part of a learner rank's step (docs/algorithm.md step 5).

The RM's DeepSpeed engine belongs to the rank (`learner.worker.LearnerWorker`, which checkpoints
it); this class owns what is done with it: the scores the policy's token weights come from, the
two update paths (the paper's passes over the kept pairs; a plan of mini-batches over a replay
buffer or all samples), the plain BCE after the update and the instruments read before it.
Every method that runs the engine is COLLECTIVE (ZeRO-3): all ranks call it with equally many
micro-batches.
"""
from __future__ import annotations

from typing import Sequence

import torch

from learner.batch import Batch, GlobalCounts, RMPlan, TrainSample, add_sums, batch_rows, collate, keep_graph
from learner.config import AlgoConfig
from learner.deepspeed_config import grad_norm
from reward_model.instruments import RMStats
from reward_model.loss import rm_accuracy, score_columns, smoothed, token_rm_loss


class RMTrainer:
    def __init__(self, engine, algo: AlgoConfig, pad_id: int, device: torch.device, world_size: int,
                 micro_batch_size: int):
        self.engine, self.algo, self.pad_id, self.device = engine, algo, pad_id, device
        self.world_size, self.micro_batch_size = world_size, micro_batch_size

    def step(self, batches: Sequence[Batch], micro_batches: Sequence[Sequence[TrainSample]],
             counts: GlobalCounts, rm_plan: RMPlan | None, fit_bce_due: bool,
             sums: dict[str, float]) -> list[torch.Tensor | None]:
        """This step's RM updates; returns the per-token scores of `batches` from the RM as it
        was before them (the policy's token weights). Without `rm_plan` the RM makes
        `algo.rm_epochs` passes over the policy's kept pairs (the first pass's forward gives the
        scores); with it (`algo.rm_own_data`) the scores come from a forward without gradient,
        then the RM takes one optimiser step per mini-batch of the plan.
        `reward_model/fit_bce` (when `fit_bce_due`): the BCE on the step's own RM samples after
        the updates."""
        sums["reward_model/lr"] = self.engine.get_lr()[0] / self.world_size
        if rm_plan is None:
            scores = self._train_on_pairs(batches, counts, sums)
        else:
            with torch.no_grad():
                scores = [self.scores(b) for b in batches]
            for b, s in zip(batches, scores):
                add_sums(sums, {"reward_model/correct": rm_accuracy(s, b.mask, b.labels) * batch_rows(b)})
            self._train_on_plan(rm_plan, sums)
        sums["reward_model/grad_norm"] = grad_norm(self.engine) / self.world_size
        if fit_bce_due:  # an RM forward more: on the held-out instruments' steps only
            fresh = batches if rm_plan is None else [self._collate(mb) for mb in rm_plan.fresh]
            total = float(counts.n_seqs) if rm_plan is None else rm_plan.fresh_total
            sums["reward_model/fit_bce"] = self._bce(fresh, total)
        sums.update({k: v / self.world_size for k, v in self._instruments(batches, micro_batches, scores, counts).items()})
        return scores

    def scores(self, b: Batch) -> torch.Tensor:
        """The RM's per-token scores of a batch in the loss layout (the columns of algo.rm_score)."""
        return score_columns(self.engine(b.input_ids, b.attention_mask), self.algo.rm_score)

    def objective(self, scores: torch.Tensor, b: Batch, n_seqs: float | int,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The loss the RM trains on, on both update paths: `token_rm_loss` with the algo's
        label smoothing and token-score penalty (`reward_model/fit_bce` and the held-out
        instruments use the plain BCE instead)."""
        return token_rm_loss(scores, b.mask, smoothed(b.labels.float(), self.algo.rm_label_smoothing),
                             n_seqs=n_seqs, weights=weights, token_l2=self.algo.rm_token_l2)

    def _backward(self, loss: torch.Tensor, scores: torch.Tensor, b: Batch) -> None:
        self.engine.backward(keep_graph(loss, scores, b) * self.world_size, scale_wrt_gas=False)

    def _update(self, batches: Sequence[Batch], total: float | int, weighted: bool = True,
                before: list[torch.Tensor] | None = None, sums: dict[str, float] | None = None) -> float:
        """One optimiser step over this rank's micro-batches of one global batch whose sequences
        (`weighted`: whose weights) sum to `total`; returns this rank's share of its loss. With
        `before`, each micro-batch's scores (the RM as it was before this step) are appended to it
        and its loss and accuracy summed into `sums`."""
        loss_sum = 0.0
        for i, b in enumerate(batches):
            self.engine.set_gradient_accumulation_boundary(i == len(batches) - 1)
            scores = self.scores(b)
            loss, m = self.objective(scores, b, total, b.rm_weights if weighted else None)
            self._backward(loss, scores, b)
            loss_sum += float(loss.detach())
            if before is not None:
                before.append(scores.detach())
                add_sums(sums, {"reward_model/loss": loss.detach(), "reward_model/correct": m["accuracy"] * batch_rows(b)})
        self.engine.step()
        return loss_sum

    def _train_on_pairs(self, batches: Sequence[Batch], counts: GlobalCounts,
                        sums: dict[str, float]) -> list[torch.Tensor]:
        """The paper's RM update: `algo.rm_epochs` passes over the kept pairs, one optimiser step
        each; the scores of the first pass's forward (the RM before this step) are returned."""
        scores_before: list[torch.Tensor] = []
        for epoch in range(self.algo.rm_epochs):
            self._update(batches, counts.n_seqs, weighted=False, before=scores_before if epoch == 0 else None,
                         sums=sums)
        return scores_before

    def _train_on_plan(self, plan: RMPlan, sums: dict[str, float]) -> None:
        """One optimiser step per mini-batch of `plan` (every rank runs equally many
        micro-batches in each); `reward_model/loss` is the mean of their losses."""
        losses = [self._update([self._collate(mb) for mb in mbs], total)
                  for mbs, total in zip(plan.minibatches, plan.totals)]
        sums["reward_model/loss"] = sum(losses) / max(1, len(losses))
        sums["reward_model/updates"] = len(losses) / self.world_size

    def _bce(self, batches: Sequence[Batch], total: float) -> float:
        """This rank's share of the weighted BCE of `batches` (a global batch of weight
        `total`) under the RM as it is now: `reward_model/fit_bce` after the step's updates."""
        out = 0.0
        with torch.no_grad():
            for b in batches:
                loss, _ = token_rm_loss(self.scores(b), b.mask, b.labels.float(), n_seqs=total,
                                        weights=b.rm_weights)
                out += 0.0 if b.dummy else float(loss)
        return out

    def _instruments(self, batches: Sequence[Batch], micro_batches: Sequence[Sequence[TrainSample]],
                     scores: Sequence[torch.Tensor | None], counts: GlobalCounts) -> dict[str, float]:
        """Whether the RM is learning, from its scores before this step's update, over the
        whole batch (gathered from every rank; each rank returns the same values):
        `reward_model/pair_accuracy` (a query's positive scored above its negative),
        `reward_model/score_abs_mean` (mean |wbar_n|), `reward_model/w_pos_on_neg_mean` and
        `reward_model/w_neg_on_pos_mean` (the weights of the other class: w+ on negative tokens,
        w- on positive ones), `reward_model/prefix_score/<pos|neg>/q<k>` (mean wbar_t over the
        tokens in quarter k of their response); see `reward_model.instruments`."""
        stats = RMStats()
        for b, mb, s in zip(batches, micro_batches, scores):
            if not b.dummy:
                stats = stats + RMStats.of(s, b.mask, b.labels.float(), [hash(x.prompt_ids) for x in mb],
                                           self.algo.weight_rule)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, stats)
            stats = sum(parts[1:], parts[0])
        return stats.metrics(counts.n_pos_tokens, counts.n_neg_tokens)

    def position_scores(self, samples: Sequence[TrainSample]) -> list[list[float]]:
        """The RM's raw score at the last prompt position and at each response token's own
        position (n + 1 values for n response tokens), per sample: what the held-out
        instruments read (`reward_model.instruments`). An empty list runs one placeholder
        forward (ranks with nothing to score still join the collective)."""
        out = []
        with torch.no_grad():
            for i in range(0, max(1, len(samples)), self.micro_batch_size):
                chunk = samples[i:i + self.micro_batch_size]
                b = self._collate(chunk)
                raw = self.engine(b.input_ids, b.attention_mask).float().cpu()
                for row, s in zip(raw, chunk):
                    p, n = len(s.prompt_ids), len(s.response_ids)
                    out.append(row[p - 1:p + n].tolist())
        return out

    def token_weights(self, samples: Sequence[TrainSample]) -> list[tuple[list[float], list[float]]]:
        """(w+, w-) along each sample's response tokens under the current RM (for plots)."""
        b = self._collate(samples)
        with torch.no_grad():
            scores = self.scores(b)
        w_pos, w_neg = self.algo.weight_rule(scores, b.mask)
        m = b.mask.bool()
        return [(w_pos[i][m[i]].tolist(), w_neg[i][m[i]].tolist()) for i in range(len(samples))]

    def _collate(self, samples: Sequence[TrainSample]) -> Batch:
        return collate(samples, self.pad_id, self.device)
