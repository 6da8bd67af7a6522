"""Quiet by default: at the default verbosity stderr holds only the toolkit's own lines (no warnings or
progress bars of vLLM, transformers, TRL, datasets or torch, no Python `warnings`), and stdout only the
stage's summary; `-v` shows the libraries' warnings; `-q` turns off the toolkit's warnings and all bars.

Run: .venv/bin/python -m pytest tests/test_quiet.py -q      (the model-loading stages are marked slow)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.core.progress import MARK

REPO = Path(__file__).resolve().parents[1]
# a line of the toolkit's own: its one-line errors and warnings, and records of its own loggers
OWN = re.compile(r"^(error: |warning: |(DEBUG|INFO|WARNING|ERROR|CRITICAL) (toolkit|retrieval_index|annotation|trainers)[.:])")


def clean_env(**extra) -> dict:
    """This environment without what a toolkit run in this process set (the in-process CLI tests set
    PYTHONWARNINGS=ignore, TRANSFORMERS_VERBOSITY=error ...) and without the tests' own VLLM_LOGGING_LEVEL."""
    drop = {MARK, "VLLM_LOGGING_LEVEL", *json.loads(os.environ.get(MARK) or "{}")}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def run(args: list, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m toolkit ARGS` (or `python -c CODE`) with stdout and stderr as pipes: no terminal."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "toolkit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(**(env or {})), cwd=REPO, timeout=600)


def foreign(stderr: str) -> list[str]:
    """stderr lines that are not the toolkit's (progress-bar redraws split on \\r)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not OWN.match(line)]


# -- routing (no model: fast) ----------------------------------------------------------------

ROUTING = """
import logging, sys, warnings
from toolkit.cli.common import setup_logging
setup_logging(int(sys.argv[1]), int(sys.argv[2]))
warnings.warn("a library's python warning", UserWarning)
logging.getLogger("transformers.modeling_utils").warning("a library's warning")
logging.getLogger("vllm.engine").info("a library's info")
logging.getLogger("toolkit.some_stage").warning("the toolkit's warning")
logging.getLogger("trainers.run").info("the toolkit's info")
"""


def _routing(verbose: int, quiet: int) -> str:
    r = run([], code=ROUTING.replace("sys.argv[1]", str(verbose)).replace("sys.argv[2]", str(quiet)))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    return r.stderr


def test_default_shows_the_toolkits_warnings_and_no_library_output():
    err = _routing(0, 0)
    assert err.strip().splitlines() == ["WARNING toolkit.some_stage: the toolkit's warning"]


def test_v_shows_library_warnings_and_python_warnings_and_own_info():
    err = _routing(1, 0)
    assert "WARNING transformers.modeling_utils: a library's warning" in err
    assert "WARNING py.warnings:" in err and "UserWarning: a library's python warning" in err
    assert "INFO trainers.run: the toolkit's info" in err and "WARNING toolkit.some_stage" in err
    assert "a library's info" not in err
    assert "INFO vllm.engine: a library's info" in _routing(2, 0)


def test_q_turns_the_toolkits_warnings_off():
    assert _routing(0, 1) == ""


ENV_AND_BARS = """
import io, json, os, sys
class Tty(io.StringIO):
    def isatty(self):
        return True
if sys.argv[3] == "tty":
    sys.stderr = Tty()
from toolkit.core.progress import bars_enabled, configure, library_bars_enabled
configure(int(sys.argv[1]), int(sys.argv[2]))
keys = ["VLLM_LOGGING_LEVEL", "VLLM_LOGGING_STREAM", "TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS", "TORCH_CPP_LOG_LEVEL", "HF_HUB_DISABLE_PROGRESS_BARS"]
print(json.dumps({"bar": bars_enabled(), "library_bars": library_bars_enabled(), **{k: os.environ.get(k) for k in keys}}))
"""


def _env_and_bars(verbose: int, quiet: int, tty: bool, env: dict | None = None) -> dict:
    code = ENV_AND_BARS.replace("sys.argv[1]", str(verbose)).replace("sys.argv[2]", str(quiet)).replace("sys.argv[3]", repr("tty" if tty else "pipe"))
    r = run([], env=env, code=code)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bars_only_on_a_terminal_library_bars_only_with_v():
    default = _env_and_bars(0, 0, tty=True)
    assert default["bar"] is True and default["library_bars"] is False  # the stage's bar, not the libraries'
    assert default["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # transformers' and the hub's bars, also where imported by others
    verbose = _env_and_bars(1, 0, tty=True)
    assert verbose["library_bars"] is True and verbose["HF_HUB_DISABLE_PROGRESS_BARS"] is None
    off = [_env_and_bars(0, 1, tty=True), _env_and_bars(1, 1, tty=True), _env_and_bars(1, 0, tty=False)]
    assert all(not s["bar"] and not s["library_bars"] for s in off)


def test_library_environment_reaches_child_processes_and_user_settings_win():
    s = _env_and_bars(0, 0, tty=False)
    assert s["VLLM_LOGGING_LEVEL"] == "ERROR" and s["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"  # vLLM's engine process
    assert s["TRANSFORMERS_VERBOSITY"] == "error" and s["PYTHONWARNINGS"] == "ignore" and s["TORCH_CPP_LOG_LEVEL"] == "ERROR"
    v = _env_and_bars(1, 0, tty=False)
    assert v["VLLM_LOGGING_LEVEL"] == "WARNING" and v["PYTHONWARNINGS"] is None
    mine = _env_and_bars(0, 0, tty=False, env={"VLLM_LOGGING_LEVEL": "DEBUG", "PYTHONWARNINGS": "default"})
    assert mine["VLLM_LOGGING_LEVEL"] == "DEBUG" and mine["PYTHONWARNINGS"] == "default"


def test_a_toolkit_started_by_a_toolkit_takes_its_own_v():
    """Variables a toolkit process set are marked as such: a child `toolkit -v` may raise them again."""
    first = _env_and_bars(0, 0, tty=False)
    marked = {k: first[k] for k in ("VLLM_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}
    env = {**marked, MARK: json.dumps(marked)}
    child = _env_and_bars(1, 0, tty=False, env=env)
    assert child["VLLM_LOGGING_LEVEL"] == "WARNING" and child["TRANSFORMERS_VERBOSITY"] == "warning" and child["PYTHONWARNINGS"] is None


def test_toolkit_run_passes_v_to_its_stages(tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"out: {tmp_path / 'out'}\nstages:\n  - name: pairs\n    run: ingest\n    args: [{REPO / 'demo/pairs.jsonl'}]\n")
    r = run(["-v", "run", pipe])
    assert r.returncode == 0 and "INFO toolkit.ingest: wrote 109 pairs" in r.stderr, r.stderr
    r = run(["run", pipe, "--redo", "pairs"])
    assert r.returncode == 0 and r.stderr == "", r.stderr


# -- stages that load a model (subprocess, stderr not a terminal) -------------------------------


@pytest.fixture(scope="module")
def noisy_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with one weight the architecture does not have: transformers warns about it on loading."""
    import shutil

    from safetensors.torch import load_file, save_file

    import torch

    out = tmp_path_factory.mktemp("noisy") / "model"
    shutil.copytree(tiny_model_dir, out)
    weights = out / "model.safetensors"
    state = load_file(weights)
    state["model.not_a_layer.weight"] = torch.zeros(2)
    save_file(state, weights, metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quiet") / "pairs"
    r = run(["ingest", REPO / "demo/pairs.jsonl", "-o", folder])
    assert r.returncode == 0, r.stderr
    return folder


@pytest.mark.slow
def test_score_loads_a_model_quietly_and_v_shows_the_library_warning(noisy_model, pairs, tmp_path):
    args = ["score", pairs, "--model", noisy_model, "--dtype", "float32", "--split", "", "--limit", "3", "--backend", "transformers"]
    r = run([*args, "-o", tmp_path / "a"])
    assert r.returncode == 0, r.stderr
    assert foreign(r.stderr) == [], r.stderr  # no load report, no "Loading weights" bar, no Python warnings
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith("score: 3 pairs scored"), r.stdout
    r = run(["-v", *args, "-o", tmp_path / "b"])
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("WARNING transformers.") for line in r.stderr.splitlines()), r.stderr  # the load report
    assert "not_a_layer" in r.stderr and "Loading weights" not in r.stderr  # bars stay off without a terminal
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith("score: 3 pairs scored"), r.stdout


@pytest.mark.slow
def test_training_prints_no_metric_dicts_or_bars(tiny_model_dir, tmp_path):
    """The HF Trainer prints its log dicts on stdout and draws bars on stderr; here stdout is the summary alone."""
    import polars as pl

    from toolkit.core.grades import get_scale
    from toolkit.core.stagefolder import write_manifest

    rows = [{"pair_id": f"p{i}", "grade": g,
             "prompt": [{"role": "system", "content": "Grade the item."}, {"role": "user", "content": f"Query: mug {i}\nItem: mug"}],
             "completion": [{"role": "assistant", "content": f"{g}\nReason: it is a mug."}]} for i, g in enumerate([4, 1, 4, 1])]
    data = tmp_path / "cot"
    data.mkdir()
    pl.DataFrame(rows).write_parquet(data / "sft.parquet")
    write_manifest(data, "test", {}, {}, {"rows": len(rows)}, {"grade_scale": get_scale("taosr4").to_dict()})
    args = ["train", "sft", data, "--model", tiny_model_dir, "--max-steps", 2, "--batch-size", 2, "--no-bf16", "--trl", "max_length=64"]
    r = run([*args, "-o", tmp_path / "a"])
    assert r.returncode == 0, r.stderr
    assert foreign(r.stderr) == [], r.stderr
    assert r.stdout.splitlines() == [line for line in r.stdout.splitlines() if line.startswith("train-sft: 4 rows, 2 steps")] != [], r.stdout
    r = run(["-v", *args, "-o", tmp_path / "b"])
    assert r.returncode == 0 and "INFO trainers.run: step 2/2: loss" in r.stderr, r.stderr  # the step metrics, as log records
    assert "{'loss'" not in r.stdout + r.stderr
