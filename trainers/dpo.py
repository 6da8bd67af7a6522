"""`toolkit train dpo`: TaoSR1 stage 2 — DPO on make-prefs' preference pairs, from the SFT model.

TRL's DPOTrainer on the conversational prompt/chosen/rejected format. The reference model is the
starting policy (`ref_model=None`: TRL loads a frozen copy of `model`, or disables the LoRA adapter),
so pass the SFT checkpoint as the model. `nll_weight` > 0 adds TRL's `sft` loss on the chosen
answer (loss_type [sigmoid, sft] with loss_weights [1, nll_weight]), the usual guard against the
chosen answer's likelihood falling during DPO.
"""

from __future__ import annotations

from toolkit.core.stagefolder import writes_output
from toolkit.core.stagefolder import scale_of
from trainers.config import DPOTrainConfig
from trainers.data import with_template, data_file, dpo_rows, load_rows, to_dataset
from trainers.run import TrainResult, train


@writes_output(lambda cfg: cfg.stage)  # the claim, and a data folder given as hf://datasets/...
def train_dpo(cfg: DPOTrainConfig, dev=None) -> TrainResult:
    """Preference-tune `cfg.model` (the SFT checkpoint) on `cfg.data`; write the checkpoint folder `cfg.out`."""
    from trl import DPOTrainer

    path = data_file(cfg.data, "dpo")
    scale = scale_of(cfg.data)
    rows, counts = dpo_rows(load_rows(path, "dpo", cfg.limit), scale, str(path))
    dataset = to_dataset(rows)

    def build(model_id, args, tokenizer, peft, template=None):
        return DPOTrainer(model=model_id, ref_model=None, args=args, train_dataset=with_template(dataset, template),
                          processing_class=tokenizer, peft_config=peft)

    return train(cfg, build, path, scale, counts, dev)
