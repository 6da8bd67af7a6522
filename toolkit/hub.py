"""`toolkit push`: publish a stage's dataset to the Hugging Face Hub with a generated card.

The folder to upload is built locally first (`build_hub_folder`): the stage's Parquet files
under `data/` (one file per split where the stage has splits, else `train`), its config and
manifest under `toolkit/`, and a README.md dataset card whose YAML header declares the
configs/splits, license, tags and size category. Then `upload` creates the repository
(private by default) and uploads the folder in one commit with `huggingface_hub.HfApi`;
the token comes from the environment (HF_TOKEN) or the local Hugging Face login.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import UserError, missing_extra, redact
from toolkit.core.options import opt
from toolkit.core.stagefolder import Key, CONFIG, MANIFEST, check_output_path, listing, read_manifest

log = logging.getLogger(__name__)

REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
SPLIT_NAMES = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}
# The config a trainer (or the next stage) reads, where a stage writes files of several kinds: the card's default.
DEFAULT_CONFIG = {"gen-cot": "sft", "sample": "rollouts", "make-prefs": "preferences", "label-difficulty": "grpo"}
# Hub task categories by stage: TRL-ready training data is text generation, graded pairs are classification.
TASKS = {"gen-cot": ["text-generation"], "make-prefs": ["text-generation"], "label-difficulty": ["text-generation"],
         "sample": ["text-generation"]}
# What produced each stage's data, for the card.
STAGE_TEXT = {
    "ingest": "canonical query–item pairs with gold relevance grades",
    "split": "query–item pairs split by query group into train/dev/test",
    "gen-cot": "chain-of-thought SFT data: teacher rationales that agree with the gold grade, label first "
               "(TRL prompt/completion)",
    "sample": "pass@N rollouts of a policy model, parsed and graded against gold",
    "make-prefs": "DPO preference pairs built from pass@N rollouts (TRL prompt/chosen/rejected)",
    "label-difficulty": "pass-rate difficulty labels and the class-balanced GRPO training set",
    "score": "first-token grade probabilities of a model",
    "eval": "model predictions with evaluation metrics",
}


@dataclass
class PushConfig:
    folder: str
    repo_id: str = opt(flags=("--repo",), help="Hub dataset repository, owner/name.")
    private: bool = opt(True, flags=("--public",), negate=True, help="Make the repository public (default: private).")
    # the source data's license (SPDX id or "other")
    license: str | None = opt(None, flags=("--license",), param="license_",
                              help="License of the source data (SPDX id, e.g. apache-2.0, mit; or other).")
    source_license_note: str | None = opt(None, flags=("--license-note",), param="license_note",
                                          help="One paragraph on the source data and its terms, for the card.")
    token_env: str = opt("HF_TOKEN", show_default=True,
                         help="Environment variable holding the Hub token (else your `hf auth login`).")
    # default: <folder>/.hub-<stage>-<content id>
    build_dir: str | None = opt(None, flags=("-o", "--out"), type="path",
                                help="Where to build the upload folder (default: FOLDER/.hub-STAGE-ID); "
                                     "replaced only if push built it.")
    dry_run: bool = opt(False, help="Build the upload folder (Parquet + README card) and stop.")
    revision: str | None = opt(None, help="Branch to commit to (created from main when missing); default: main.")
    tag: str | None = opt(None, help="Tag the new commit (e.g. round-3 after a review round, v1): consumers pin "
                                     "load_dataset(repo, revision=TAG).")
    create_pr: bool = opt(False, help="Open a pull request with the commit instead of committing "
                                      "(for teams that review data changes).")
    eval_dir: str | None = opt(None, flags=("--eval",), type="path",
                               help="[model] A `toolkit eval` folder: its metrics go into the model card.")
    tiers_dir: str | None = opt(None, flags=("--tiers",), type="path",
                                help="[model] A `toolkit tier fit` folder: its CumPT β goes into the model card.")
    data_repos: list[str] = opt(default_factory=list, flags=("--data-repo",), multiple=True,  # owner/name[@revision]
                                help="[model] A Hub dataset it was trained on, owner/name[@revision] (repeatable).")

    def __post_init__(self):
        for flag, value in (("--revision", self.revision), ("--tag", self.tag)):
            if value is not None and not REF_NAME.match(value):
                raise UserError(f"{flag} {value!r}: use letters, digits and . _ - / only (e.g. round-3, v1)")
        if self.tag and self.create_pr:
            raise UserError("--tag and --create-pr do not go together: tag the commit once the pull request is merged")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _parquet_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise UserError(f"{folder}: no Parquet files to publish; pass a stage output folder")
    return files


BUILD_MARK = ".toolkit-hub-build"  # in a folder `toolkit push` built: the next push may replace it


def _replace_build_dir(out: Path, src: Path, given: bool) -> None:
    """Empty the upload folder for a new build: only a folder push built before (its mark) or an empty one is
    replaced."""
    if given:
        check_output_path(out, [src])
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a folder; pass another --build-dir")
    if out.is_dir() and any(out.iterdir()) and not (out / BUILD_MARK).exists():
        raise UserError(f"{out}: this folder exists and was not built by `toolkit push` "
                        f"(it holds {listing([p.name for p in out.iterdir()])}); "
                        "pass another --build-dir, or empty it first")
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    (out / BUILD_MARK).write_text("built by toolkit push; the next push replaces this folder\n", encoding="utf-8")


def _configs(files: list[Path], stage: str) -> dict[str, dict[str, Path]]:
    """config name -> split -> file. Files of one schema are the splits of one `default` config (a split
    folder: train/validation/test); files of different schemas are a config each, named by the file
    (`sft` / `rejects`; always so for the stages that write several kinds), the one the next stage reads first (the
    card's default)."""
    import polars as pl

    schemas = {p: tuple(pl.read_parquet_schema(p)) for p in files}
    # a stage of several kinds names them even when one is there
    if len(set(schemas.values())) == 1 and stage not in DEFAULT_CONFIG:
        one = len(files) == 1
        return {"default": {("train" if one else SPLIT_NAMES.get(p.stem, p.stem)).replace("-", "_"): p for p in files}}
    first = DEFAULT_CONFIG.get(stage)
    ordered = sorted(files, key=lambda p: (p.stem != first, p.stem))
    return {p.stem.replace("-", "_"): {"train": p} for p in ordered}


def shown_name(value) -> str:
    """A model or teacher for a card: a hub id as it is, a local folder by its name only (no paths of the
    machine that made it)."""
    p = Path(str(value))
    return p.name if p.is_absolute() or len(p.parts) > 2 or str(value).startswith(".") or p.exists() else str(value)


def card_license(cfg: "PushConfig", out: Path, what: str) -> dict:
    """The card's license fields; with `other`, a LICENSE.md the card links to (the --license-note, else a caution)."""
    license_ = cfg.license or "other"
    if license_ != "other":
        return {"license": license_}
    (out / "LICENSE.md").write_text("# License\n\n" + (cfg.source_license_note or f"The license of the {what} was not "
                                    f"stated when this was published; check the {what}'s terms before reuse.") + "\n",
                                    encoding="utf-8")
    return {"license": license_, "license_name": "source-data-terms", "license_link": "LICENSE.md"}


def default_build_dir(src: Path, manifest: dict) -> Path:
    """`<stage folder>/.hub-<stage>-<content id>`: a name of its own for each content, since `datasets` caches a local
    folder by its name and config (two folders both named `.hub` loaded as one); earlier builds in `src` are
    removed."""
    ident = manifest.get("fingerprint") or hashlib.sha256(str(src.resolve()).encode()).hexdigest()
    out = src / f".hub-{manifest.get('stage', 'dataset').replace(' ', '-')}-{ident[:10]}"
    for old in src.glob(".hub*"):
        if old != out and old.is_dir() and ((old / BUILD_MARK).exists() or old.name == ".hub"):
            shutil.rmtree(old, ignore_errors=True)
    return out


def build_hub_folder(cfg: PushConfig) -> Path:
    """Assemble the exact files that will be uploaded; returns the folder."""
    import polars as pl
    import yaml

    src = Path(cfg.folder)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder; pass a stage output folder (e.g. out/demo/cot)")
    if not cfg.repo_id or cfg.repo_id.count("/") != 1:
        raise UserError(f"--repo {cfg.repo_id!r} must be owner/name")
    manifest = read_manifest(src) or {}
    stage = manifest.get("stage", "dataset")
    out = Path(cfg.build_dir) if cfg.build_dir else default_build_dir(src, manifest)
    from toolkit.model_card import build_model_folder, is_checkpoint

    if is_checkpoint(src, manifest):
        _replace_build_dir(out, src, given=bool(cfg.build_dir))
        build_model_folder(src, out, cfg, manifest)
        (out / "data").rmdir()  # a model has no data/ folder
        return out
    if cfg.eval_dir or cfg.tiers_dir or cfg.data_repos:
        raise UserError(f"{src}: --eval, --tiers and --data-repo describe a model; this folder holds the output of "
                        f"`toolkit {stage}`, not a checkpoint")
    _replace_build_dir(out, src, given=bool(cfg.build_dir))
    configs, counts = [], {}
    for name, split_files in _configs(_parquet_files(src), stage).items():
        data_files = []
        for split, p in split_files.items():
            rows = counts[split if name == "default" else f"{name} / {split}"] = (
                pl.scan_parquet(p).select(pl.len()).collect().item())
            if not rows:
                continue  # `datasets` cannot load an empty split: the card's table shows it with 0 rows
            rel = (f"data/{split}-00000-of-00001.parquet" if name == "default"
                   else f"data/{name}/{split}-00000-of-00001.parquet")
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / rel)
            data_files.append({"split": split, "path": rel.replace("-00000-of-00001.parquet", "-*.parquet")})
        if data_files:
            configs.append({"config_name": name, "data_files": data_files,
                            **({"default": True} if not configs else {})})
    if not configs:
        raise UserError(f"{src}: every Parquet file is empty; nothing to publish")
    for name in (MANIFEST, CONFIG, "stats.json"):
        if (src / name).exists():
            (out / "toolkit").mkdir(exist_ok=True)
            shutil.copyfile(src / name, out / "toolkit" / name)
    meta = {
        "pretty_name": f"{cfg.repo_id.split('/')[1]} ({stage})",
        "configs": configs,
        **card_license(cfg, out, "source data"),
        "tags": ["search-relevance", "e-commerce", "taosr1", f"toolkit-{stage}"],
        "size_categories": [_size_category(sum(counts.values()))],
        "task_categories": TASKS.get(stage, ["text-classification"]),
    }
    card = ("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
            + _card_body(cfg, stage, manifest, counts, src, configs))
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


