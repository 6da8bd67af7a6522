"""`toolkit push`'s upload folder loads with `datasets`, config by config, for every kind of stage folder (issue 17).

Files of one schema are the splits of one `default` config; files of different schemas (gen-cot's
sft/rejects, sample's rollouts/prompts, make-prefs' preferences/teacher_answers, label-difficulty's
grpo/difficulty) are a config each, the one the next stage reads being the card's default. Each
upload folder has a name of its own, so `datasets` never serves one folder's rows for another's.

Run: .venv/bin/python -m pytest tests/test_hub_configs.py -q
"""

from __future__ import annotations

import polars as pl
import pytest

from rollouts_data import write_rollouts
from toolkit.hub import PushConfig, build_hub_folder

datasets = pytest.importorskip("datasets")


def _load_every_config(folder, cache):
    from huggingface_hub import DatasetCard

    meta = DatasetCard.load(folder / "README.md").data.to_dict()  # the card's YAML parses as the Hub parses it
    loaded = {}
    for c in meta["configs"]:
        ds = datasets.load_dataset(str(folder), c["config_name"], cache_dir=str(cache))
        loaded[c["config_name"]] = {split: d.num_rows for split, d in ds.items()}
    defaults = [c["config_name"] for c in meta["configs"] if c.get("default")]
    return loaded, defaults, meta


@pytest.fixture
def stages(cli, repo, tmp_path):
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    assert cli("split", tmp_path / "pairs", "-o", tmp_path / "splits").exit_code == 0
    rollouts = write_rollouts(tmp_path / "rollouts", {f"p{i}": (4 - i % 4, [4 - i % 4, 1, 2, 4]) for i in range(12)})
    assert cli("make-prefs", rollouts, "-o", tmp_path / "prefs", "--no-teacher").exit_code == 0
    assert cli("label-difficulty", rollouts, "-o", tmp_path / "difficulty").exit_code == 0
    from toolkit.core.stagefolder import write_manifest

    for stage, extra in (("score", {}), ("eval", {"pred_grade": [4, 1]}), ("retrieve", {"rule_ids": [["R1", "R2"], ["R3"]]})):
        folder = tmp_path / stage
        folder.mkdir()
        files = {"score": ["predictions"], "eval": ["predictions"], "retrieve": ["train", "dev"]}[stage]
        for name in files:
            pl.DataFrame({"pair_id": ["a", "b"], "grade": [4, 2], "split": [name] * 2, "grade_probs": [[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1]],
                          **extra}).write_parquet(folder / f"{name}.parquet")
        write_manifest(folder, stage, {}, {}, {"pairs": 2})
    return tmp_path


def _rows(path):
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def test_every_stage_folder_loads_config_by_config(stages, tmp_path):
    cache = tmp_path / "cache"
    expect = {
        "pairs": ({"default": {"train": 109}}, "default"),
        "splits": ({"default": {"train": _rows(stages / "splits/train.parquet"), "validation": _rows(stages / "splits/dev.parquet"),
                                "test": _rows(stages / "splits/test.parquet")}}, "default"),
        "rollouts": ({"rollouts": {"train": 48}, "prompts": {"train": 12}}, "rollouts"),
        "prefs": ({name: {"train": _rows(p)} for name, p in ((p.stem, p) for p in (stages / "prefs").glob("*.parquet"))}, "preferences"),
        "difficulty": ({"grpo": {"train": _rows(stages / "difficulty/grpo.parquet")}, "difficulty": {"train": 12}}, "grpo"),
        "score": ({"default": {"train": 2}}, "default"),
        "eval": ({"default": {"train": 2}}, "default"),
        "retrieve": ({"default": {"train": 2, "validation": 2}}, "default"),
    }
    for stage, (configs, default) in expect.items():
        folder = build_hub_folder(PushConfig(folder=str(stages / stage), repo_id=f"me/{stage}"))
        loaded, defaults, meta = _load_every_config(folder, cache)
        assert loaded == configs and defaults == [default], stage
        assert meta["task_categories"] == (["text-generation"] if stage in ("rollouts", "prefs", "difficulty") else ["text-classification"]), stage
        assert "pretty_name" in meta


