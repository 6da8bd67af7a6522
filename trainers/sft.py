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
        loss = label_weighted_loss(tokenizer, scale, weights) if weights else None
        return SFTTrainer(model=model_id, args=args, train_dataset=with_template(dataset, template),
                          processing_class=tokenizer, peft_config=peft, compute_loss_func=loss)

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


def label_weighted_loss(tokenizer, scale, weights: dict[int, float]):
    """Cross-entropy over the completion tokens with the grade label token (the first one: answers are label first)
    weighted by its class weight; every other token weighs 1. A `compute_loss_func` for transformers' Trainer."""
    import torch

    from toolkit.core.models import grade_token_ids

    ids = dict(zip([g.value for g in scale.grades], grade_token_ids(tokenizer, scale.labels)))
    table = torch.ones(max(len(tokenizer), max(ids.values()) + 1))
    for g, w in weights.items():
        table[ids[g]] = w

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits[:, :-1, :].float()
        target = labels[:, 1:].to(logits.device)
        mask = target != -100
        safe = target.clamp_min(0)
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), safe, reduction="none")
        first = mask & (mask.long().cumsum(dim=1) == 1)  # the first completion token of each row: its grade label
        w = torch.where(first, table.to(logits.device)[safe], torch.ones_like(ce))
        n = mask.sum() if num_items_in_batch is None else num_items_in_batch
        return (ce * w * mask).sum() / torch.as_tensor(n, device=ce.device).clamp(min=1)

    return loss
