"""`toolkit train sft`: TaoSR1 stage 1 — supervised fine-tuning on gen-cot's label-first CoT data.

TRL's SFTTrainer on the conversational prompt-completion format: `prompt` = system + user
messages, `completion` = the assistant answer (`4\\nReason: ...`); the loss covers the completion
tokens only (`completion_only_loss`, TRL's default for this format). `label_only` trains on the
grade label alone (the paper's "SFT label-only" ablation).
"""

from __future__ import annotations

from toolkit.io import writes_output
from toolkit.stats import scale_of
from trainers.config import SFTTrainConfig
from trainers.data import data_file, load_rows, sft_rows, to_dataset
from trainers.run import TrainResult, train


@writes_output(lambda cfg: cfg.stage)  # the claim, and a data folder given as hf://datasets/...
def train_sft(cfg: SFTTrainConfig) -> TrainResult:
    """Fine-tune `cfg.model` on the SFT rows of `cfg.data`; write the checkpoint folder `cfg.out`."""
    from trl import SFTTrainer

    path = data_file(cfg.data, "sft")
    scale = scale_of(cfg.data)
    df, regraded = load_rows(path, "sft", cfg.limit), {}
    if cfg.gold:  # a review round corrected grades: rationales for an old grade leave, excluded pairs leave
        from toolkit.gold import regrade_cot

        df, regraded = regrade_cot(df, cfg.gold, cfg.label_only)
    rows, counts = sft_rows(df, scale, cfg.label_only, str(path))
    counts.update(regraded)
    dataset = to_dataset(rows)

    def build(model_id, args, tokenizer, peft):
        return SFTTrainer(model=model_id, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft)

    return train(cfg, build, path, scale, counts)
