"""`toolkit train grpo`: TaoSR1 stage 3 — GRPO on label-difficulty's filtered, class-balanced set.

TRL's GRPOTrainer with our reward functions (trainers.rewards: `grade_match` by default, plus
`format` and `distance` as options; weights via trl.reward_weights). Group size, temperature,
KL (`beta`), clip (`epsilon`) and `loss_type` are TRL fields (defaults: trainers.config). Rollouts
are generated with transformers inside the trainer (CPU or GPU); `use_vllm` switches to vLLM in
colocate mode on GPU machines. TRL has no dynamic sampling: the all-right / all-wrong groups were
dropped offline by `toolkit label-difficulty`.
"""

from __future__ import annotations

from toolkit.core.stagefolder import writes_output
from toolkit.core.stagefolder import scale_of
from trainers.config import GRPOTrainConfig
from trainers.data import data_file, grpo_rows, load_rows, to_dataset
from trainers.rewards import make_rewards
from trainers.run import TrainResult, train


@writes_output(lambda cfg: cfg.stage)  # the claim, and a data folder given as hf://datasets/...
def train_grpo(cfg: GRPOTrainConfig, dev=None) -> TrainResult:
    """Reinforce `cfg.model` (the DPO or SFT checkpoint) on `cfg.data`; write the checkpoint folder `cfg.out`."""
    from trl import GRPOTrainer

    path = data_file(cfg.data, "grpo")
    scale = scale_of(cfg.data)
    rows, counts = grpo_rows(load_rows(path, "grpo", cfg.limit), scale, str(path))
    dataset = to_dataset(rows)
    rewards = make_rewards(cfg.rewards, scale, cfg.order)

    def build(model_id, args, tokenizer, peft, template=None):
        if cfg.dynamic_sampling:
            from trainers.dynamic import make_trainer_class

            return make_trainer_class()(model=model_id, reward_funcs=rewards, args=args, train_dataset=dataset,
                                        processing_class=tokenizer, peft_config=peft, gamma=cfg.dynamic_gamma,
                                        max_refills=cfg.max_refills, patience=cfg.dynamic_patience, seed=cfg.seed)
        return GRPOTrainer(model=model_id, reward_funcs=rewards, args=args, train_dataset=dataset,
                           processing_class=tokenizer, peft_config=peft)

    return train(cfg, build, path, scale, counts, dev)
