"""What the SFT, DPO and GRPO wrappers share: build TRL's config and trainer, train, save a checkpoint.

No training loop here: `trainer.train()` is TRL's (and so runs under `accelerate launch`, DeepSpeed
or FSDP unchanged). The checkpoint folder `out` is written atomically by the main process and holds
the model (LoRA merged by default), the tokenizer with its chat template, config.yaml,
manifest.json (inputs' hashes, base model, grade scale, counts) and train_log.json (logged
metrics per step).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

from toolkit.core import lineage
from toolkit.core.errors import UserError, missing_extra
from toolkit.core.grades import GradeScale
from toolkit.core.stagefolder import (input_hashes, Key, model_inputs, recorded_result, StageResult, write_stage)
from toolkit.core.progress import bars_enabled, quiet_libraries
from trainers.checkpoint import fix_generation_config, merged_from_adapter, resave, write_adapter_note
from trainers.config import TrainConfig, check_fields, config_class
from toolkit.core.stagefolder.files import TRAIN_LOG

log = logging.getLogger(__name__)



class TrainResult(StageResult):
    """The result of `toolkit train sft|dpo|grpo|baseline`: the stage name is the trainer's (train-sft, ...)."""

    def __init__(self, stage: str, out: Path, counts: dict | None = None, skipped: bool = False,
                 manifest: dict | None = None):
        super().__init__(Path(out), counts or {}, skipped, manifest)
        self.name = stage

    @property
    def stage(self) -> str:
        return self.name

    @classmethod
    def recorded(cls, out: Path, manifest: dict, skipped: bool = False, **fields) -> "TrainResult":
        return cls(manifest[Key.STAGE], out, manifest.get(Key.COUNTS) or {}, skipped=skipped, manifest=manifest)

    def brief(self) -> str:
        c = self.counts
        return f"{c.get('rows', 0)} rows, {c.get('steps', 0)} steps"

    def headline(self) -> str:
        c = self.counts
        parts = [f"{c.get('rows', 0)} rows", f"{c.get('steps', 0)} steps in {c.get('runtime_s', 0):.1f} s"]
        for key in ("loss", "reward"):
            if c.get(f"first_{key}") is not None:
                parts.append(f"{key} {c[f'first_{key}']:.4g} -> {c[f'last_{key}']:.4g}")
        ds = c.get("dynamic_sampling")
        if ds and ds.get("groups_generated"):
            full = (f", effective batch {100 * ds['effective_groups'] / ds['batch_groups']:.0f}%"
                    if ds.get("batch_groups") else "")
            parts.append(f"dynamic sampling kept {ds['groups_kept']} of {ds['groups_generated']} groups "
                         f"(dropped all-right {ds['dropped_all_right']}, all-wrong {ds['dropped_all_wrong']}, no "
                         f"spread {ds['dropped_no_spread']}){full}")
        if c.get("dev_evals"):
            parts.append(f"dev macro-F1 {c['dev_macro_f1_last']:.4f} last, best {c['dev_macro_f1_best']:.4f} at step "
                         f"{c['dev_best_step']} (kept step {c['dev_kept_step']})")
        return ", ".join(parts)

    def summary(self) -> str:
        text = super().summary()
        c = self.counts
        if self.skipped:
            return text
        if c.get("dynamic_stop"):
            text += f"\nwarning: {c['dynamic_stop']}; training stopped at step {c.get('steps')}"
        if c.get("steps") == 0:
            text += f"\n{NO_STEPS}"
        elif c.get("frac_reward_zero_std") == 1:
            text += f"\n{NO_SIGNAL}"
        return text


NO_STEPS = ("warning: no optimizer step ran, the checkpoint is the starting model: the rows do not fill one batch; "
            "lower --batch-size (GRPO takes batch-size / num-generations prompts a step) or give more rows")
