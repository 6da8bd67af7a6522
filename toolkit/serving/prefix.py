"""First-token grade scoring that computes a shared prompt prefix once (transformers backend).

The items of one search request share the start of their prompts: the system message, the
start of the user turn and the query. `PrefixScorer` tokenizes every full prompt, takes the
longest common *token* prefix of a group (so the result never depends on where the text
boundary falls in the tokenizer), runs that prefix once, and scores the group's suffixes in
batches on top of a copy of its KV cache. Suffixes are left-padded between the prefix and the
text, with explicit position ids, so the last column is every row's label position and
`logits_to_keep=1` applies. The probabilities equal full-prompt scoring (`score_grades`) up to
float rounding (~1e-6 in float32); `check` measures the gap on sample prompts beside the
rounding that batching alone causes, and the service refuses the fast path when the gap is
clearly larger. (In bfloat16, full-prompt scores themselves move by a few 1e-2 with the batch
composition; shared-prefix scores stay as close to float32 ones as full-prompt scores do.)

Grouping: prompts with the same key (the query) form a group; prompts alone under their key
are scored together, sharing whatever prefix they have in common (the system prompt).
"""

from __future__ import annotations

import copy
import logging

log = logging.getLogger(__name__)

MIN_PREFIX = 8  # shorter common prefixes are not worth a separate forward pass


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every sequence at least one token of its own."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for i in range(max(n, 0)):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return max(n, 0)


def plan_groups(keys: list) -> list[list[int]]:
    """Indices grouped by key (keys seen once are pooled into one group), in first-seen order."""
    by_key: dict = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    groups = [g for g in by_key.values() if len(g) > 1]
    singles = [g[0] for g in by_key.values() if len(g) == 1]
    if singles:
        groups.append(singles)
    return groups


class PrefixScorer:
    """Shared-prefix first-token scoring with a loaded `TransformersBackend`."""

    def __init__(self, backend, labels: list[str], batch_size: int = 32):
        from toolkit.core.models import grade_token_ids

        self.backend = backend
        self.torch = backend.torch
        self.model = backend.model
        self.tokenizer = backend.tokenizer
        self.labels = list(labels)
        self.label_ids = grade_token_ids(self.tokenizer, self.labels)
        self.batch_size = max(1, int(batch_size))
        self.pad_id = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                       else self.tokenizer.eos_token_id)

    def encode(self, prompts: list) -> list[list[int]]:
        texts = [self.backend.render(m) for m in prompts]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def score(self, prompts: list, keys: list | None = None) -> list[list[float]]:
        """Grade probabilities per prompt (renormalised over the grade labels, scale order)."""
        if not prompts:
            return []
        ids = self.encode(prompts)
        keys = keys if keys is not None else [None] * len(prompts)
        out: list = [None] * len(prompts)
        for group in plan_groups(keys):
            for i, p in zip(group, self._score_group([ids[i] for i in group])):
                out[i] = p
        return out

    def _score_group(self, seqs: list[list[int]]) -> list[list[float]]:
        torch = self.torch
        plen = common_prefix(seqs) if len(seqs) > 1 else 0
        if plen < MIN_PREFIX:
            plen = 0
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths together: little padding
        out: list = [None] * len(seqs)
        with torch.inference_mode():
            cache = None
            if plen:
                prefix = torch.tensor([seqs[0][:plen]], device=self.backend.device)
                cache = self.model(input_ids=prefix, use_cache=True).past_key_values
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                probs = self._forward([seqs[i][plen:] for i in idx], plen, cache)
                for j, i in enumerate(idx):
                    out[i] = probs[j]
        return out

    def _forward(self, suffixes: list[list[int]], plen: int, cache) -> list[list[float]]:
        torch = self.torch
        dev = self.backend.device
        n, width = len(suffixes), max(len(s) for s in suffixes)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, plen + width), dtype=torch.long)
        mask[:, :plen] = 1
        positions = torch.full((n, width), plen, dtype=torch.long)
        for r, s in enumerate(suffixes):
            pad = width - len(s)
            input_ids[r, pad:] = torch.tensor(s, dtype=torch.long)
            mask[r, plen + pad :] = 1
            positions[r, pad:] = torch.arange(plen, plen + len(s))
        kwargs = dict(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                      logits_to_keep=1)
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(n)
            kwargs.update(past_key_values=past, use_cache=True)
        else:
            kwargs.update(use_cache=False)
        logits = self.model(**kwargs).logits[:, -1, :]
        return torch.softmax(logits[:, self.label_ids].float(), dim=-1).tolist()

    def check(self, prompts: list, keys: list | None = None) -> tuple[float, float]:
        """(gap, noise) on sample prompts: the largest difference between this scorer and full-prompt
        `score_grades`, and between two full-prompt runs that only differ in batching (one prompt
        at a time vs all together) -- the rounding any batch composition brings (large in bf16)."""
        fast = self.score(prompts, keys)
        full = self.backend.score_grades(prompts, self.labels)
        alone = [self.backend.score_grades([p], self.labels)[0] for p in prompts]
        return _max_gap(fast, full), _max_gap(alone, full)


def _max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
