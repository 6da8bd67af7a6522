"""docs/architecture.md's "Adding a stage" recipe works as written: its two code blocks (the stage module
and its command) run unchanged on a pairs folder made by `toolkit ingest`; the stage writes a stage folder
with the shared contract (manifest, the up-to-date skip, the summary format, the -o rules).
Run: .venv/bin/python -m pytest -q tests/test_stage_recipe.py"""

import json
import re
import sys
import textwrap
import types
from pathlib import Path

import click
import polars as pl
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def recipe_blocks() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def load_recipe(monkeypatch):
    stage_code, command_code = recipe_blocks()[:2]
    module = types.ModuleType("toolkit_recipe_dedupe")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(stage_code, "docs/architecture.md (stage)", "exec"), module.__dict__)
    from toolkit.cli.common import config_option
    from toolkit.cli.options import config_from, options_from

    scope = {"click": click, "config_option": config_option, "options_from": options_from, "config_from": config_from,
             "DedupeConfig": module.DedupeConfig, "dedupe": module.dedupe}
    exec(compile(command_code, "docs/architecture.md (command)", "exec"), scope)
    return module, scope["dedupe_cmd"]


def test_the_recipe_stage_runs_with_the_shared_contract(monkeypatch, tmp_path, cli):
    src = tmp_path / "pairs.csv"
    pl.DataFrame({"query": ["red shoe", "Red Shoe", "blue hat"], "title": ["Shoe A", "shoe a", "Hat"], "grade": ["4", "3", "2"]}).write_csv(src)
    assert cli("ingest", src, "-o", tmp_path / "pairs").exit_code == 0
    module, command = load_recipe(monkeypatch)
    runner = CliRunner()

    r = runner.invoke(command, [str(tmp_path / "pairs"), "-o", str(tmp_path / "deduped")])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"dedupe: 3 pairs -> 2; dropped: repeated=1 -> {tmp_path / 'deduped'}"
    kept = pl.read_parquet(tmp_path / "deduped" / "pairs.parquet")
    assert kept["grade"].to_list() == [4, 2]  # the first of the repeated pair
    manifest = json.loads((tmp_path / "deduped" / "manifest.json").read_text())
    assert manifest["stage"] == "dedupe" and manifest["counts"]["dropped_repeated"] == 1 and manifest["grade_scale"]["name"]

    again = runner.invoke(command, [str(tmp_path / "pairs"), "-o", str(tmp_path / "deduped")])
    assert "is up to date" in again.output and "nothing to do" in again.output
    last = runner.invoke(command, [str(tmp_path / "pairs"), "-o", str(tmp_path / "deduped"), "--keep", "last"])
    assert pl.read_parquet(tmp_path / "deduped" / "pairs.parquet")["grade"].to_list() == [3, 2] and "-> 2" in last.output

    assert "--keep [first|last]" in runner.invoke(command, ["--help"]).output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    refused = runner.invoke(command, [str(tmp_path / "pairs"), "-o", str(tmp_path / "mine")])
    assert refused.exit_code != 0 and (tmp_path / "mine" / "notes.txt").read_text() == "mine"  # -o rules hold for a new stage too