NO_SIGNAL = ("warning: in every GRPO group all rollouts got the same reward, so no step had an advantage to learn "
             "from and the weights did not move: the policy answers each prompt the same way (raise --temperature, or "
             "rebuild the difficulty set from this model's own rollouts: `toolkit sample` then "
             "`toolkit label-difficulty`)")


def machine_defaults() -> dict:
    """use_cpu and bf16 for this machine: bf16 on GPUs that have it and on CPUs with native bf16 (AMX/AVX-512)."""
    try:
        import torch
    except ImportError as e:
        raise missing_extra("train", e.name or "torch") from None
    if torch.cuda.is_available():
        return {"use_cpu": False, "bf16": torch.cuda.is_bf16_supported()}
    from toolkit.core.models import pick_dtype

    return {"use_cpu": True, "bf16": pick_dtype("auto", torch) == torch.bfloat16}


def trl_args(cfg, out: Path):
    """The trainer's config object, built from the merged fields; its own errors become one line."""
    cls = config_class(cfg.trl_class)
    fields = cfg.trl_fields(machine_defaults())
    fields.pop("resume_from_checkpoint", None)
    fields.setdefault("disable_tqdm", not bars_enabled())  # the step bar on a terminal, unless -q
    # intermediate checkpoints (save_strategy steps/epoch) go to OUT.trainer; otherwise a hidden folder, removed after
    hidden = str(fields.get("save_strategy", "no")) in ("no", "SaveStrategy.NO")
    try:
        return cls(output_dir=str(trainer_dir(out, hidden)), **fields)
    except (ValueError, TypeError) as e:
        raise UserError(f"{cls.__name__} rejected the config: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def peft_config(cfg: TrainConfig):
    if not cfg.lora:
        return None
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise missing_extra("train", e.name or "peft") from None
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_targets, task_type="CAUSAL_LM")


def load_tokenizer(model_id: str):
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise missing_extra("train", e.name or "transformers") from None
    try:
        return AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of model {model_id!r}: {first_line(e)}") from None


def prompt_record(cfg: TrainConfig, data_file: Path) -> dict | None:
    """What the checkpoint learned to answer (toolkit.core.lineage): its data's record, else its starting model's."""
    rec = lineage.recorded(data_file) or lineage.recorded(cfg.model, hub=True)
    if rec and getattr(cfg, "label_only", False):
        rec = {**rec, "order": lineage.LABEL_FIRST}  # the target is the label alone
    return rec


