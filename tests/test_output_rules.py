"""What `-o` may touch, and what a stage checks before it writes its first byte (issue 14).

- an existing -o folder is replaced only when empty (dot-files count) or holding this stage's own
  manifest; a user's files, `.ssh`, a lone `shards/` folder are a one-line error and stay untouched;
- `-o .`, `-o ..`, the working folder, an ancestor of an input, a folder inside an input: one-line errors;
- a second run on a folder another run holds fails at once, in one line; after the holder dies it runs;
- leftovers of killed runs (`.NAME.tmp-PID`, `.NAME.old-PID`, `.FILE.tmp-PID`) are removed by the next run;
- a missing or damaged model leaves no folder behind;
- pairs are checked against their grade scale wherever read; control characters and long fields are cleaned, counted.

Run: .venv/bin/python -m pytest tests/test_output_rules.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

from checks import one_line_error
from rollouts_data import write_rollouts
from toolkit.core import columns as C
from toolkit.core.stagefolder import MANIFEST, read_manifest

DEAD_PID = 2**22 + 12345  # above Linux's default pid_max of 4,194,304: never a live process


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_of_dot_files_is_not_empty(cli, tmp_path):
    rollouts = write_rollouts(tmp_path / "r", {"a": (4, [4, 1]), "b": (2, [1, 1])})
    home = tmp_path / "h"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/id_rsa").write_text("k")
    (home / ".bashrc").write_text("alias x=y")
    before = _tree(home)
    one_line_error(cli("make-prefs", rollouts, "-o", home, "--no-teacher"), "was not written by the toolkit", ".ssh", ".bashrc")
    assert _tree(home) == before and sorted(p.name for p in home.iterdir()) == [".bashrc", ".ssh"]


def test_a_folder_holding_only_a_users_shards_folder_is_refused(cli, repo, tmp_path):
    rollouts = write_rollouts(tmp_path / "r", {"a": (4, [4, 1]), "b": (2, [1, 1])})
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    mine = tmp_path / "mine"
    (mine / "shards").mkdir(parents=True)
    (mine / "shards/thesis.tex").write_text("mine")
    one_line_error(cli("make-prefs", rollouts, "-o", mine, "--no-teacher"), "was not written by the toolkit", "shards")
    one_line_error(cli("score", tmp_path / "pairs", "--model", tmp_path / "nowhere", "-o", mine), "was not written by the toolkit", "shards")
    one_line_error(cli("sample", tmp_path / "pairs", "--model", tmp_path / "nowhere", "-o", mine), "was not written by the toolkit")
    assert (mine / "shards/thesis.tex").read_text() == "mine" and [p.name for p in mine.iterdir()] == ["shards"]


def test_a_file_as_o_is_refused(cli, repo, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    one_line_error(cli("ingest", repo / "demo/pairs.jsonl", "-o", f), "is a file, not a folder")
    assert f.read_text() == "mine"


@pytest.mark.parametrize("where", [".", "..", "{cwd}", "{parent}"])
def test_o_is_never_the_working_folder_or_above_it(cli, repo, tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    target = where.format(cwd=work, parent=tmp_path)
    one_line_error(cli("ingest", repo / "demo/pairs.jsonl", "-o", target), "-o is the working folder or a folder above it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and [p.name for p in work.iterdir()] == ["keep.txt"]


def test_o_never_holds_or_lies_inside_an_input(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "data/pairs")
    before = _tree(tmp_path / "data")
    one_line_error(cli("split", tmp_path / "data/pairs", "-o", tmp_path / "data"), "-o is or holds the input")
    one_line_error(cli("split", tmp_path / "data/pairs", "-o", tmp_path), "-o is or holds the input")
    one_line_error(cli("split", tmp_path / "data/pairs", "-o", tmp_path / "data/pairs/splits"), "lies inside the input folder")
    one_line_error(cli("split", tmp_path / "data/pairs/pairs.parquet", "-o", tmp_path / "data/pairs/pairs.parquet"), "-o is or holds the input")
    assert _tree(tmp_path / "data") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left behind


def _hold(folder, seconds=60):
    """A second process that claims `folder` as a stage would and holds it."""
    code = textwrap.dedent(f"""
        import time
        from toolkit.core.stagefolder import claim_output
        with claim_output({str(folder)!r}, "split"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_on_a_held_folder_fails_at_once_and_runs_after(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    holder = _hold(tmp_path / "splits")
    try:
        t = time.monotonic()
        one_line_error(cli("split", tmp_path / "pairs", "-o", tmp_path / "splits"), "another toolkit run", f"pid {holder.pid}", "is writing this folder")
        assert time.monotonic() - t < 10
        assert not (tmp_path / "splits").exists()
    finally:
        holder.kill()
        holder.wait()
    r = cli("split", tmp_path / "pairs", "-o", tmp_path / "splits")  # the kernel released the dead holder's lock
    assert r.exit_code == 0, r.stderr
    assert read_manifest(tmp_path / "splits")["stage"] == "split"


def test_two_runs_at_once_one_writes_the_other_fails_cleanly(repo, tmp_path):
    toolkit = [sys.executable, "-m", "toolkit"]
    subprocess.run([*toolkit, "ingest", str(repo / "demo/pairs.jsonl"), "-o", str(tmp_path / "pairs")], check=True, capture_output=True)
    out = tmp_path / "splits"
    for _ in range(3):
        procs = [subprocess.Popen([*toolkit, "split", str(tmp_path / "pairs"), "-o", str(out), "--seed", str(s), "--force"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
        results = [(p.wait(), p.stderr.read()) for p in procs]
        assert any(rc == 0 for rc, _ in results), results
        for rc, err in results:
            if rc:
                lines = err.strip().splitlines()
                assert len(lines) == 1 and "another toolkit run" in lines[0], err
        m = read_manifest(out)
        assert m["stage"] == "split" and all(pl.read_parquet(out / f).height for f in m["outputs"] if f.endswith(".parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs", "splits"]


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    for name in (f".splits.tmp-{DEAD_PID}", f".splits.old-{DEAD_PID}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.parquet").write_bytes(b"half")
    (tmp_path / ".splits.tmp-1").mkdir()  # pid 1 is alive: another (older) toolkit's work in progress, left alone
    (tmp_path / ".other.tmp-77").mkdir()  # another folder's: not ours to judge
    assert cli("split", tmp_path / "pairs", "-o", tmp_path / "splits").exit_code == 0
    (tmp_path / "splits" / f".train.parquet.tmp-{DEAD_PID}").write_bytes(b"half")
    assert cli("split", tmp_path / "pairs", "-o", tmp_path / "splits", "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-77", ".splits.tmp-1", "pairs", "splits"]
    assert not [p for p in (tmp_path / "splits").iterdir() if p.name.startswith(".train")]


def test_a_missing_or_damaged_model_leaves_nothing_behind(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    one_line_error(cli("score", tmp_path / "pairs", "--model", "/nonexistent", "-o", tmp_path / "x"), "/nonexistent")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama",')
    for stage in ("score", "sample", "gen-cot"):
        one_line_error(cli(stage, tmp_path / "pairs", "--model", broken, "--split", "", "-o", tmp_path / "x"), "config.json: not valid JSON", "damaged")
    (broken / "config.json").write_text("[1, 2]")
    one_line_error(cli("score", tmp_path / "pairs", "--model", broken, "-o", tmp_path / "x"), "not an object")
    assert not (tmp_path / "x").exists()


def test_push_never_empties_a_build_dir_it_did_not_build(cli, repo, tmp_path):
    from toolkit.core.errors import UserError
    from toolkit.hub import PushConfig, build_hub_folder

    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    mine = tmp_path / "mine"
    (mine / ".git").mkdir(parents=True)
    (mine / ".git/HEAD").write_text("ref")
    cfg = lambda build: PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/x", build_dir=str(build))  # noqa: E731
    with pytest.raises(UserError, match="was not built by `toolkit push`.*[.]git"):
        build_hub_folder(cfg(mine))
    assert (mine / ".git/HEAD").read_text() == "ref"
    with pytest.raises(UserError, match="-o is or holds the input"):
        build_hub_folder(cfg(tmp_path))
    assert (build_hub_folder(cfg(tmp_path / "b")) / "README.md").exists()
    assert (build_hub_folder(cfg(tmp_path / "b")) / "README.md").exists()  # its own build: replaced


# -- pairs: one check wherever they are read --------------------------------------------------


def _pairs_file(tmp_path, grades, name="p.parquet", **cols):
    n = len(grades)
    df = pl.DataFrame({C.QUERY: cols.get("query", [f"q{i}" for i in range(n)]), C.TITLE: cols.get("title", [f"item {i}" for i in range(n)]),
                       C.PAIR_ID: [f"p{i}" for i in range(n)], C.GRADE: grades})
    path = tmp_path / name
    df.write_parquet(path)
    return path


@pytest.mark.parametrize("grades,shown", [([4, 9, 1], "9"), (["4", "Excellent", "1"], "'Excellent'"), ([4.0, 2.5, 1.0], "2.5"), ([4, None, 1], "None")])
def test_split_refuses_grades_off_the_scale(cli, tmp_path, grades, shown):
    f = _pairs_file(tmp_path, grades)
    one_line_error(cli("split", f, "-o", tmp_path / "s"), f"{f}: row 2 has grade {shown}", "scale `taosr4`", "--grade-map")
    assert not (tmp_path / "s").exists()


def test_string_grades_that_are_integers_are_written_as_integers(cli, tmp_path):
    f = _pairs_file(tmp_path, ["4", "3", "1", "2"])
    assert cli("split", f, "-o", tmp_path / "s", "--fractions", "train=0.5,test=0.5").exit_code == 0
    df = pl.concat([pl.read_parquet(p) for p in (tmp_path / "s").glob("*.parquet")])
    assert df.schema[C.GRADE] == pl.Int64 and sorted(df[C.GRADE].to_list()) == [1, 2, 3, 4]


def test_grades_are_checked_by_every_stage_that_reads_pairs(cli, tmp_path):
    f = _pairs_file(tmp_path, [4, 7])
    for args in (["score", f, "--model", tmp_path / "nowhere"], ["sample", f, "--model", tmp_path / "nowhere"], ["gen-cot", f, "--model", tmp_path / "nowhere"]):
        one_line_error(cli(*args, "-o", tmp_path / "o"), "row 2 has grade 7")
    assert not (tmp_path / "o").exists()


def test_ingest_removes_control_characters_and_cuts_long_fields_counted(cli, tmp_path):
    rows = [
        {"query": "red\x00 shoe", "title": "Shoe\x07 red", "grade": "4"},
        {"query": "q" * 5000, "title": "t", "grade": "3"},
        {"query": "blue shoe", "title": "Shoe blue\x7f", "grade": "1", "attributes": json.dumps({f"k{i}": "v" * 30 for i in range(200)})},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("ingest", src, "-o", tmp_path / "pairs", "--max-field-chars", "1000")
    assert r.exit_code == 0, r.stderr
    caplog = r.stderr
    df = pl.read_parquet(tmp_path / "pairs/pairs.parquet")
    assert df[C.QUERY].to_list() == ["red shoe", "q" * 1000, "blue shoe"]
    assert df[C.TITLE].to_list() == ["Shoe red", "t", "Shoe blue"]
    attrs = json.loads(df[C.ATTRIBUTES][2])  # still a JSON object, whole keys dropped from its end
    assert 0 < len(attrs) < 200 and len(df[C.ATTRIBUTES][2]) <= 1000 and all(v == "v" * 30 for v in attrs.values())
    counts = read_manifest(tmp_path / "pairs")["counts"]
    assert counts["control_chars_removed"] == {"query": 1, "title": 2} and counts["control_chars"] == ["DEL", "NUL", "U+0007"]
    assert counts["truncated_fields"] == {"query": 1, "attributes": 1}
    assert "removed 3 control character(s) (DEL, NUL, U+0007)" in caplog
    assert "cut 2 field(s) longer than 1000 characters" in caplog and "--max-field-chars" in caplog
    one_line_error(cli("ingest", src, "-o", tmp_path / "p2", "--max-field-chars", "0"), "--max-field-chars must be at least 1")


def test_a_hand_written_pairs_file_is_cleaned_on_read_with_a_warning(cli, tmp_path):
    f = _pairs_file(tmp_path, [4, 1], query=["a\x00b", "c" * 30000])
    r = cli("split", f, "-o", tmp_path / "s", "--fractions", "train=1.0")
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(tmp_path / "s/train.parquet")
    assert sorted(df[C.QUERY].str.len_chars().to_list()) == [2, 20000] and "ab" in df[C.QUERY].to_list()
    assert "removed 1 control character(s) (NUL)" in r.stderr


def test_an_oversized_query_line_is_ingested_cut(cli, tmp_path):
    src = tmp_path / "big.csv"
    src.write_text("query,title,grade\n" + "x" * 10_000_000 + ",t,4\nq,t2,1\n")
    r = cli("ingest", src, "-o", tmp_path / "pairs")
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(tmp_path / "pairs/pairs.parquet")
    assert df[C.QUERY].str.len_chars().max() == 20000
    assert read_manifest(tmp_path / "pairs")["counts"]["truncated_fields"] == {"query": 1}
    assert (tmp_path / "pairs" / MANIFEST).exists()


def test_a_split_the_pairs_do_not_have_is_an_error_unless_they_are_not_split(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    cli("split", tmp_path / "pairs", "-o", tmp_path / "splits")
    one_line_error(cli("score", tmp_path / "splits", "--model", tmp_path / "nowhere", "--split", "nosuch", "-o", tmp_path / "o"),
                   "no rows with split 'nosuch'", "dev, test, train")
    from toolkit.core.pairs import load_pairs

    assert load_pairs(tmp_path / "pairs", "train").height == 109  # not split yet: every row
    assert set(load_pairs(tmp_path / "splits", "dev")[C.SPLIT]) == {"dev"}
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,needle", [
    (["score", "p", "--mode", "nonsense"], "Invalid value for '--mode'"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["split", "p", "--bogus"], "No such option '--bogus'"),
    (["train", "nosuch"], "No such command 'nosuch'"),
])
def test_a_bad_flag_or_value_is_one_line_naming_the_help(cli, args, needle):
    r = cli(*args)
    one_line_error(r, needle, "--help`")
    assert r.exit_code == 2
