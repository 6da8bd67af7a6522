"""CLI options built from the config dataclasses (issue 15, items 4-5): help text and defaults are declared
once, on the fields (toolkit.core.options.opt); toolkit.cli.options builds the click options and the config.

- every command that builds a config has an option for each of its fields, except those it skips by name;
- a default invocation builds the dataclass's defaults (plus the declared CLI overrides);
- the old short flags still work (hidden, with a one-line deprecation warning);
- -v/-q work after the stage name; --config YAML keys still map to the options.

Fast: the stage functions are replaced by recorders, no model is loaded.
Run: .venv/bin/python -m pytest -q tests/test_cli_options.py
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from toolkit.cli import cli as toolkit_cli
from toolkit.cli.options import FieldOption, command_fields, config_from, options_from
from toolkit.core.options import opt


def leaves(cmd=toolkit_cli, path=()):
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from leaves(sub, (*path, name))
    else:
        yield " ".join(path), cmd


COMMANDS = dict(leaves())
BUILDERS = {name: cmd for name, cmd in COMMANDS.items() if command_fields(cmd)}


def help_of(*path: str) -> str:
    r = CliRunner().invoke(toolkit_cli, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


# -- (a) an option for every field ---------------------------------------------------------------


def missing_fields(cmd: click.Command) -> dict[str, list[str]]:
    """{config class: its fields that have no option and that the command does not skip by name}."""
    out = {}
    for cls, (with_option, skipped) in command_fields(cmd).items():
        missing = sorted({f.name for f in dataclasses.fields(cls)} - with_option - skipped)
        if missing:
            out[cls.__name__] = missing
    return out


def test_the_commands_that_build_configs_are_found():
    assert {"ingest", "split", "build-index", "retrieve", "gen-cot", "sample", "score", "atomize", "eval", "tier fit", "tier apply", "passk",
            "make-prefs", "label-difficulty", "review push", "review pull", "review select", "review apply", "train sft", "train dpo",
            "train grpo", "train baseline", "push", "serve"} <= set(BUILDERS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_field_has_an_option_or_is_skipped(name):
    """Adding a config field without `opt(help=...)` (or without naming it in the command's skip=) fails here."""
    assert missing_fields(BUILDERS[name]) == {}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_help_lists_every_field_option(name):
    text = help_of(*name.split())
    for p in BUILDERS[name].params:
        if isinstance(p, FieldOption):
            assert all(o in text for o in p.opts + p.secondary_opts), (p.field_name, p.opts)


def test_a_new_field_without_an_option_is_caught():
    @dataclasses.dataclass
    class Demo:
        out: str = opt(flags=("-o", "--out"), help="Output folder.")
        seed: int = opt(0, show_default=True, help="Seed.")
        added: int = 3  # a new field someone forgot to declare

    @click.command()
    @options_from(Demo)
    def demo(**kw):
        pass

    assert missing_fields(demo) == {"Demo": ["added"]}
    assert [p.name for p in demo.params] == ["out", "seed"]
    with pytest.raises(TypeError, match="declares no option"):
        options_from(Demo, "added")  # naming it explicitly fails at once
    with pytest.raises(TypeError, match="no field"):
        options_from(Demo, skip=("typo",))


def test_option_defaults_are_the_fields_defaults():
    """A flag's default is its field's, except the declared CLI overrides."""
    overrides = {("split", "fractions"), ("tier fit", "objective")}
    drift = []
    for name, cmd in BUILDERS.items():
        for p in cmd.params:
            if not isinstance(p, FieldOption) or p.negate or p.multiple or (name, p.field_name) in overrides:
                continue
            f = next(f for f in dataclasses.fields(p.config_cls) if f.name == p.field_name)
            field_default = None if f.default is dataclasses.MISSING else f.default
            option_default = p.get_default(click.Context(cmd), call=False)
            option_default = None if repr(option_default) == "Sentinel.UNSET" else option_default  # click 8.3: no default given
            if option_default != field_default and not (option_default is None and field_default is False):
                drift.append((name, p.field_name, option_default, field_default))
    assert drift == []


def test_hidden_aliases_stay_out_of_help_and_config_keys():
    text = help_of("make-prefs")
    assert "-p, --pairs-per-prompt" in text and "-k," not in text
    assert "--kind [" in help_of("review", "push") and "-k," not in help_of("review", "push")
    assert "-n, --samples" in help_of("sample") and "--n " not in help_of("sample")
    for name in ("gen-cot", "sample", "score", "serve"):
        text = help_of(*name.split())
        assert "-i, --index" in text and "-k, --rules-k" in text
    assert "-n, --samples" in help_of("gen-cot")


# -- (b) a default invocation builds the dataclass defaults ---------------------------------------


class Recorder:
    def __init__(self, result=None):
        self.configs = []
        self.result = result

    def __call__(self, cfg, *a, **kw):
        self.configs.append(cfg)
        return self.result if self.result is not None else SimpleNamespace(summary=lambda: "done", skipped=False, out="x", passk=None, report=None)

    @property
    def cfg(self):
        assert len(self.configs) == 1
        return self.configs[0]


@pytest.fixture
def run(monkeypatch, tmp_path):
    """run(argv, "module:function") -> the config the command built (the stage function is a recorder)."""
    monkeypatch.setattr("toolkit.stats.stats_table", lambda *a, **kw: "")
    monkeypatch.setattr("toolkit.teacher.BackendTeacher.close", lambda self: None)
    server = types.ModuleType("toolkit.serving.server")
    monkeypatch.setitem(sys.modules, "toolkit.serving.server", server)

    def go(argv, target, result=None, expect_ok=True):
        rec = Recorder(result)
        module, fn = target.split(":")
        if module == "toolkit.serving.server":
            server.serve = rec
        else:
            monkeypatch.setattr(f"{module}.{fn}", rec)
        r = CliRunner().invoke(toolkit_cli, [str(a) for a in argv], catch_exceptions=False)
        if expect_ok:
            assert r.exit_code == 0, r.output
        go.result = r
        return rec.cfg if expect_ok else rec

    return go


def _defaults(tmp_path):
    from annotation.apply import ApplyConfig
    from annotation.pull import PullConfig
    from annotation.push import PushConfig as ReviewPushConfig
    from annotation.select import SelectConfig
    from retrieval_index.build import BuildIndexConfig
    from retrieval_index.retrieve import RetrieveConfig
    from toolkit.atomize import AtomizeConfig
    from toolkit.cot import GenCotConfig
    from toolkit.difficulty import LabelDifficultyConfig
    from toolkit.evaluation import EvalConfig
    from toolkit.hub import PushConfig
    from toolkit.ingest import IngestConfig
    from toolkit.passk import PasskConfig
    from toolkit.preferences import MakePrefsConfig
    from toolkit.sample import SampleConfig
    from toolkit.scoring import ScoreConfig
    from toolkit.serving.config import ServeConfig
    from toolkit.splits import SplitConfig
    from toolkit.tiering import TierApplyConfig, TierFitConfig
    from trainers.config import BaselineConfig, DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig

    i, o = str(tmp_path / "in"), str(tmp_path / "out")
    return [  # (argv, stage function, the config a default invocation must build)
        (["ingest", i, "-o", o], "toolkit.ingest:ingest", lambda: IngestConfig(inputs=[i], out=o)),
        (["split", i, "-o", o], "toolkit.splits:split", lambda: SplitConfig(input=i, out=o)),
        (["build-index", i, "-o", o], "retrieval_index.build:build_index", lambda: BuildIndexConfig(sources=[i], out=o)),
        (["retrieve", i, "-i", "idx", "-o", o], "retrieval_index.retrieve:retrieve", lambda: RetrieveConfig(input=i, index="idx", out=o)),
        (["gen-cot", i, "-o", o], "toolkit.cot:gen_cot", lambda: GenCotConfig(pairs=i, out=o)),
        (["sample", i, "-o", o], "toolkit.sample:sample", lambda: SampleConfig(pairs=i, out=o)),
        (["score", i, "-o", o], "toolkit.scoring:score", lambda: ScoreConfig(pairs=i, out=o)),
        (["atomize", i, "-o", o], "toolkit.atomize:atomize", lambda: AtomizeConfig(guideline=i, out=o)),
        (["eval", "--predictions", i, "-o", o], "toolkit.evaluation:evaluate", lambda: EvalConfig(predictions=i, out=o)),
        (["tier", "fit", "--predictions", i, "-o", o], "toolkit.tiering:fit_tiers", lambda: TierFitConfig(predictions=i, out=o, objective="macro-f1")),
        (["tier", "apply", "--predictions", i, "--rule", "r", "-o", o], "toolkit.tiering:apply_tiers",
         lambda: TierApplyConfig(predictions=i, rule="r", out=o)),
        (["passk", i], "toolkit.passk:passk", lambda: PasskConfig(rollouts=i)),
        (["make-prefs", i, "-o", o], "toolkit.preferences:make_preferences", lambda: MakePrefsConfig(rollouts=i, out=o)),
        (["label-difficulty", i, "-o", o], "toolkit.difficulty:label_difficulty", lambda: LabelDifficultyConfig(rollouts=i, out=o)),
        (["review", "push", i, "--kind", "cot"], "annotation.push:push", lambda: ReviewPushConfig(input=i, kind="cot")),
        (["review", "pull", i, "--kind", "cot", "-o", o], "annotation.pull:pull", lambda: PullConfig(input=i, kind="cot", out=o)),
        (["review", "select", i, "-o", o], "annotation.select:select", lambda: SelectConfig(input=i, out=o)),
        (["review", "apply", i, "-r", "rv", "-o", o], "annotation.apply:apply", lambda: ApplyConfig(pairs=i, out=o, reviews=["rv"])),
        (["push", i, "--repo", "me/x"], "toolkit.hub:push", lambda: PushConfig(folder=i, repo_id="me/x")),
        (["serve"], "toolkit.serving.server:serve", lambda: ServeConfig()),
        (["train", "sft", i, "-o", o], "toolkit.training:train_sft", lambda: SFTTrainConfig(data=i, out=o)),
        (["train", "dpo", i, "-o", o], "toolkit.training:train_dpo", lambda: DPOTrainConfig(data=i, out=o)),
        (["train", "grpo", i, "-o", o], "toolkit.training:train_grpo", lambda: GRPOTrainConfig(data=i, out=o)),
        (["train", "baseline", i, "-o", o], "trainers.baseline:train_baseline", lambda: BaselineConfig(data=i, out=o)),
    ]


def test_every_config_building_command_is_in_the_round_trip_table(tmp_path):
    covered = {" ".join(argv[:2]) if argv[0] in ("tier", "review", "train") else argv[0] for argv, _, _ in _defaults(tmp_path)}
    assert set(BUILDERS) <= covered and len(_defaults(tmp_path)) == 24


@pytest.mark.parametrize("index", range(24))
def test_a_default_invocation_builds_the_dataclass_defaults(run, tmp_path, index):
    argv, target, expected = _defaults(tmp_path)[index]
    result = (None, None) if target == "toolkit.hub:push" else None
    assert run(argv, target, result=result) == expected()


def test_flags_reach_the_config(run, tmp_path):
    cfg = run(["gen-cot", "p", "-o", tmp_path / "o", "-i", "idx", "-k", "5", "-n", "2", "--no-gold", "--split", "", "--min-chars", "10",
               "--backend", "openai", "--base-url", "http://h/v1", "--template-option", "enable_thinking=false"], "toolkit.cot:gen_cot")
    assert (cfg.index, cfg.rules_k, cfg.samples, cfg.give_gold, cfg.split, cfg.filters.min_chars) == ("idx", 5, 2, False, None, 10)
    assert (cfg.backend.kind, cfg.backend.base_url, cfg.backend.template_options) == ("openai", "http://h/v1", {"enable_thinking": False})
    cfg = run(["ingest", "a.csv", "-o", tmp_path / "o2", "--query-column", "q", "--esci-locale", ""], "toolkit.ingest:ingest")
    assert cfg.columns.query == "q" and cfg.esci_locale is None
    cfg = run(["build-index", "r.md", "-o", tmp_path / "o3", "--index-type", "hnsw", "--ef-search", "7"], "retrieval_index.build:build_index")
    assert (cfg.index.type, cfg.index.ef_search) == ("hnsw", 7)
    cfg = run(["train", "grpo", "d", "-o", tmp_path / "o4", "--reward", "format", "--no-dynamic-sampling", "--beta", "0.5", "--lora"],
              "toolkit.training:train_grpo")
    assert (cfg.rewards, cfg.dynamic_sampling, cfg.trl, cfg.lora) == (["format"], False, {"beta": 0.5}, True)
    cfg = run(["push", "f", "--repo", "me/x", "--public", "--license", "mit", "--data-repo", "me/d"], "toolkit.hub:push", result=(None, None))
    assert (cfg.private, cfg.license, cfg.data_repos) == (False, "mit", ["me/d"])


# -- (c) the old spellings -------------------------------------------------------------------------


def test_make_prefs_k_is_a_deprecated_alias(run, tmp_path):
    cfg = run(["make-prefs", "r", "-o", tmp_path / "o", "-k", "2"], "toolkit.preferences:make_preferences")
    assert cfg.pairs_per_prompt == 2
    assert "make-prefs: -k is now -p/--pairs-per-prompt" in run.result.stderr
    assert len(run.result.stderr.strip().splitlines()) == 1
    assert run(["make-prefs", "r", "-o", tmp_path / "o", "-p", "3"], "toolkit.preferences:make_preferences").pairs_per_prompt == 3
    assert "is now" not in run.result.stderr


@pytest.mark.parametrize("sub", ["push", "pull"])
def test_review_k_is_a_deprecated_alias(run, tmp_path, sub):
    argv = ["review", sub, "in", "-k", "prefs"] + (["-o", tmp_path / "o"] if sub == "pull" else [])
    assert run(argv, f"annotation.{sub}:{sub}").kind == "prefs"
    assert f"review {sub}: -k is now --kind" in run.result.stderr


def test_sample_long_n_still_works_without_a_warning(run, tmp_path):
    assert run(["sample", "p", "-o", tmp_path / "o", "--n", "6"], "toolkit.sample:sample").n == 6
    assert "is now" not in run.result.stderr
    assert run(["sample", "p", "-o", tmp_path / "o", "--samples", "5"], "toolkit.sample:sample").n == 5


def test_an_alias_beats_the_config_file(run, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("pairs_per_prompt: 3\n")
    assert run(["make-prefs", "r", "-o", tmp_path / "o", "--config", cfg_file, "-k", "4"], "toolkit.preferences:make_preferences").pairs_per_prompt == 4
    assert run(["make-prefs", "r", "-o", tmp_path / "o", "--config", cfg_file], "toolkit.preferences:make_preferences").pairs_per_prompt == 3


def test_kind_is_still_required(run):
    rec = run(["review", "push", "in"], "annotation.push:push", expect_ok=False)
    r = run.result
    assert r.exit_code == 2 and rec.configs == [] and "--kind" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- (d) -v / -q after the stage name ----------------------------------------------------------------


def _levels():
    from toolkit.core.progress import _state

    return _state["verbose"], _state["quiet"], logging.getLogger().level


@pytest.mark.parametrize("before, after", [(["-v"], ["-v"]), (["-vv"], ["-vv"]), (["-q"], ["-q"]), (["-v", "-v"], ["-vv"])])
def test_verbosity_after_the_stage_name_counts_like_before_it(run, tmp_path, before, after):
    run([*before, "passk", "r"], "toolkit.passk:passk")
    expected = _levels()
    run(["passk", "r", *after], "toolkit.passk:passk")
    assert _levels() == expected


def test_verbosity_before_and_after_add_up(run, tmp_path):
    run(["-v", "sample", "p", "-o", tmp_path / "o", "-v"], "toolkit.sample:sample")
    assert _levels()[:2] == (2, 0) and _levels()[2] == logging.DEBUG
    run(["train", "sft", "d", "-o", tmp_path / "o", "-q"], "toolkit.training:train_sft")
    assert _levels()[:2] == (0, 1) and _levels()[2] == logging.ERROR


def test_every_command_takes_v_and_q():
    for name, cmd in COMMANDS.items():
        opts = {o for p in cmd.params for o in p.opts}
        assert {"-v", "--verbose", "-q", "--quiet"} <= opts, name


# -- (e) --config keys --------------------------------------------------------------------------------


def test_config_file_keys_map_to_the_options(run, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("out: o\nrules-k: 7\nno_gold: true\nsamples: 3\ntemplate_options: enable_thinking=false\nbackend: vllm\nmax_chars: 99\n")
    cfg = run(["gen-cot", "p", "--config", cfg_file, "--samples", "2"], "toolkit.cot:gen_cot")
    assert (cfg.out, cfg.rules_k, cfg.give_gold, cfg.samples, cfg.backend.kind, cfg.filters.max_chars) == ("o", 7, False, 2, "vllm", 99)
    assert cfg.backend.template_options == {"enable_thinking": False}
    cfg_file.write_text("query_column: q\nlicense_: mit\n")
    cfg = run(["ingest", "a.csv", "-o", tmp_path / "o", "--config", cfg_file], "toolkit.ingest:ingest", expect_ok=False)
    assert "unknown field `license_`" in run.result.stderr and "query_column" in run.result.stderr
    cfg_file.write_text("query_column: q\nesci_locale: ''\n")
    cfg = run(["ingest", "a.csv", "-o", tmp_path / "o", "--config", cfg_file], "toolkit.ingest:ingest")
    assert cfg.columns.query == "q" and cfg.esci_locale is None
    cfg_file.write_text("license_: mit\npublic: true\ntiers_dir: t\n")
    cfg = run(["push", "f", "--repo", "me/x", "--config", cfg_file], "toolkit.hub:push", result=(None, None))
    assert (cfg.license, cfg.private, cfg.tiers_dir) == ("mit", False, "t")


def test_config_file_does_not_take_aliases_or_verbosity(run, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    for key in ("alias_k_of_pairs_per_prompt", "verbose", "k"):
        cfg_file.write_text(f"{key}: 1\n")
        rec = run(["make-prefs", "r", "-o", tmp_path / "o", "--config", cfg_file], "toolkit.preferences:make_preferences", expect_ok=False)
        assert rec.configs == [] and f"unknown field `{key}`" in run.result.stderr
        assert "pairs_per_prompt" in run.result.stderr and "alias" not in run.result.stderr.split("allowed:")[1]


def test_config_from_outside_a_command():
    from toolkit.cli.generate import sample_cmd
    from toolkit.generation.base import BackendConfig

    ctx = sample_cmd.make_context("sample", ["p", "-o", "o", "--model", "m", "-k", "2"])
    kw = dict(ctx.params)
    backend = config_from(BackendConfig, kw, command=sample_cmd)
    assert backend == BackendConfig(model="m") and "model" not in kw and kw["rules_k"] == 2