def train(cfg: TrainConfig, build: Callable, data_file: Path, scale: GradeScale, counts: dict,
          dev: Callable | None = None) -> TrainResult:
    """Resolve the model, check the tokenizer, build the trainer with `build(model_id, args, tokenizer, peft)`,
    train, save.
    With cfg.eval_pairs, `dev(scale, order, tokenizer, template, prompt_template)` gives the dev scorer
    (toolkit.training.dev_scorer).
    The callers (train_sft/dpo/grpo) hold the output folder's claim (toolkit.core.stagefolder.writes_output)."""
    from toolkit.core.models import resolve_model
    from toolkit.core.stagefolder.remote import is_hub_model_id
    from trainers.data import check_tokenizer

    out = Path(cfg.out)
    check_fields(cfg.trl, cfg.trl_class)  # a typo fails before any model loads
    hub = is_hub_model_id(cfg.model)  # its commit is its input: the weights download only when it trains
    model_id = None if hub else resolve_model(cfg.model)
    gold = [cfg.gold] if getattr(cfg, "gold", None) else []  # corrected pairs the rows were re-marked against
    dev_inputs = [p for p in (cfg.eval_pairs, cfg.eval_index) if p]  # what the kept step was chosen on
    inputs = input_hashes([data_file, *gold, *dev_inputs]) | model_inputs(model_id or cfg.model)
    resolved = cfg.resolved()
    done = recorded_result(TrainResult, cfg, inputs, stage=cfg.stage, resolved=resolved)
    if done is not None:
        return done
    model_id = model_id or resolve_model(cfg.model)
    if cfg.eval_pairs and dev is None:
        raise UserError(f"{cfg.stage}: --eval-pairs needs the toolkit's dev scorer; call "
                        f"toolkit.training.{cfg.stage.replace('-', '_')}(cfg), or pass "
                        "dev=toolkit.training.dev_scorer(cfg)")
    tokenizer = load_tokenizer(model_id)
    check_tokenizer(tokenizer, scale, model_id)
    template = chat_template_options(tokenizer, cfg, model_id)
    args = trl_args(cfg, out)
    if template and hasattr(args, "chat_template_kwargs"):  # GRPO renders its prompts with these
        args.chat_template_kwargs = template
    quiet_libraries()  # TRL, transformers and datasets are imported by now
    callback = curve = None
    if cfg.eval_pairs:  # evaluation while training (trainers.dev_eval)
        from toolkit.core.parsing import LABEL_FIRST
        from trainers.dev_eval import make_callback

        rec = prompt_record(cfg, data_file) or {}
        remedy = ({"remedy": "the classes are weighed already: try a lower learning rate, a larger batch or fewer "
                             "steps; --select-best macro_f1 keeps the best step"}
                  if getattr(cfg, "class_weights", "none") != "none" else {})
        callback, curve = make_callback(dev(scale, rec.get("order") or LABEL_FIRST, tokenizer, template,
                                            rec.get("template")), cfg.eval_every,
                                        cfg.select_best == "macro_f1", cfg.early_stop, **remedy)
    try:
        trainer = build(model_id, args, tokenizer, peft_config(cfg), template)
    except ValueError as e:
        raise UserError(f"TRL rejected the setup: {first_line(e)}") from None
    quiet_trainer(trainer)
    if callback is not None:
        trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=cfg.trl.get("resume_from_checkpoint"))
    counts = {**counts, **log_counts(trainer)}
    write_extra = None
    if curve is not None:
        from trainers.dev_eval import finish, write_curve

        counts.update(finish(curve, trainer.model, cfg.select_best == "macro_f1"))

        def write_extra(folder: Path) -> None:
            write_curve(folder, curve, counts["dev_kept_step"])
    result = save_checkpoint(trainer, cfg, out, tokenizer, model_id, inputs, resolved, counts, scale,
                             prompt_record(cfg, data_file), write_extra)
    log.info("%s", result.summary())
    return result


def chat_template_options(tokenizer, cfg: TrainConfig, model_id: str) -> dict:
    """The template options to train with (enable_thinking=false for templates that have it), checked: a generation
    prompt must not leave a <think> block open, or the label-first targets would follow the thinking tag."""
    from toolkit.core.chat_template import check_generation_prompt, template_options

    opts = template_options(getattr(tokenizer, "chat_template", None), getattr(cfg, "template_options", None))
    probe = tokenizer.apply_chat_template([{"role": "user", "content": "?"}], tokenize=False,
                                          add_generation_prompt=True, **opts)
    check_generation_prompt(probe, model_id, opts)
    return opts


# -- logs and checkpoints --------------------------------------------------------------------


