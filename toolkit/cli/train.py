"""Training commands: `toolkit train sft|dpo|grpo|baseline` (thin wrappers over TRL and sentence-transformers)."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.cli.options import config_from, options_from
from trainers.config import BaselineConfig, DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig, TrainConfig

TRL_HELP = (
    "A field of the trainer's own config (TRL's SFTConfig/DPOConfig/GRPOConfig; CrossEncoderTrainingArguments "
    "for the baseline) as KEY=VALUE, VALUE in YAML "
    "(e.g. --trl lr_scheduler_type=cosine --trl warmup_ratio=0.1 --trl 'report_to=[tensorboard]'); "
    "repeatable. In a --config file: a `trl:` mapping."
)


class TrlField(click.ParamType):
    """`KEY=VALUE` on the command line, or a mapping from the `trl:` key of a --config file."""

    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and "=" in value:
            import yaml

            key, raw = value.split("=", 1)
            try:
                return {key.strip(): yaml.safe_load(raw)}
            except yaml.YAMLError:
                return {key.strip(): raw}
        self.fail(f"{value!r} is not KEY=VALUE (e.g. --trl warmup_steps=0.1); in a config file use a `trl:` mapping",
                  param, ctx)


def trl_fields(ctx: click.Context, given: tuple, flags: dict) -> dict:
    """config-file `trl:` < --trl KEY=VALUE < named flags (those given)."""
    merged: dict = {}
    source = ctx.get_parameter_source("trl")
    if source == click.core.ParameterSource.COMMANDLINE:
        for d in (ctx.default_map or {}).get("trl") or []:
            merged.update(d)
    for d in given or ():
        merged.update(d)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged


def _trl_flag(*decls, **kw):
    """CLI-only: a named field of the trainer's own config (TRL's); it fills the `trl` mapping (see _pop_common)."""
    return click.option(*decls, **kw)


# CLI-only: fills the `trl` field (trl_fields)
TRL_OPTION = click.option("--trl", multiple=True, type=TrlField(), help=TRL_HELP)


def common_options(f):
    """Options every `toolkit train` command takes but the baseline."""
    opts = [
        config_option,
        click.argument("data", required=False, type=click.Path()),
        # data: the argument; trl: --trl; eval_rules_k: Python only
        options_from(TrainConfig, "out", "model", skip=("data", "trl", "eval_rules_k")),
        _trl_flag("--max-steps", type=int,
                  help="Stop after this many optimizer steps (TRL max_steps; overrides epochs)."),
        _trl_flag("--epochs", type=float, help="Training epochs (TRL num_train_epochs; default 1)."),
        _trl_flag("--learning-rate", type=float,
                  help="Peak learning rate (TRL learning_rate; default: sft 2e-5, dpo 1e-6, grpo 1e-6)."),
        _trl_flag("--batch-size", type=int,
                  help="Examples per device per step (TRL per_device_train_batch_size; default 8)."),
        _trl_flag("--grad-accum", type=int, help="Gradient accumulation steps (TRL gradient_accumulation_steps)."),
        _trl_flag("--bf16/--no-bf16", default=None,
                  help="bf16 mixed precision (default: on for GPUs and CPUs with native bf16)."),
        options_from(TrainConfig, "limit", "seed"),
        TRL_OPTION,
        options_from(TrainConfig, "force"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


# Evaluation while training (trainers.dev_eval).
eval_options = options_from(TrainConfig, "eval_pairs", "eval_split", "eval_index", "eval_every", "eval_limit",
                            "select_best", "early_stop")
template_option = options_from(TrainConfig, "template_options")
lora_options = options_from(TrainConfig, "lora", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "merge_lora",
                            "save_dtype")


def _pop_common(kw: dict) -> tuple[dict, dict]:
    """(our config fields, named TRL flags) from the shared options."""
    from toolkit.core.errors import UserError

    names = {"max_steps": "max_steps", "epochs": "num_train_epochs", "learning_rate": "learning_rate",
             "batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps", "bf16": "bf16"}
    flags = {trl: kw.pop(opt, None) for opt, trl in names.items()}  # the baseline has no --grad-accum / --bf16
    if not kw.get("data"):
        raise UserError("pass the input folder: `toolkit train STAGE DATA -o OUT` (see --help)")
    if not kw.get("out"):
        raise UserError("no output folder; pass -o/--out FOLDER")
    return kw, flags


def _run(config_cls, fn, kw: dict, extra_flags: dict | None = None) -> None:
    ctx = click.get_current_context()
    kw, flags = _pop_common(kw)
    trl = trl_fields(ctx, kw.pop("trl"), {**flags, **(extra_flags or {})})
    result = fn(config_from(config_cls, kw, data=kw.pop("data"), trl=trl))
    click.echo(result.summary())


@click.group()
def train():
    """Train relevance models: TaoSR1's SFT -> DPO -> GRPO chain (TRL) and a cross-encoder baseline.

    Each command reads a stage folder, trains with TRL's own trainer (so `accelerate launch`,
    DeepSpeed and FSDP work unchanged), and writes a checkpoint folder that the generation
    backends and `toolkit sample` load directly (LoRA merged), with config.yaml, manifest.json
    (inputs, base model, grade scale) and train_log.json (metrics per step).

    \b
    Scale out:
      accelerate launch --config_file trainers/configs/accelerate_multi_gpu.yaml -m toolkit train sft ...
    """


@train.command("sft")
@common_options
@template_option
@eval_options
@lora_options
@options_from(SFTTrainConfig, "label_only", "class_weights", "gold", "pairs_split", "pairs_index", "pairs_rules_k",
              "prompt_template")
@_trl_flag("--max-length", type=int, help="Longest tokenized example (TRL max_length; default 1024).")
def sft(max_length, **kw):
    """Supervised fine-tuning on `toolkit gen-cot` output (TaoSR1 stage 1).

    Reads DATA/sft.parquet (`prompt` messages, label-first `completion`, `grade`) and trains
    with TRL's SFTTrainer on the conversational prompt-completion format: loss on the
    assistant answer only. Grade labels must be single tokens of the model's tokenizer.

    \b
    Examples:
      toolkit train sft out/demo/cot -o out/demo/sft --max-steps 20
      toolkit train sft out/cot -o out/sft-label-only --label-only --lora
      toolkit train sft out/retrieved -o out/sft-label --label-only --class-weights inverse \\
          --pairs-index out/index --eval-pairs out/retrieved --eval-index out/index
      toolkit train sft --config trainers/configs/sft.yaml
    """
    from toolkit.training import train_sft

    _run(SFTTrainConfig, train_sft, kw, {"max_length": max_length})


@train.command("dpo")
@common_options
@template_option
@eval_options
@lora_options
@_trl_flag("--beta", type=float, help="DPO temperature β (TRL beta; default 0.1).")
@options_from(DPOTrainConfig, "nll_weight")
@_trl_flag("--max-length", type=int, help="Longest tokenized prompt + answer (TRL max_length; default 1024).")
def dpo(beta, max_length, **kw):
    """Preference tuning on `toolkit make-prefs` output, from the SFT model (TaoSR1 stage 2).

    Reads DATA/preferences.parquet (`prompt`, `chosen`, `rejected`) and trains with TRL's
    DPOTrainer. The reference model is the starting model (pass the SFT checkpoint as
    --model). --nll-weight w uses loss_type [sigmoid, sft] with loss_weights [1, w].

    \b
    Examples:
      toolkit train dpo out/demo/prefs --model out/demo/sft -o out/demo/dpo --max-steps 20
      toolkit train dpo out/prefs --model out/sft -o out/dpo --nll-weight 0.2 --beta 0.1
    """
    from toolkit.training import train_dpo

    _run(DPOTrainConfig, train_dpo, kw, {"beta": beta, "max_length": max_length})


@train.command("grpo")
@common_options
@template_option
@eval_options
@lora_options
@options_from(GRPOTrainConfig, "rewards", "order", "dynamic_sampling", "dynamic_gamma", "max_refills",
              "dynamic_patience", skip=("use_vllm",))
@_trl_flag("--num-generations", type=int,
           help="Group size G (TRL num_generations; default 8, the paper's team used 16).")
@_trl_flag("--temperature", type=float, help="Sampling temperature of the rollouts (default 0.99).")
@_trl_flag("--beta", type=float, help="KL coefficient (default 0.02).")
@_trl_flag("--epsilon", type=float, help="Clip range (default 0.2).")
@_trl_flag("--loss-type", help="TRL GRPO loss_type: grpo, dr_grpo, dapo (TRL's default), bnpo, ...")
@_trl_flag("--max-completion-length", type=int, help="Token budget of a rollout (default 128).")
@options_from(GRPOTrainConfig, "use_vllm")
def grpo(num_generations, temperature, beta, epsilon, loss_type, max_completion_length, **kw):
    """Reinforcement learning with GRPO on `toolkit label-difficulty` output (TaoSR1 stage 3).

    Reads DATA/grpo.parquet (`prompt`, `gold_label`/`grade`) and trains with TRL's GRPOTrainer;
    each prompt's G rollouts are rewarded by trainers.rewards (grade_match: 1 when the parsed
    grade is the gold one). Rollouts use transformers generation (CPU or GPU), or vLLM with
    --use-vllm. The effective batch (batch size x devices x grad-accum) must be a multiple of G.

    \b
    Examples:
      toolkit train grpo out/demo/difficulty --model out/demo/dpo -o out/demo/grpo --max-steps 10 --num-generations 4
      toolkit train grpo out/difficulty --model out/dpo -o out/grpo --reward grade_match --reward format \\
          --trl reward_weights=[1,0.1]
    """
    from toolkit.training import train_grpo

    flags = {"num_generations": num_generations, "temperature": temperature, "beta": beta, "epsilon": epsilon,
             "loss_type": loss_type, "max_completion_length": max_completion_length}
    _run(GRPOTrainConfig, train_grpo, kw, flags)


@train.command("baseline")
@config_option
@click.argument("data", required=False, type=click.Path())
# data: the argument; trl: --trl
@options_from(BaselineConfig, "out", "model", "split", "max_length", skip=("data", "trl"))
@_trl_flag("--max-steps", type=int, help="Stop after this many steps.")
@_trl_flag("--epochs", type=float, help="Training epochs (default 2).")
@_trl_flag("--learning-rate", type=float, help="Peak learning rate (default 5e-5).")
@_trl_flag("--batch-size", type=int, help="Pairs per step (default 16).")
@options_from(BaselineConfig, "limit", "seed", "eval_split", "eval_every", "eval_limit", "select_best", "early_stop")
@TRL_OPTION
@options_from(BaselineConfig, "force")
def baseline(**kw):
    """A cross-encoder classifier baseline (the paper's BERT row) on canonical pairs.

    Fine-tunes a sentence-transformers CrossEncoder with one output per grade on (query,
    item text) of the train split (DATA: `toolkit ingest` or `toolkit split` output), then
    writes predictions.parquet for every pair: `grade_probs` (best grade first),
    `pred_grade`, `split` — evaluate it with `toolkit eval`.

    \b
    Examples:
      toolkit train baseline out/demo/splits -o out/demo/baseline --epochs 3
      toolkit eval --predictions out/demo/baseline --split test -o out/demo/eval-baseline
    """
    from trainers.baseline import train_baseline

    _run(BaselineConfig, train_baseline, kw)


COMMANDS = [train]