def _config_arg(configs: list[dict]) -> str:
    """The load_dataset argument naming the default config, when it is not called `default`."""
    name = next((c["config_name"] for c in configs if c.get("default")), "default")
    return "" if name == "default" else f', "{name}"'


def _card_body(cfg: PushConfig, stage: str, manifest: dict, counts: dict, src: Path, configs: list[dict]) -> str:
    c = manifest.get("counts", {})
    lines = [
        f"# {cfg.repo_id.split('/')[1]}",
        "",
        f"{STAGE_TEXT.get(stage, 'a dataset')}, produced by the `toolkit {stage}` stage of taosr-toolkit "
        "(a TaoSR1-style toolkit for e-commerce search relevance).",
        "",
        "## Rows",
        "",
        "| config / split | rows |" if any(" / " in k for k in counts) else "| split | rows |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in counts.items()],
        "",
    ]
    grades = c.get("grades") or c.get("kept_by_grade") or _grades_from_splits(c)
    scale = manifest.get(Key.GRADE_SCALE)
    if grades:
        names = {str(g["value"]): g["name"] for g in scale["grades"]} if scale else {}
        lines += ["## Grade distribution", "", "| grade | rows |", "|---|---:|"]
        lines += [f"| {g} {names.get(str(g), '')} | {n} |" for g, n in grades.items()] + [""]
    drops = {k: v for k, v in {**c, **(c.get("dropped") or {})}.items()
             if (k.startswith("dropped_") or k in (c.get("dropped") or {})) and isinstance(v, int) and v}
    if drops:
        lines += (["## Dropped rows", "", "| reason | rows |", "|---|---:|"]
                  + [f"| {k} | {v} |" for k, v in drops.items()] + [""])
    lines += [
        "## How it was made",
        "",
        f"- stage: `{stage}`, toolkit version {manifest.get('toolkit_version', '?')}, "
        f"created {manifest.get('created', '?')}",
    ]
    if manifest.get("review_round") is not None:
        lines.append(f"- review round: {manifest['review_round']}")
    for key in ("model", "teacher"):
        if manifest.get(key):
            lines.append(f"- {key}: `{shown_name(manifest[key])}`")
    if scale:
        lines.append("- grade scale: " + ", ".join(f"{g['label']} = {g['name']}" for g in scale["grades"]))
    inputs = manifest.get("inputs") or {}
    if inputs:
        lines.append("- inputs (sha256): " + ", ".join(f"`{Path(k).name}` {v[:12]}" for k, v in inputs.items()))
    lines += [
        "- the resolved stage config is in `toolkit/config.yaml`, the full manifest in `toolkit/manifest.json`",
        "",
        "## Loading a version",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{cfg.repo_id}"{_config_arg(configs)}, '
        f'revision="{cfg.tag or cfg.revision or "main"}")  # a tag pins one version',
        "```",
        "",
        "## Source data and license",
        "",
        (cfg.source_license_note
         or f"License of the source data: {cfg.license or 'not stated — check the source before reuse'}."),
        "",
    ]
    return "\n".join(lines)