def quiet_trainer(trainer) -> None:
    """The trainer's step bar (when on) without the metric dicts it prints on stdout; each logged step goes to
    this module's log instead (shown with -v), and to train_log.json as before."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class StepBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    class StepLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                                  if k != "total_flos")
                if "train_runtime" in logs:
                    log.info("trained: %s", shown)
                else:
                    log.info("step %d/%d: %s", state.global_step, state.max_steps, shown)

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(StepBar)
    trainer.add_callback(StepLog)


def step_logs(trainer) -> list[dict]:
    """The per-step entries of the trainer's log history (numbers only)."""
    rows = []
    for entry in trainer.state.log_history:
        if "train_runtime" in entry:
            continue
        rows.append({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    return rows


def log_counts(trainer) -> dict:
    steps = step_logs(trainer)
    summary = next((e for e in trainer.state.log_history if "train_runtime" in e), {})
    counts = {"steps": int(trainer.state.global_step), "runtime_s": round(float(summary.get("train_runtime", 0.0)), 2)}
    # trainers.dynamic
    if getattr(trainer, "dynamic_counts", None) is not None and getattr(trainer, "ds_active", False):
        counts["dynamic_sampling"] = dict(trainer.dynamic_counts)
        if trainer.ds_stop_reason:
            counts["dynamic_stop"] = trainer.ds_stop_reason
    counts["steps_per_s"] = round(counts["steps"] / counts["runtime_s"], 4) if counts["runtime_s"] else None
    for key in ("loss", "reward"):
        vals = [s[key] for s in steps if key in s]
        counts[f"first_{key}"] = vals[0] if vals else None
        counts[f"last_{key}"] = vals[-1] if vals else None
    zero_std = [s["frac_reward_zero_std"] for s in steps if "frac_reward_zero_std" in s]
    if zero_std:  # GRPO: share of groups whose rollouts all got the same reward (no advantage, no gradient)
        counts["frac_reward_zero_std"] = round(sum(zero_std) / len(zero_std), 4)
    return counts


def save_checkpoint(trainer, cfg: TrainConfig, out: Path, tokenizer, model_id: str, inputs: dict, resolved: dict,
                    counts: dict, scale: GradeScale, prompt: dict | None = None,
                    write_extra: Callable[[Path], None] | None = None) -> TrainResult:
    """Every process calls trainer.save_model (collective under ZeRO-3); the main process builds `out`."""
    staging = out.parent / f".{out.name}.staging"
    if trainer.accelerator.is_main_process:
        # a killed run's staging (e.g. an adapter_config.json) must not mix into this one
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return TrainResult(cfg.stage, out, counts)
    adapter = (staging / "adapter_config.json").exists()

    def write(tmp: Path) -> tuple[dict, dict]:
        from toolkit.core.stagefolder.remote import snapshot_model_id

        if adapter and cfg.merge_lora:
            merged_from_adapter(staging, tmp, cfg.save_dtype)
        else:
            for f in staging.iterdir():
                if f.name != "training_args.bin":
                    shutil.move(str(f), tmp / f.name)
            if not adapter and cfg.save_dtype != "auto":
                resave(tmp, cfg.save_dtype)
            if adapter:
                write_adapter_note(tmp, model_id)
        tokenizer.save_pretrained(tmp)
        fix_generation_config(tmp, tokenizer)
        log_rows = step_logs(trainer)
        (tmp / TRAIN_LOG).write_text(json.dumps({"steps": log_rows, "counts": counts}, indent=1), encoding="utf-8")
        if write_extra is not None:
            write_extra(tmp)
        return counts, {  # a hub id's base model as owner/name@COMMIT
            Key.GRADE_SCALE: scale.to_dict(), Key.LINEAGE: prompt,
            Key.BASE_MODEL: snapshot_model_id(model_id) or model_id,
            "trainer": type(trainer).__name__, "trl_version": _version("trl"), "lora": bool(cfg.lora),
            "weights": ("lora-merged" if cfg.merge_lora else "lora-adapter") if adapter else "full",
        }

    result = write_stage(TrainResult, cfg, inputs, write, out, cfg.stage, resolved)
    shutil.rmtree(staging, ignore_errors=True)
    remove_trainer_dirs(out)
    return result


def remove_trainer_dirs(out: Path) -> None:
    """The trainer's scratch folder goes; OUT.trainer stays only when it holds intermediate checkpoints."""
    shutil.rmtree(trainer_dir(out, hidden=True), ignore_errors=True)
    visible = trainer_dir(out, hidden=False)
    if visible.is_dir() and not any(visible.iterdir()):
        visible.rmdir()


def trainer_dir(out: Path, hidden: bool) -> Path:
    return out.parent / (f".{out.name}.trainer" if hidden else f"{out.name}.trainer")


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
