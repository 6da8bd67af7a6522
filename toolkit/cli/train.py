"""Training commands: `toolkit train sft|dpo|grpo|baseline` (thin wrappers over TRL and sentence-transformers)."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option

TRL_HELP = (
    "A field of the trainer's own config (TRL's SFTConfig/DPOConfig/GRPOConfig; CrossEncoderTrainingArguments "
    "for the baseline) as KEY=VALUE, VALUE in YAML (e.g. --trl lr_scheduler_type=cosine --trl warmup_ratio=0.1 --trl 'report_to=[tensorboard]'); "
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
        self.fail(f"{value!r} is not KEY=VALUE (e.g. --trl warmup_steps=0.1); in a config file use a `trl:` mapping", param, ctx)


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


def common_options(f):
    """Options every `toolkit train` command takes."""
    opts = [
        config_option,
        click.argument("data", required=False, type=click.Path()),
        click.option("-o", "--out", type=click.Path(), help="Checkpoint folder to write."),
        click.option("--model", default="default", show_default=True, help="Starting model: a folder, a hub id, or `default` (the embedded model)."),
        click.option("--max-steps", type=int, help="Stop after this many optimizer steps (TRL max_steps; overrides epochs)."),
        click.option("--epochs", type=float, help="Training epochs (TRL num_train_epochs; default 1)."),
        click.option("--learning-rate", type=float, help="Peak learning rate (TRL learning_rate; default: sft 2e-5, dpo 1e-6, grpo 1e-6)."),
        click.option("--batch-size", type=int, help="Examples per device per step (TRL per_device_train_batch_size; default 8)."),
        click.option("--grad-accum", type=int, help="Gradient accumulation steps (TRL gradient_accumulation_steps)."),
        click.option("--bf16/--no-bf16", default=None, help="bf16 mixed precision (default: on for GPUs and CPUs with native bf16)."),
        click.option("--limit", type=int, help="Train on the first N rows only."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of data order, dropout and sampling (TRL seed)."),
        click.option("--trl", multiple=True, type=TrlField(), help=TRL_HELP),
        click.option("--force", is_flag=True, help="Retrain even when the checkpoint is up to date."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def eval_options(f):
    """Evaluation while training (trainers.dev_eval)."""
    opts = [
        click.option("--eval-pairs", type=click.Path(), help="Pairs with a dev split (split or retrieve output): first-token macro-F1 while training."),
        click.option("--eval-split", default="dev", show_default=True, help="The split of --eval-pairs to evaluate on."),
        click.option("--eval-index", type=click.Path(), help="The rules index the training prompts used (rules go into the dev prompts too)."),
        click.option("--eval-every", default=0, show_default=True, type=int, help="Steps between dev evaluations (0: only after the last step)."),
        click.option("--eval-limit", default=500, show_default=True, type=int, help="At most this many dev pairs (a fixed seeded sample)."),
        click.option("--select-best", type=click.Choice(["none", "macro_f1"]), default="none", show_default=True,
                     help="macro_f1: save the weights of the evaluated step with the best dev macro-F1, not the last step's."),
        click.option("--early-stop", type=int, help="Stop after this many dev evaluations without a better macro-F1."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def template_option(f):
    return click.option("--template-option", "template_options", multiple=True, metavar="KEY=VALUE",
                        help="A chat-template option, e.g. enable_thinking=false (set by default for templates that have it); repeatable.")(f)


def lora_options(f):
    opts = [
        click.option("--lora/--no-lora", default=False, show_default=True, help="Train a LoRA adapter (peft) instead of all weights."),
        click.option("--lora-r", default=16, show_default=True, type=int, help="LoRA rank."),
        click.option("--lora-alpha", default=32, show_default=True, type=int, help="LoRA scaling (alpha / r multiplies the update)."),
        click.option("--lora-dropout", default=0.05, show_default=True, type=float, help="Dropout on the LoRA layers' input."),
        click.option("--lora-targets", default="all-linear", show_default=True, help="Modules to adapt (peft target_modules)."),
        click.option("--merge-lora/--no-merge-lora", default=True, show_default=True, help="Save merged weights (loadable with AutoModelForCausalLM); --no-merge-lora keeps the adapter."),
        click.option("--save-dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True, help="Weights' dtype in the checkpoint (auto: as trained)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


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
    kw["trl"] = trl_fields(ctx, kw.pop("trl"), {**flags, **(extra_flags or {})})
    result = fn(config_cls(**kw))
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
@click.option("--label-only", is_flag=True, help="Train on the grade label alone (the paper's `SFT label-only` ablation).")
@click.option("--class-weights", type=click.Choice(["none", "inverse"]), default="none", show_default=True,
              help="Weight the grade label token's loss by N / (K * n_grade) of the train rows, against collapse to the majority grade.")
@click.option("--gold", type=click.Path(), help="Corrected pairs from `toolkit review apply`: rationales written for a corrected grade and excluded pairs leave the SFT set (with --label-only the label takes the new grade).")
@click.option("--max-length", type=int, help="Longest tokenized example (TRL max_length; default 1024).")
def sft(max_length, **kw):
    """Supervised fine-tuning on `toolkit gen-cot` output (TaoSR1 stage 1).

    Reads DATA/sft.parquet (`prompt` messages, label-first `completion`, `grade`) and trains
    with TRL's SFTTrainer on the conversational prompt-completion format: loss on the
    assistant answer only. Grade labels must be single tokens of the model's tokenizer.

    \b
    Examples:
      toolkit train sft out/demo/cot -o out/demo/sft --max-steps 20
      toolkit train sft out/cot -o out/sft-label-only --label-only --lora
      toolkit train sft --config trainers/configs/sft.yaml
    """
    from trainers.config import SFTTrainConfig
    from toolkit.training import train_sft

    _run(SFTTrainConfig, train_sft, kw, {"max_length": max_length})


@train.command("dpo")
@common_options
@template_option
@eval_options
@lora_options
@click.option("--beta", type=float, help="DPO temperature β (TRL beta; default 0.1).")
@click.option("--nll-weight", default=0.0, show_default=True, type=float, help="Weight of an added NLL (SFT) loss on the chosen answer; 0 = plain DPO.")
@click.option("--max-length", type=int, help="Longest tokenized prompt + answer (TRL max_length; default 1024).")
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
    from trainers.config import DPOTrainConfig
    from toolkit.training import train_dpo

    _run(DPOTrainConfig, train_dpo, kw, {"beta": beta, "max_length": max_length})


@train.command("grpo")
@common_options
@template_option
@eval_options
@lora_options
@click.option("--reward", "rewards", multiple=True, type=click.Choice(["grade_match", "format", "distance", "consistency"]),
              help="Reward function(s); repeatable (default: grade_match, the paper's). Weights: --trl reward_weights=[1,0.2].")
@click.option("--order", type=click.Choice(["label_first", "cot_first"]),
              help="Answer order the rewards parse; default: the order recorded by the stages that made the data (or the model), else label_first.")
@click.option("--dynamic-sampling/--no-dynamic-sampling", default=True, show_default=True,
              help="Online difficulty filtering (DAPO): groups whose rewards have no spread are dropped and refilled from the pool.")
@click.option("--dynamic-gamma", default=1.0, show_default=True, type=float, help="Keep groups with 0 < n_correct < gamma * G.")
@click.option("--max-refills", default=4, show_default=True, type=int, help="Extra generation rounds per batch to refill dropped groups.")
@click.option("--dynamic-patience", default=3, show_default=True, type=int, help="Stop after this many batches in a row without one kept group.")
@click.option("--num-generations", type=int, help="Group size G (TRL num_generations; default 8, the paper's team used 16).")
@click.option("--temperature", type=float, help="Sampling temperature of the rollouts (default 0.99).")
@click.option("--beta", type=float, help="KL coefficient (default 0.02).")
@click.option("--epsilon", type=float, help="Clip range (default 0.2).")
@click.option("--loss-type", help="TRL GRPO loss_type: grpo, dr_grpo, dapo (TRL's default), bnpo, ...")
@click.option("--max-completion-length", type=int, help="Token budget of a rollout (default 128).")
@click.option("--use-vllm", is_flag=True, help="Generate rollouts with vLLM (colocate mode; GPU machines).")
def grpo(rewards, num_generations, temperature, beta, epsilon, loss_type, max_completion_length, **kw):
    """Reinforcement learning with GRPO on `toolkit label-difficulty` output (TaoSR1 stage 3).

    Reads DATA/grpo.parquet (`prompt`, `gold_label`/`grade`) and trains with TRL's GRPOTrainer;
    each prompt's G rollouts are rewarded by trainers.rewards (grade_match: 1 when the parsed
    grade is the gold one). Rollouts use transformers generation (CPU or GPU), or vLLM with
    --use-vllm. The effective batch (batch size x devices x grad-accum) must be a multiple of G.

    \b
    Examples:
      toolkit train grpo out/demo/difficulty --model out/demo/dpo -o out/demo/grpo --max-steps 10 --num-generations 4
      toolkit train grpo out/difficulty --model out/dpo -o out/grpo --reward grade_match --reward format --trl reward_weights=[1,0.1]
    """
    from trainers.config import GRPOTrainConfig
    from toolkit.training import train_grpo

    if rewards:
        kw["rewards"] = list(rewards)
    flags = {"num_generations": num_generations, "temperature": temperature, "beta": beta, "epsilon": epsilon,
             "loss_type": loss_type, "max_completion_length": max_completion_length}
    _run(GRPOTrainConfig, train_grpo, kw, flags)


@train.command("baseline")
@config_option
@click.argument("data", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder: the cross-encoder model and predictions.parquet.")
@click.option("--model", default="default", show_default=True, help="Encoder to start from: `default` (all-MiniLM-L6-v2, offline) or a folder.")
@click.option("--split", default="train", show_default=True, help="Train on the rows of this split (when the data has splits).")
@click.option("--max-length", default=256, show_default=True, type=int, help="Longest tokenized (query, item) pair.")
@click.option("--max-steps", type=int, help="Stop after this many steps.")
@click.option("--epochs", type=float, help="Training epochs (default 2).")
@click.option("--learning-rate", type=float, help="Peak learning rate (default 5e-5).")
@click.option("--batch-size", type=int, help="Pairs per step (default 16).")
@click.option("--limit", type=int, help="Train on the first N rows only.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of data order and initialisation of the classifier head.")
@click.option("--eval-split", help="Evaluate macro-F1 on this split of the data while training (e.g. dev).")
@click.option("--eval-every", default=0, show_default=True, type=int, help="Steps between dev evaluations (0: only after the last step).")
@click.option("--eval-limit", default=500, show_default=True, type=int, help="At most this many dev pairs (a fixed seeded sample).")
@click.option("--select-best", type=click.Choice(["none", "macro_f1"]), default="none", show_default=True,
              help="macro_f1: keep the weights of the evaluated step with the best dev macro-F1.")
@click.option("--early-stop", type=int, help="Stop after this many dev evaluations without a better macro-F1.")
@click.option("--trl", multiple=True, type=TrlField(), help=TRL_HELP)
@click.option("--force", is_flag=True, help="Retrain even when the output is up to date.")
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
    from trainers.config import BaselineConfig

    _run(BaselineConfig, train_baseline, kw)


COMMANDS = [train]
