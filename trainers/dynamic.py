"""Dynamic sampling in GRPO (TaoSR1 stage 3 / DAPO): train only on groups whose rewards have a spread.

TaoSR1 filters by difficulty *during* GRPO, on the current policy's own groups. A group whose G answers
all get the same reward has zero advantage and gives no gradient (in the recorded CPU run every group of
4 did, so GRPO equalled DPO). TRL has no dynamic sampling; this subclass of TRL's GRPOTrainer adds it by
overriding one method, `_generate_and_score_completions`:

1. TRL generates and scores the generation batch as usual;
2. groups are kept when the policy's pass rate is inside the window `0 < n_correct < gamma * G`
   (n_correct: answers with grade_match = 1; without a grade_match reward: when the total reward
   varies), and dropped as `all_right` / `all_wrong` / `no_spread` otherwise;
3. while fewer groups than the batch holds are kept, more prompts are drawn from the pool (the
   training set: label-difficulty's offline GRPO set), round-robin over the gold grades so refills
   stay class-balanced, and generated and scored the same way, up to `max_refills` extra rounds
   (oversampling at most (1 + max_refills) x);
4. the kept groups make the batch (padded to common lengths); if the batch is still short, dropped
   groups fill it (their advantage is zero: they add no gradient) and the effective batch is logged;
5. after `patience` generation batches in a row with no kept group at all, training stops with a
   message (the pool has run dry for this policy).

Per generation batch the counters go to TRL's logs (`dynamic/...`) and, summed, into the run's
manifest: groups generated / kept / dropped all-right / all-wrong / no-spread, refill rounds, and the
effective batch. One process only (with several, each would refill its own slice; it falls back to
TRL's plain sampling then, with a warning).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

log = logging.getLogger(__name__)

PROMPT_SIDE = ("prompt_ids", "prompt_mask")  # left-padded; every other 2-D tensor is completion-side, right-padded


def _merge(parts: list[dict], pad_id: int):
    """Concatenate the row-wise tensors of several TRL generation outputs, padding to common lengths."""
    import torch

    out = {}
    for key, first in parts[0].items():
        if not torch.is_tensor(first) or first.dim() == 0:
            continue
        vals = [p[key] for p in parts]
        if first.dim() == 1:
            out[key] = torch.cat(vals)
            continue
        width = max(v.size(1) for v in vals)
        fill = pad_id if key in ("prompt_ids", "completion_ids") else 0
        padded = []
        for v in vals:
            extra = width - v.size(1)
            if extra:
                pad = v.new_full((v.size(0), extra), fill)
                v = torch.cat([pad, v], dim=1) if key in PROMPT_SIDE else torch.cat([v, pad], dim=1)
            padded.append(v)
        out[key] = torch.cat(padded)
    return out


def _rows(out: dict, idx) -> dict:
    import torch

    index = torch.as_tensor(idx, dtype=torch.long)
    return {k: (v[index.to(v.device)] if torch.is_tensor(v) and v.dim() >= 1 else v) for k, v in out.items()}


def make_trainer_class():
    from trl import GRPOTrainer

    class DynamicSamplingGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer with online dynamic sampling (see the module docstring)."""

        def __init__(self, *args, gamma: float = 1.0, max_refills: int = 4, patience: int = 3, seed: int = 0,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.ds_gamma, self.ds_max_refills, self.ds_patience = float(gamma), int(max_refills), int(patience)
            self.dynamic_counts = defaultdict(int, {k: 0 for k in (
                "generation_batches", "groups_generated", "groups_kept", "dropped_all_right", "dropped_all_wrong",
                "dropped_no_spread", "refill_rounds", "refill_prompts", "effective_groups", "batch_groups")})
            self.ds_stop_reason = None
            self._ds_rng = random.Random(seed)
            self._ds_dry = 0
            self._ds_queues: dict = {}
            self._ds_order: list = []
            self._last_rewards = None
            self.ds_active = self.accelerator.num_processes == 1
            if not self.ds_active:
                log.warning("dynamic sampling runs on one process only; with %d, GRPO samples as TRL does",
                            self.accelerator.num_processes)

        # -- what the pool gives -------------------------------------------------------
        def _refill(self, groups: int) -> list[dict]:
            """`groups` prompts from the pool, round-robin over the gold grades, each repeated G times."""
            ds = self.train_dataset
            if not self._ds_queues:
                key = "gold_label" if "gold_label" in ds.column_names else None
                by: dict = defaultdict(list)
                for i in range(len(ds)):
                    by[ds[i][key] if key else None].append(i)
                self._ds_order = sorted(by, key=str)
                self._ds_queues = {k: [] for k in self._ds_order}
                self._ds_all = by
            rows = []
            for n in range(groups):
                grade = self._ds_order[(self.dynamic_counts["refill_prompts"] + n) % len(self._ds_order)]
                q = self._ds_queues[grade]
                if not q:  # a fresh shuffled pass over this grade's prompts
                    q.extend(self._ds_rng.sample(self._ds_all[grade], len(self._ds_all[grade])))
                rows += [dict(ds[q.pop()])] * self.num_generations
            self.dynamic_counts["refill_prompts"] += groups
            return rows

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards.detach()
            return rewards

        def _classify(self) -> list[str]:
            """Per group of the last scored batch: keep | all_right | all_wrong | no_spread."""
            import torch

            g = self.num_generations
            r = self._last_rewards
            names = list(self.reward_func_names)
            total = (torch.nan_to_num(r) * self.reward_weights.to(r.device).unsqueeze(0)).sum(dim=1).view(-1, g)
            spread = (total.max(dim=1).values - total.min(dim=1).values) > 1e-6
            out = []
            if "grade_match" in names:
                right = (r[:, names.index("grade_match")] == 1).view(-1, g).sum(dim=1)
                for n, s in zip(right.tolist(), spread.tolist()):
                    out.append("all_wrong" if n == 0 else "all_right" if n >= self.ds_gamma * g - 1e-9
                               else "keep" if s else "no_spread")
            else:
                out = ["keep" if s else "no_spread" for s in spread.tolist()]
            return out

        # -- the batch -----------------------------------------------------------------------
        def _generate_and_score_completions(self, inputs):
            if not self.ds_active or not self.model.training:
                return super()._generate_and_score_completions(inputs)
            g = self.num_generations
            want = len(inputs) // g
            kept, spare, batch, refills = [], [], inputs, 0
            c = self.dynamic_counts
            while True:
                out = super()._generate_and_score_completions(batch)
                kinds = self._classify()
                c["groups_generated"] += len(kinds)
                for i, kind in enumerate(kinds):
                    c["groups_kept" if kind == "keep" else f"dropped_{kind}"] += 1
                    rows = list(range(i * g, (i + 1) * g))
                    (kept if kind == "keep" else spare).append(_rows(out, rows))
                if len(kept) >= want or refills >= self.ds_max_refills:
                    break
                refills += 1
                batch = self._refill(want - len(kept))
            c["refill_rounds"] += refills
            effective = min(len(kept), want)
            c["effective_groups"] += effective
            c["batch_groups"] += want
            c["generation_batches"] += 1
            chosen = (kept + spare)[:want]
            merged = _merge(chosen, self.processing_class.pad_token_id or 0)
            mask = (merged["completion_mask"] if "tool_mask" not in merged
                    else merged["completion_mask"] * merged["tool_mask"])
            merged["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
            m = self._metrics["train"]
            m["dynamic/effective_batch_fraction"].append(effective / want)
            m["dynamic/refill_rounds"].append(float(refills))
            m["dynamic/groups_kept"].append(float(len(kept)))
            if effective == 0:
                self._ds_dry += 1
                if self._ds_dry >= self.ds_patience:
                    self.ds_stop_reason = (f"dynamic sampling: no group with a reward spread in {self._ds_dry} "
                                           f"generation batches in a row ({c['groups_generated']} groups generated so "
                                           "far); the pool has run dry for this policy")
                    log.warning("%s; training stops here", self.ds_stop_reason)
                    self.control.should_training_stop = True
            else:
                self._ds_dry = 0
            return merged

    return DynamicSamplingGRPOTrainer