def test_gen_cot_folder_has_sft_as_default_and_no_local_path_in_its_card(cli, repo, tmp_path, tiny_model_dir):
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    r = cli("gen-cot", tmp_path / "pairs", "--model", tiny_model_dir, "--split", "", "--limit", "4", "--step-tokens", "2", "--dtype", "float32",
            "-o", tmp_path / "cot")
    assert r.exit_code == 0, r.stderr
    folder = build_hub_folder(PushConfig(folder=str(tmp_path / "cot"), repo_id="me/cot", license="other"))
    loaded, defaults, meta = _load_every_config(folder, tmp_path / "cache")
    sft, rejects = _rows(tmp_path / "cot/sft.parquet"), _rows(tmp_path / "cot/rejects.parquet")
    assert sft + rejects == 4
    assert loaded == {k: {"train": n} for k, n in (("sft", sft), ("rejects", rejects)) if n}  # an empty kind is in the card's table only
    assert defaults == ["sft" if sft else "rejects"]
    card = (folder / "README.md").read_text()
    assert str(tiny_model_dir) not in card and f"`{tiny_model_dir.name}`" in card  # the teacher by name, not by this machine's path
    assert meta["license"] == "other" and meta["license_name"] and (folder / meta["license_link"]).exists()


def test_two_upload_folders_never_share_datasets_cache_entries(stages, tmp_path):
    cache = tmp_path / "cache"
    a = build_hub_folder(PushConfig(folder=str(stages / "pairs"), repo_id="me/a"))
    b = build_hub_folder(PushConfig(folder=str(stages / "difficulty"), repo_id="me/b"))
    assert a.name != b.name
    assert _load_every_config(a, cache)[0] == {"default": {"train": 109}}
    assert _load_every_config(b, cache)[0]["difficulty"] == {"train": 12}
    again = build_hub_folder(PushConfig(folder=str(stages / "pairs"), repo_id="me/a"))
    assert again == a and [p.name for p in (stages / "pairs").glob(".hub*")] == [a.name]  # one build per folder, replaced


def test_dry_run_builds_where_o_says(cli, stages, tmp_path):
    r = cli("push", stages / "splits", "--repo", "me/s", "--dry-run", "-o", tmp_path / "upload")
    assert r.exit_code == 0, r.stderr
    assert str(tmp_path / "upload") in r.stdout and (tmp_path / "upload/README.md").exists()
    assert not list((stages / "splits").glob(".hub*"))


def test_ingest_reads_a_dataset_in_the_hub_layout_back(cli, stages, tmp_path):
    """What `push` publishes comes back through `toolkit ingest` (a local folder in the Hub layout, read with `datasets`)."""
    assert cli("push", stages / "splits", "--repo", "me/s", "--dry-run", "-o", tmp_path / "upload").exit_code == 0
    r = cli("ingest", tmp_path / "upload", "-o", tmp_path / "back")
    assert r.exit_code == 0, r.stderr
    back = pl.read_parquet(tmp_path / "back/pairs.parquet")
    orig = pl.concat([pl.read_parquet(p) for p in (stages / "splits").glob("*.parquet")])
    assert back.height == orig.height == 109
    assert set(zip(back["pair_id"], back["grade"], back["split"])) == set(zip(orig["pair_id"], orig["grade"], orig["split"]))
    assert read_manifest_source(tmp_path / "back") == "upload"


def read_manifest_source(folder):
    return pl.read_parquet(folder / "pairs.parquet")["source"].unique().to_list()[0]


@pytest.mark.parametrize("uri,needle", [("hf://datasets/noslash", "write a Hub dataset as hf://datasets/OWNER/NAME"),
                                        ("hf://datasets/me/none@round-1", "cannot load it with `datasets`")])
def test_a_hub_dataset_that_cannot_be_read_is_one_line(cli, tmp_path, uri, needle):
    from checks import one_line_error

    one_line_error(cli("ingest", uri, "-o", tmp_path / "p"), uri, needle)
    assert not (tmp_path / "p").exists()
