"""`toolkit train sft`: TaoSR1 stage 1 — supervised fine-tuning on gen-cot's label-first CoT data.

TRL's SFTTrainer on the conversational prompt-completion format: `prompt` = system + user
messages, `completion` = the assistant answer (`4\\nReason: ...`); the loss covers the completion
tokens only (`completion_only_loss`, TRL's default for this format). `label_only` trains on the
grade label alone (the paper's "SFT label-only" ablation).
"""

from __future__ import annotations

from toolkit.core.stagefolder import writes_output
from toolkit.core.stagefolder import scale_of
from trainers.config import SFTTrainConfig
from trainers.data import with_template, data_file, load_rows, sft_rows, to_dataset
from trainers.run import TrainResult, train


@writes_output(lambda cfg: cfg.stage)  # the claim, and a data folder given as hf://datasets/...
def train_sft(cfg: SFTTrainConfig, dev=None) -> TrainResult:
    """Fine-tune `cfg.model` on the SFT rows of `cfg.data`; write the checkpoint folder `cfg.out`."""
    from trl import SFTTrainer

    path = data_file(cfg.data, "sft")
    scale = scale_of(cfg.data)
    df, regraded = load_rows(path, "sft", cfg.limit), {}
    if cfg.gold:  # a review round corrected grades: rationales for an old grade leave, excluded pairs leave
        from toolkit.core.gold import regrade_cot

        df, regraded = regrade_cot(df, cfg.gold, cfg.label_only)
    rows, counts = sft_rows(df, scale, cfg.label_only, str(path))
    counts.update(regraded)
    dataset = to_dataset(rows)
    weights = class_weights(df, scale, cfg.class_weights, str(path))
    if weights:
        counts["class_weights"] = {str(g): round(w, 4) for g, w in weights.items()}

    def build(model_id, args, tokenizer, peft, template=None):
        kw = dict(model=model_id, args=args, train_dataset=with_template(dataset, template),
                  processing_class=tokenizer, peft_config=peft)
        if not weights:
            return SFTTrainer(**kw)
        return weighted_trainer(SFTTrainer)(**kw, label_weights=label_weight_table(tokenizer, scale, weights))

    return train(cfg, build, path, scale, counts, dev)


def class_weights(df, scale, mode: str, where: str) -> dict[int, float]:
    """Per grade: N / (K * n_grade) over the training rows (`inverse`), so the weights average 1 over the rows; {}
    for `none`."""
    if mode == "none":
        return {}
    from toolkit.core import columns as C
    from toolkit.core.errors import UserError

    if C.GRADE not in df.columns:
        raise UserError(f"{where}: --class-weights needs the `{C.GRADE}` column; found: {', '.join(df.columns)}")
    counts = {int(g): int(n) for g, n in df.group_by(C.GRADE).len().iter_rows()}
    total, k = sum(counts.values()), len(counts)
    return {g: total / (k * n) for g, n in sorted(counts.items()) if g in scale.values}


def label_weight_table(tokenizer, scale, weights: dict[int, float]):
    """Per token id: the class weight of the grade whose label it is; 1 for every other token."""
    import torch

    from toolkit.core.models import grade_token_ids

    ids = dict(zip([g.value for g in scale.grades], grade_token_ids(tokenizer, scale.labels)))
    table = torch.ones(max(len(tokenizer), max(ids.values()) + 1))
    for g, w in weights.items():
        table[ids[g]] = w
    return table


def weigh_label_tokens(log_probs, labels, mask, table):
    """Per-token log-probabilities (TRL's fused LM head: aligned with `labels[:, 1:]`, zero where `mask` is off) with
    each row's grade label token (its first completion token: answers are label first) multiplied by the label's
    class weight; every other token keeps weight 1."""
    import torch

    target = labels[:, 1:].to(log_probs.device)
    first = mask & (mask.long().cumsum(dim=1) == 1)
    w = torch.where(first, table.to(log_probs.device)[target.clamp_min(0)], torch.ones_like(log_probs))
    return log_probs * w


def weighted_trainer(base):
    """`base` (TRL's SFTTrainer) whose loss weighs each row's grade label token by its class weight.

    The weighting rides on TRL's own loss path (one forward through the fused LM head, no (batch, seq, vocab)
    logits): while compute_loss runs, a forward hook scales the label tokens' log-probabilities before TRL sums
    them. TRL's `compute_loss_func` did the same with full logits and an extra forward pass each step, and is
    deprecated."""

    class WeightedSFTTrainer(base):
        def __init__(self, *args, label_weights, **kwargs):
            super().__init__(*args, **kwargs)
            self.label_weights = label_weights
            if getattr(self.args, "loss_type", "nll") != "nll":
                raise ValueError(f"class weights need loss_type nll; got {self.args.loss_type!r}")

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            table = self.label_weights

            def hook(module, args, kwargs, output):
                if kwargs.get("fused_lm_head") and getattr(output, "log_probs", None) is not None:
                    output.log_probs = weigh_label_tokens(output.log_probs, kwargs["labels"], output.label_mask,
                                                          table)
                return output

            handle = model.register_forward_hook(hook, with_kwargs=True)
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                handle.remove()

    return WeightedSFTTrainer
