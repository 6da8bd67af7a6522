"""Inputs on the Hugging Face Hub: `hf://datasets/owner/name@revision` opens as a stage folder (fetched into the
toolkit cache and rebuilt from the published configs and toolkit/manifest.json), or as a dataset for
`toolkit ingest`; and the records `toolkit push` publishes beside a model (toolkit/manifest.json)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import polars as pl

from toolkit.core.errors import UserError
from toolkit.core.errors import missing_extra
from toolkit.core.stagefolder.manifest import MANIFEST

log = logging.getLogger(__name__)

def card_metadata(readme: "str | Path") -> dict:
    """The YAML header of a dataset card (for tests and checks)."""
    import yaml

    text = Path(readme).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise UserError(f"{readme}: no YAML header")
    return yaml.safe_load(text[4 : text.index("\n---", 4)])


# -- back in from the Hub ----------------------------------------------------------------------

HUB_URI = re.compile(r"^hf://datasets/(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
                     r"(?:@(?P<rev>[\w./-]+?))?(?::(?P<config>[\w.-]+))?$")
SPLIT_BACK = {"validation": "dev"}  # the Hub's split names back to the toolkit's


def is_hub_dataset(spec: str) -> bool:
    """A Hub dataset (`hf://datasets/owner/name[@revision][:config]`) or a local folder in the Hub layout (a README.md
    card with configs)."""
    if str(spec).startswith("hf://"):
        return True
    p = Path(spec)
    return p.is_dir() and (p / "README.md").exists() and not (p / MANIFEST).exists() and _has_configs(p / "README.md")


def _has_configs(readme: Path) -> bool:
    try:
        return bool(card_metadata(readme).get("configs"))
    except Exception:  # noqa: BLE001 - not a card: not the Hub layout
        return False


def _hub_ref(uri: str) -> tuple[str, str | None, str | None]:
    """(repo, revision, config) of `hf://datasets/OWNER/NAME[@REVISION][:CONFIG]`."""
    m = HUB_URI.match(uri)
    if not m:
        raise UserError(f"{uri}: write a Hub dataset as hf://datasets/OWNER/NAME, "
                        "with @REVISION (a tag such as round-3, a branch or a commit) and :CONFIG when needed")
    return m["repo"], m["rev"], m["config"]


def _cache_key(repo: str, rev: str | None) -> str:
    return f"{repo.replace('/', '__')}@{rev or 'main'}"


def _load(spec: str, what: str, load):
    """`load(datasets)` with the `datasets` package, a failure (not found, private without a token, offline) as one
    line."""
    try:
        import datasets
    except ImportError:
        raise missing_extra("hub", "datasets") from None
    try:
        return load(datasets)
    except Exception as e:  # noqa: BLE001 - whatever the Hub or the loader says: one line with its first line
        raise UserError(f"{spec}: cannot {what} ({_first_line(e)}); "
                        "check the name, the revision and config, your token ($HF_TOKEN) and network") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _frame(ds):

    return pl.from_arrow(ds.data.table)


def fetch_dataset(spec: str) -> Path:
    """Load a Hub dataset (or a local folder in its layout) with `datasets`, every split of one config, into one
    Parquet file with a `split` column (the Hub's `validation` back to `dev`) under the toolkit cache; returns its
    path."""
    from toolkit.core.stagefolder import write_parquet
    from toolkit.core.models import cache_dir


    spec = str(spec)
    if spec.startswith("hf://"):
        source, rev, config = _hub_ref(spec)
        key = _cache_key(source, rev)
    else:
        source, rev, config = str(Path(spec).resolve()), None, None
        key = "local__" + hashlib.sha256(source.encode()).hexdigest()[:12]
    loaded = _load(spec, "load it with `datasets`",
                   lambda datasets: datasets.load_dataset(source, config, revision=rev))
    frames = [_frame(ds).with_columns(pl.lit(SPLIT_BACK.get(name, name)).alias("split"))
              for name, ds in loaded.items() if ds.num_rows]
    if not frames:
        raise UserError(f"{spec}: the dataset has no rows")
    out = cache_dir() / "hub" / key / f"{config or 'default'}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(pl.concat(frames, how="diagonal_relaxed"), out)
    return out


def fetch_stage_folder(uri: str) -> Path:
    """A stage folder rebuilt from a dataset `toolkit push` published (`hf://datasets/owner/name@revision`), for any
    stage that reads a folder: each config back to its file (`sft.parquet`, `rollouts.parquet`, the split files of
    `default`), and the published `toolkit/manifest.json` as its manifest (grade scale, prompt lineage). Under the
    toolkit cache."""

    from toolkit.core.stagefolder import atomic_dir, write_parquet
    from toolkit.core.models import cache_dir

    repo, rev, only = _hub_ref(uri)

    def load(datasets):
        from huggingface_hub import hf_hub_download

        names = [only] if only else datasets.get_dataset_config_names(repo, revision=rev)
        manifest = json.loads(Path(hf_hub_download(repo, "toolkit/manifest.json", repo_type="dataset", revision=rev))
                              .read_text(encoding="utf-8"))
        return manifest, {name: datasets.load_dataset(repo, name, revision=rev) for name in names}

    manifest, loaded = _load(uri, "read it as a stage folder published by `toolkit push`", load)
    import polars as pl

    stage_files = [n for n in (manifest.get("outputs") or {}) if n.endswith(".parquet")]
    out = cache_dir() / "hub" / _cache_key(repo, rev) / "folder"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        for name, dd in loaded.items():
            frames = {split: _frame(ds) for split, ds in dd.items()}
            if name != "default":
                write_parquet(pl.concat(list(frames.values()), how="diagonal_relaxed"), tmp / f"{name}.parquet")
            elif len(frames) == 1 and len(stage_files) == 1:
                write_parquet(next(iter(frames.values())), tmp / stage_files[0])
            else:
                for split, df in frames.items():
                    write_parquet(df, tmp / f"{SPLIT_BACK.get(split, split)}.parquet")
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "outputs": {}, "fetched_from": uri}, indent=2),
                                    encoding="utf-8")
    return out


def hub_inputs(cfg) -> None:
    """Replace each `hf://datasets/...` folder a stage config names by the stage folder fetched from the Hub
    (fetch_stage_folder)."""
    from dataclasses import fields

    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, str) and value.startswith("hf://datasets/"):
            setattr(cfg, f.name, str(fetch_stage_folder(value)))


MODEL_REV = re.compile(r"(?!.*\.\.)[\w.-][\w./-]*")  # a branch, tag or commit after `owner/name@`; no `..`
COMMIT = re.compile(r"[0-9a-f]{40}")
# what loading a model needs from its repo's top level: config, weights, tokenizer, chat template
MODEL_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
ST_MODULE = re.compile(r"\d+_[A-Za-z]+/")  # a sentence-transformers module folder: 1_Pooling/, 2_Dense/, 2_Normalize/


def split_model_id(spec: "str | Path | None") -> tuple[str, str | None]:
    """`owner/name@revision` -> (`owner/name`, revision); without `@`, revision None (the main branch)."""
    repo, at, rev = str(spec or "").partition("@")
    return repo, (rev if at else None)


def is_hub_model_id(spec: "str | Path | None") -> bool:
    """A valid `owner/name[@revision]` model id that is no local path and no alias of the default model."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from toolkit.core.models import DEFAULT_ALIASES

    spec = str(spec or "")
    repo, rev = split_model_id(spec)
    if (spec in DEFAULT_ALIASES or repo.count("/") != 1 or spec.startswith((".", "/", "~"))
            or Path(spec).expanduser().exists() or (rev is not None and not MODEL_REV.fullmatch(rev))):
        return False
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return False
    return True


def hub_model_commit(spec: str) -> str:
    """The commit a hub model id names now: `owner/name` the head of main, `owner/name@REV` that branch, tag or commit.
    Asked of the Hub; offline (HF_HUB_OFFLINE=1), or with a warning when the Hub cannot be reached, the local Hub
    cache's. A stage pins its model to it (pin_model), records it and loads the model at it."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import RepositoryNotFoundError, RevisionNotFoundError
    from toolkit.core.models import _offline

    repo, rev = split_model_id(spec)
    if rev and COMMIT.fullmatch(rev):
        return rev  # a commit names itself: its files never change
    why = None
    if not _offline():
        try:
            commit = HfApi().model_info(repo, revision=rev).sha or ""
            _remember(repo, rev, commit)
            return commit
        except RevisionNotFoundError:
            raise UserError(f"model {spec}: {repo} on the Hub has no revision {rev!r}; "
                            "name one of its branches, tags or commits") from None
        except RepositoryNotFoundError:
            raise UserError(f"model {spec}: no such model on the Hub (a private or gated one needs $HF_TOKEN); "
                            "check the name") from None
        except Exception as e:  # noqa: BLE001 - not reachable (network, proxy, 5xx): the local cache may have it
            why = _first_line(e)
    cached = cached_snapshot(repo, rev)
    if cached is None:
        raise UserError(f"model {spec}: cannot reach the Hub ({why or 'HF_HUB_OFFLINE=1'}) and it is not in the "
                        f"local Hub cache; retry online, or `hf download {repo} --local-dir DIR` and pass DIR")
    if why:
        log.warning("model %s: cannot reach the Hub (%s); using commit %s from the local Hub cache", spec, why,
                    cached.name[:12])
    return cached.name


def _remember(repo: str, rev: "str | None", commit: str) -> None:
    """The cache maps a branch or tag to the commit the Hub named, as huggingface_hub does (refs/NAME), so an offline
    run finds the model a run online downloaded at it."""
    from huggingface_hub import constants
    from toolkit.core.stagefolder.atomic import atomic_write_text

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / (rev or "main")
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ref, commit)
    except OSError as e:  # a read-only cache: offline runs will not find it by name, nothing else changes
        log.debug("could not record %s in the Hub cache: %s", ref, e)


def pin_model(spec: "str | None") -> "str | None":
    """A hub id as `owner/name@COMMIT`, the commit it names now, so that everything a stage asks of its model (its
    records, its weights, on every worker) comes from one commit; anything else as given."""
    if not is_hub_model_id(spec):
        return spec
    repo, rev = split_model_id(spec)
    return str(spec) if rev and COMMIT.fullmatch(rev) else f"{repo}@{hub_model_commit(str(spec))}"


def cached_snapshot(repo: str, rev: "str | None") -> Path | None:
    """The folder of the local Hub cache that holds `repo` at `rev` (a commit, or a branch or tag the cache has seen),
    when it holds a model (config.json); else None."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    commit = rev if rev and COMMIT.fullmatch(rev) else None
    if commit is None:
        try:
            commit = (folder / "refs" / (rev or "main")).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    snap = folder / "snapshots" / commit
    return snap if COMMIT.fullmatch(commit) and (snap / "config.json").is_file() else None


def _model_files(repo: str, commit: str, modules: bool = False) -> list[str]:
    """The files of a model repo that loading it needs: top-level config, tokenizer and chat template files, its
    weights (the safetensors shards, not a `consolidated` copy; .bin only without safetensors), the toolkit's
    records (toolkit/), and with `modules` a sentence-transformers model's module folders (`1_Pooling/`,
    `2_Dense/`, ...)."""
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo, revision=commit)
    top = [f for f in files if "/" not in f]
    safetensors = [f for f in top if f.endswith(".safetensors")]
    weights = ([f for f in safetensors if not f.startswith("consolidated")] or safetensors
               or [f for f in top if f.endswith(".bin")])
    extra = [f for f in files if f.startswith("toolkit/") or (modules and ST_MODULE.match(f))]
    return [f for f in top if f.endswith(MODEL_SUFFIXES)] + weights + extra


