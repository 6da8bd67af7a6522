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


def is_hub_model_id(spec: "str | Path | None") -> bool:
    """A valid `owner/name` model id that is no local path and no alias of the default model, while the Hub is on."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from toolkit.core.models import DEFAULT_ALIASES, _offline

    spec = str(spec or "")
    if (spec in DEFAULT_ALIASES or spec.count("/") != 1 or spec.startswith((".", "/", "~"))
            or Path(spec).expanduser().exists() or _offline()):
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def hub_model_manifest(repo_id: str) -> dict | None:
    """The `toolkit/manifest.json` that `toolkit push` publishes beside a model's weights (its grade scale and prompt
    lineage), through the Hub cache; None for a model the toolkit did not push or one the Hub does not show (loading it
    reports that). Not reaching the Hub is a one-line error: the model would otherwise get another prompt than it
    learned."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = hf_hub_download(repo_id, "toolkit/manifest.json", repo_type="model")
    except LocalEntryNotFoundError:
        raise UserError(f"model {repo_id}: cannot reach the Hub for its toolkit/manifest.json (the prompt and grade "
                        f"scale it learned); retry online, or `hf download {repo_id} --local-dir DIR` and pass DIR"
                        ) from None
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    except Exception as e:  # noqa: BLE001 - a Hub error other than "not there": one line with its first line
        raise UserError(f"model {repo_id}: cannot read its toolkit/manifest.json from the Hub ({_first_line(e)}); "
                        "check your token ($HF_TOKEN) and network, or pass a local folder") from None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise UserError(f"model {repo_id}: its toolkit/manifest.json on the Hub is not a JSON object; "
                        "push the checkpoint again with `toolkit push`")
    return data
