"""`toolkit run pipeline.yaml`: the stages in order, each skipped when nothing it depends on changed.

A pipeline file:

    out: out/demo                 # each stage writes <out>/<stage name>
    stages:
      - name: pairs
        run: ingest               # any toolkit command ("train sft" for groups)
        args: [demo/pairs.jsonl]  # positional arguments; "{pairs}" is stage pairs' output folder
        options: {}               # --option values (underscores or hyphens; true -> a flag)
      - name: splits
        run: split
        args: ["{pairs}"]
        options: {fractions: "train=0.6,dev=0.2,test=0.2"}

A stage's fingerprint covers its command, arguments and options, the content of the files it
names (outside the pipeline), and the run stamps of the stages it refers to. It is recorded in
`<stage folder>/.pipeline.json` after the stage succeeds, with the identity of what the stage
wrote (its manifest's fingerprint and output hashes); a rerun skips a stage whose fingerprint is
unchanged and whose folder still holds that output (a stage run by hand into the same folder with
other options is noticed and redone). A stage that runs again gets a stamp made from what it wrote
(its manifest without the time, the config fingerprint, the input paths and the run's tallies), so the
stages after it run again only if its output changed: rebuilding an index from the same guideline moved
to another folder redoes that stage alone. A stage forced with `--redo`, or one without a manifest, gets
a new random stamp, and every stage after it runs again too. `out: false` on a stage means it writes no folder of its
own (e.g. `stats`); it then always runs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.core.stagefolder import atomic_write_text, input_hashes, read_manifest, sha256_json
from toolkit.core.stagefolder.objectstore import is_url, join, staging_dir

log = logging.getLogger(__name__)

RECORD = ".pipeline.json"
REF = re.compile(r"\{([A-Za-z0-9_\-]+)\}")


@dataclass
class Stage:
    name: str
    run: str
    args: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    out: bool = True

    def refs(self) -> list[str]:
        text = json.dumps([self.args, self.options])
        return sorted(set(REF.findall(text)))


@dataclass
class Pipeline:
    out: "Path | str"  # a local folder, or a storage URL (s3://...: toolkit.core.stagefolder.objectstore)
    stages: list[Stage]
    path: Path | None = None

    @classmethod
    def load(cls, path: "str | Path") -> "Pipeline":
        import yaml

        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such pipeline file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: invalid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
            raise UserError(f"{path}: a pipeline needs `out:` and a non-empty `stages:` list")
        stages, seen = [], set()
        for i, s in enumerate(data["stages"], 1):
            if not isinstance(s, dict) or "name" not in s or "run" not in s:
                raise UserError(f"{path}: stage #{i} needs `name` and `run`")
            unknown = set(s) - {"name", "run", "args", "options", "out"}
            if unknown:
                raise UserError(f"{path}: stage {s['name']!r} has unknown field(s) {', '.join(sorted(unknown))}; "
                                "allowed: name, run, args, options, out")
            st = Stage(str(s["name"]), str(s["run"]), [str(a) for a in s.get("args") or []],
                       dict(s.get("options") or {}), bool(s.get("out", True)))
            if st.name in seen:
                raise UserError(f"{path}: stage name {st.name!r} is used twice")
            for r in st.refs():
                if r not in seen:
                    raise UserError(f"{path}: stage {st.name!r} refers to {{{r}}}, which is not an earlier stage")
            _check_command(path, st)
            seen.add(st.name)
            stages.append(st)
        out = str(data.get("out", "out/pipeline"))
        return cls(out if is_url(out) else Path(out), stages, path)

    def folder(self, name: str) -> "Path | str":
        return join(self.out, name) if isinstance(self.out, str) else self.out / name

    def argv(self, st: Stage) -> list[str]:
        def fill(x: str) -> str:
            return REF.sub(lambda m: str(self.folder(m.group(1))), x)

        argv = st.run.split() + [fill(a) for a in st.args]
        for k, v in st.options.items():
            flag = "--" + str(k).replace("_", "-")
            if v is True:
                argv.append(flag)
            elif v is False or v is None:
                continue
            elif isinstance(v, list):
                for x in v:
                    argv += [flag, fill(str(x))]
            else:
                argv += [flag, fill(str(v))]
        if st.out:
            argv += ["-o", str(self.folder(st.name))]
        return argv


def _check_command(path: Path, st: Stage) -> None:
    """`run:` names a toolkit command; one that writes no folder needs `out: false`."""
    import click

    from toolkit.cli import cli

    cmd = cli
    for word in st.run.split():
        sub = cmd.commands.get(word) if isinstance(cmd, click.Group) else None
        if sub is None:
            raise UserError(f"{path}: stage {st.name!r} runs `toolkit {st.run}`, "
                            "which is not a toolkit command; see `toolkit --help`")
        cmd = sub
    if isinstance(cmd, click.Group):
        raise UserError(f"{path}: stage {st.name!r} runs `toolkit {st.run}`; "
                        f"name one of its commands: {', '.join(cmd.commands)}")
    if st.out and "out" not in {p.name for p in cmd.params}:
        raise UserError(f"{path}: stage {st.name!r}: `toolkit {st.run}` writes no output folder (it has no -o); "
                        "add `out: false` to the stage")


def _record(folder: Path) -> dict | None:
    p = folder / RECORD
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
    except (json.JSONDecodeError, OSError):
        return None


def output_id(manifest: dict | None) -> str | None:
    """What a stage folder holds, by its manifest (config fingerprint and output file hashes)."""
    return sha256_json({"fingerprint": manifest.get("fingerprint"),
                        "outputs": manifest.get("outputs")}) if manifest else None


def _holds_its_output(folder: Path, rec: dict) -> bool:
    m = read_manifest(folder)
    if m and any(not (folder / name).is_file() for name in m.get("outputs", {})):
        return False  # a file of the output was deleted
    return "output" not in rec or rec["output"] == output_id(m)  # records from before 2026-11-26 have no "output"


# how a stage was made, not what it holds (the output hashes say that): left out of its content stamp. `counts`
# are the run's tallies, e.g. build-index's embedded/reused
_HOW_MADE = ("created", "fingerprint", "inputs", "counts")


def content_stamp(manifest: dict | None) -> str | None:
    """What a stage folder holds, independent of where its inputs lived and when it ran: None without a manifest."""
    return (sha256_json({k: v for k, v in manifest.items() if k not in _HOW_MADE})
            if manifest and manifest.get("outputs") else None)


def fingerprint(pipe: Pipeline, st: Stage, stamps: dict[str, str]) -> str:
    files = []
    # a list option names several files
    values = [x for v in st.options.values() for x in (v if isinstance(v, list) else [v])]
    for a in st.args + [str(v) for v in values]:
        if REF.search(a):
            continue
        p = Path(a)
        if p.exists() and len(a) < 400:
            files.append(a)
    from toolkit import __version__  # a new toolkit version redoes every stage, as each stage's own fingerprint does

    d = {"argv": pipe.argv(st), "files": input_hashes(files) if files else {},
         "upstream": {r: stamps.get(r) for r in st.refs()}, "version": __version__}
    hub = _hub_models(st)
    if hub:  # a model given by hub id counts at the commit it names now: pushed again, the stage reruns
        from toolkit.core.stagefolder import model_inputs

        d["hub_model"] = {k: v for m in hub for k, v in model_inputs(m).items()}
    return sha256_json(d)


# the options whose weights a command loads (through toolkit.core.models.resolve_model), with the option that makes
# the name a served model's instead
LOADS_MODEL = {"score": {"model": "backend"}, "sample": {"model": "backend"}, "gen-cot": {"model": "backend"},
               "atomize": {"model": "backend"}, "make-prefs": {"teacher-model": "teacher-backend"},
               "train sft": {"model": None}, "train dpo": {"model": None}, "train grpo": {"model": None},
               "train baseline": {"model": None}, "build-index": {"model": None}}


def _hub_models(st: Stage) -> list[str]:
    from toolkit.core.stagefolder.remote import is_hub_model_id

    opts = {str(k).replace("_", "-"): v for k, v in st.options.items()}
    return [opts[name] for name, served in LOADS_MODEL.get(" ".join(st.run.split()), {}).items()
            if isinstance(opts.get(name), str) and not REF.search(opts[name])
            and not (served and opts.get(served) == "openai") and is_hub_model_id(opts[name])]


@dataclass
class StageOutcome:
    name: str
    status: str  # ran | skipped | failed
    seconds: float
    folder: "Path | str | None"


def executor_args(st: Stage, executor: str, address: str) -> list[str]:
    """`--executor ray --ray-address A` for a stage whose command takes them (gen-cot, sample, score, retrieve,
    build-index); none for the rest (the trainers keep `accelerate launch`). Not part of the fingerprint: where shards
    run changes no row."""
    if executor == "local":
        return []
    from toolkit.cli import cli

    cmd = cli
    for part in st.run.split():
        cmd = getattr(cmd, "commands", {}).get(part, cmd)
    if not any(p.name == "executor" for p in getattr(cmd, "params", [])):
        return []
    return ["--executor", executor, "--ray-address", address]


def run_pipeline(pipe: Pipeline, only: list[str] | None = None, invoke=None, echo=print, executor: str = "local",
                 ray_address: str = "auto") -> list[StageOutcome]:
    """Run the stages in order; `invoke(argv)` runs one toolkit command (default: in-process); `executor` ray runs
    the model stages' shards on the Ray cluster at `ray_address`."""
    invoke = invoke or _invoke
    stamps: dict[str, str] = {}
    outcomes = []
    for i, st in enumerate(pipe.stages, 1):
        folder = shown = pipe.folder(st.name) if st.out else None
        if isinstance(folder, str):  # on a storage URL: the run's record lives in the local staging folder
            folder = staging_dir(folder)
        fp = fingerprint(pipe, st, stamps)
        rec = _record(folder) if folder else None
        forced = bool(only) and st.name in only
        if (folder and rec and rec.get("fingerprint") == fp and folder.exists() and _holds_its_output(folder, rec)
                and not forced):
            stamps[st.name] = rec["stamp"]
            echo(f"[{i}/{len(pipe.stages)}] {st.name}: up to date, skipped")
            outcomes.append(StageOutcome(st.name, "skipped", 0.0, shown))
            continue
        argv = pipe.argv(st) + executor_args(st, executor, ray_address)
        echo(f"[{i}/{len(pipe.stages)}] {st.name}: toolkit {' '.join(argv)}")
        t0 = time.time()
        try:
            invoke(argv)
        except BaseException:
            outcomes.append(StageOutcome(st.name, "failed", time.time() - t0, shown))
            echo(summary_table(outcomes))
            raise
        manifest = read_manifest(folder) if folder else None
        stamp = (None if forced else content_stamp(manifest)) or uuid.uuid4().hex
        stamps[st.name] = stamp
        if folder:
            if not folder.exists():
                raise UserError(f"stage {st.name!r} ran but wrote no folder {folder}; "
                                f"does `toolkit {st.run}` take -o?")
            record = {"fingerprint": fp, "stamp": stamp, "seconds": round(time.time() - t0, 2),
                      "output": output_id(manifest)}
            atomic_write_text(folder / RECORD, json.dumps(record))
        outcomes.append(StageOutcome(st.name, "ran", time.time() - t0, shown))
    return outcomes


def _invoke(argv: list[str]) -> None:
    from toolkit.cli import cli

    cli.main(argv, prog_name="toolkit", standalone_mode=False)


def summary_table(outcomes: list[StageOutcome]) -> str:
    rows = [("stage", "status", "seconds", "output")] + [(o.name, o.status, f"{o.seconds:.1f}", str(o.folder or "-"))
                                                         for o in outcomes]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w[i]) if i != 2 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows)