def hub_model_snapshot(spec: str, modules: bool = False) -> Path:
    """The local folder of a hub model at the commit it names now (`.../snapshots/COMMIT` in the Hub cache): the files
    loading it needs (_model_files; `modules` for a sentence-transformers embedder), downloaded once; offline or
    unreachable, the cached folder."""
    from huggingface_hub import snapshot_download

    repo, rev = split_model_id(spec)
    commit = hub_model_commit(spec)
    try:
        path = Path(snapshot_download(repo, revision=commit, allow_patterns=_model_files(repo, commit, modules)))
    except Exception as e:  # noqa: BLE001 - whatever stopped the download; a cached copy will do
        path = cached_snapshot(repo, commit)
        if path is None:
            raise UserError(f"model {spec}: cannot download it from the Hub ({_first_line(e)}); "
                            "check your network and token ($HF_TOKEN), or pass a local folder") from None
    if not (path / "config.json").exists():
        raise UserError(f"model {spec}: the Hub repo at {commit[:12]} has no config.json, so it is no model "
                        "transformers loads; check the name and revision")
    return path


def snapshot_model_id(path: "str | Path") -> str | None:
    """`owner/name@commit` for a folder of the Hub cache (`.../models--owner--name/snapshots/COMMIT`), else None."""
    p = Path(path)
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        return f"{p.parent.parent.name[len('models--'):].replace('--', '/', 1)}@{p.name}"
    return None