def _grades_from_splits(c: dict) -> dict:
    out: dict[str, int] = {}
    for s in (c.get("splits") or {}).values():
        for g, n in (s.get("grades") or {}).items():
            out[g] = out.get(g, 0) + n
    return out


@dataclass
class Uploaded:
    url: str  # the commit (or pull request) URL
    changed: bool  # False: the branch already held these exact files, and no commit was made


def repo_type(folder: Path) -> str:
    """A built upload folder holds a model (its config.json) or a dataset."""
    return "model" if (Path(folder) / "config.json").exists() else "dataset"


def upload(folder: Path, cfg: PushConfig, api=None) -> Uploaded:
    """Create the repo (private by default) and upload `folder` in one commit (none when nothing changed;
    huggingface_hub skips unchanged files and empty commits); tag it if asked."""
    import os

    if api is None:
        try:
            from huggingface_hub import HfApi, get_token
        except ImportError:
            raise missing_extra("hub", "huggingface_hub") from None
        from toolkit.core.progress import quiet_libraries

        quiet_libraries()
        token = os.environ.get(cfg.token_env) or get_token()
        if not token:
            raise UserError(f"no Hugging Face token: set ${cfg.token_env} (or name another variable with "
                            "--token-env), or log in with `hf auth login`; nothing was uploaded")
        api = HfApi(token=token)
    step = "upload"
    kind = repo_type(folder)
    try:
        api.create_repo(repo_id=cfg.repo_id, repo_type=kind, private=cfg.private, exist_ok=True)
        if cfg.revision and not cfg.create_pr:
            api.create_branch(repo_id=cfg.repo_id, branch=cfg.revision, repo_type=kind, exist_ok=True)
        head = None if cfg.create_pr else getattr(
            api.repo_info(repo_id=cfg.repo_id, repo_type=kind, revision=cfg.revision), "sha", None)
        info = api.upload_folder(
            repo_id=cfg.repo_id, repo_type=kind, folder_path=str(folder), revision=cfg.revision,
            create_pr=cfg.create_pr or None, commit_message=f"Upload {Path(cfg.folder).name} with taosr-toolkit",
            ignore_patterns=[BUILD_MARK],
            delete_patterns=["data/*.parquet"] if kind == "dataset" else ["*.safetensors", "*.bin"],
        )
        if cfg.tag:
            step = "tag"
            api.create_tag(repo_id=cfg.repo_id, tag=cfg.tag, revision=getattr(info, "oid", None) or cfg.revision,
                           repo_type=kind, tag_message=f"{Path(cfg.folder).name} published with taosr-toolkit")
    except Exception as e:  # network, auth, permissions, an existing tag: one line with the cause
        if isinstance(e, UserError):
            raise
        msg = redact(str(e), _tokens(cfg, api)).strip()  # masked before the cut
        msg = msg.splitlines()[0] if msg else type(e).__name__
        if step == "tag":
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status == 409 or "already exists" in msg:
                raise UserError(f"{cfg.repo_id}: tag {cfg.tag!r} already exists "
                                f"(the data was uploaded: {getattr(info, 'commit_url', info)}); "
                                "a tag pins one version — pick a new one, e.g. round-4") from None
        raise UserError(f"{step} to {cfg.repo_id} failed: {msg[:200]}; check the token in ${cfg.token_env} "
                        "and your network") from None
    url = str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
    return Uploaded(url, changed=head is None or getattr(info, "oid", None) != head)


def _tokens(cfg: PushConfig, api) -> list:
    """Every Hub token this upload may have sent: the environment's, the client's and the local login's."""
    import os

    tokens = [os.environ.get(cfg.token_env), os.environ.get("HF_TOKEN"), getattr(api, "token", None)]
    try:
        from huggingface_hub import get_token

        tokens.append(get_token())
    except Exception:  # not installed, or no readable login
        pass
    return [t for t in tokens if isinstance(t, str)]


def push(cfg: PushConfig, api=None) -> tuple[Path, Uploaded | None]:
    """Build the upload folder and upload it. The folder stays after a dry run or at -o; built inside the stage
    folder for an upload, it goes once the upload is done or refused (nothing is left behind)."""
    folder = build_hub_folder(cfg)
    if cfg.dry_run:
        return folder, None
    try:
        return folder, upload(folder, cfg, api)
    finally:
        if not cfg.build_dir:
            shutil.rmtree(folder, ignore_errors=True)


__all__ = ["PushConfig", "Uploaded", "build_hub_folder", "upload", "push"]