def hub_model_manifest(spec: str) -> dict | None:
    """The `toolkit/manifest.json` that `toolkit push` publishes beside a model's weights (its grade scale and prompt
    lineage), at the commit the id names now; None for a model the toolkit did not push. Not reaching it is a
    one-line error: the model would otherwise get another prompt than it learned."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    repo, _ = split_model_id(spec)
    commit = hub_model_commit(spec)
    snap = cached_snapshot(repo, commit)
    if snap is not None and (snap / "toolkit/manifest.json").is_file():
        path = snap / "toolkit/manifest.json"  # downloaded with the model
    else:
        try:
            path = Path(hf_hub_download(repo, "toolkit/manifest.json", repo_type="model", revision=commit))
        except LocalEntryNotFoundError:  # offline or unreachable: a cached model came with its records, if any
            if snap is not None:
                return None
            raise UserError(f"model {spec}: cannot reach the Hub for its toolkit/manifest.json (the prompt and grade "
                            f"scale it learned); retry online, or `hf download {repo} --local-dir DIR` and pass DIR"
                            ) from None
        except EntryNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - a Hub error other than "not there": one line with its first line
            raise UserError(f"model {spec}: cannot read its toolkit/manifest.json from the Hub ({_first_line(e)}); "
                            "check your token ($HF_TOKEN) and network, or pass a local folder") from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise UserError(f"model {spec}: its toolkit/manifest.json on the Hub is not a JSON object; "
                        "push the checkpoint again with `toolkit push`")
    return data
