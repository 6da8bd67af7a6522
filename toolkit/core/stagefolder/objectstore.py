"""Stage folders on shared storage: `-o s3://bucket/run/score`, and inputs named by such URLs (any fsspec
filesystem: `s3://`, `gs://`, `az://`, `file://`, ...; a shared mount is a plain path and needs none of this).

A stage writes into a local staging folder exactly as it writes a local folder (temporary folder and swap,
shards, manifest last), and the staging folder is then committed to the URL. Object stores have no rename, so
the commit protocol is:

1. Claim: before the run, a remote folder that is not empty must hold a manifest.json of this stage (the -o
   rules of a local folder). An empty one gets an incomplete manifest (`{"stage": ..., "complete": false}`)
   before its first object, so the prefix is marked as the toolkit's before any data lands; a run that fails
   before writing anything leaves nothing.
2. Pull: the remote folder is mirrored into the staging folder (only files whose size differs are fetched),
   so a run on any machine sees the shards every earlier run committed, and skips an up-to-date output.
3. Shards: a sharded stage uploads each shard the moment it is written locally (one PUT; an object appears
   whole or not at all), so a run killed anywhere, on any machine, resumes from the shards already up.
4. Commit: when the run ends and its manifest differs from the remote one: put the incomplete manifest
   (readers now refuse the folder), upload every other file, delete remote files the new output does not
   have, and put manifest.json last: one PUT of the manifest is the commit point. A run killed during the
   commit leaves an incomplete manifest: readers refuse the folder, the rerun takes it up.
5. Read: an input URL is used only when its manifest.json is complete; it is mirrored into the toolkit cache
   and the stage reads the local copy. Configs and fingerprints record the URL, not the local path, so a
   folder written on one machine is up to date on another.

Two runs writing one URL at once are refused on one machine (the staging folder's lock); across machines
nothing prevents it: give each run its own -o.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from toolkit.core.errors import UserError
from toolkit.core.stagefolder.aliases import ALIASES
from toolkit.core.stagefolder.atomic import _LEFTOVER, fault_point  # what a killed local run leaves: never uploaded
from toolkit.core.stagefolder.manifest import MANIFEST

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^(?P<proto>[a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(value) -> bool:
    """A stage folder on an fsspec filesystem (`s3://...`), not a Hub dataset (`hf://`, toolkit.core.stagefolder
    .remote) and not a local path."""
    m = _SCHEME.match(value) if isinstance(value, str) else None
    return bool(m) and m["proto"].lower() not in ("hf", "http", "https", "ws", "wss")


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def _fs(url: str):
    """(filesystem, path) of a URL, or a one-line error naming the package its scheme needs."""
    import fsspec

    proto = _SCHEME.match(url)["proto"]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        need = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto)
        hint = f"pip install {need}" if need else f"install the fsspec implementation of {proto}://"
        raise UserError(f"{url}: {proto}:// needs a package that is not installed ({hint})") from e
    except ValueError as e:
        raise UserError(f"{url}: not a storage URL fsspec knows ({e})") from None


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Whatever the storage client raises (no such bucket, no credentials, no server) as one line naming the URL."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - s3fs, gcsfs, botocore ... each raise their own types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{url}: cannot reach the storage ({type(e).__name__}: {first}); check the URL and bucket, "
                        "and the credentials (S3: AWS_* variables; an S3-compatible server: FSSPEC_S3_ENDPOINT_URL)"
                        ) from None


def check_apart(out: str, inputs: list[str]) -> None:
    """-o as a URL must not be, hold or lie inside an input URL (the -o rule of local folders)."""
    o = out.rstrip("/")
    for i in (x.rstrip("/") for x in inputs):
        if o == i or o.startswith(i + "/") or i.startswith(o + "/"):
            raise UserError(f"{out}: -o is, holds or lies inside the input {i}; a stage replaces its -o folder "
                            "whole, pass another -o")


def _key(url: str) -> str:
    name = re.sub(r"[^\w.-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[:40] or "root"
    return f"{name}-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}"


def staging_dir(url: str) -> Path:
    """The local folder a stage writing `url` works in ($TOOLKIT_STAGING, else the toolkit cache)."""
    from toolkit.core.models import cache_dir

    root = Path(os.environ["TOOLKIT_STAGING"]) if os.environ.get("TOOLKIT_STAGING") else cache_dir() / "staging"
    return root / _key(url)


def _remote_files(fs, root: str) -> dict[str, int]:
    """relative path -> size of every file under root (empty when root does not exist)."""
    try:
        found = fs.find(root, withdirs=False, detail=True)
    except FileNotFoundError:
        return {}
    base = root.rstrip("/") + "/"
    return {p[len(base):]: int(d.get("size") or 0) for p, d in found.items() if p.startswith(base)}


def _read_json(fs, path: str) -> dict | None:
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


def _local_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
            if p.is_file() and not any(_LEFTOVER.match(part) for part in p.relative_to(folder).parts)}


def _mirror(fs, root: str, local: Path, remote: dict[str, int]) -> int:
    """Make `local` hold exactly the remote files (fetching those whose size differs); the number fetched."""
    local.mkdir(parents=True, exist_ok=True)
    have = _local_files(local)
    for rel, path in have.items():
        if rel not in remote:
            path.unlink()
    got = 0
    for rel, size in sorted(remote.items()):
        dest = local / rel
        if dest.is_file() and dest.stat().st_size == size and rel != MANIFEST:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        fs.get_file(f"{root}/{rel}", str(tmp))
        os.replace(tmp, dest)
        got += 1
    return got


def _incomplete(stage: str) -> bytes:
    return (json.dumps({"stage": stage, "complete": False}) + "\n").encode()


def claim(url: str, stage: str) -> tuple[object, str, dict[str, int]]:
    """Check a remote output folder against the -o rules and mark an empty one as this stage's; returns the
    filesystem, the path and the remote listing."""
    with reaching(url):
        return _claim(url, stage)


def _claim(url: str, stage: str) -> tuple[object, str, dict[str, int]]:
    fs, root = _fs(url)
    root = root.rstrip("/")
    fs.invalidate_cache()
    files = _remote_files(fs, root)
    if files:
        m = _read_json(fs, f"{root}/{MANIFEST}")
        if m is None:
            shown = ", ".join(sorted(files)[:4]) + (f", ... ({len(files)} files)" if len(files) > 4 else "")
            raise UserError(f"{url}: this location holds files the toolkit did not write (no manifest.json; it "
                            f"holds {shown}); pass another -o")
        if m.get("stage") != stage:
            raise UserError(f"{url}: this folder holds the output of `toolkit {m.get('stage')}`, which `toolkit "
                            f"{stage}` would replace (is it this stage's input?); pass another -o")
    return fs, root, files


def commit(fs, root: str, local: Path, stage: str, before: dict[str, int]) -> int:
    """Upload a finished staging folder (see the module docstring, step 4); the number of files put."""
    manifest = (local / MANIFEST).read_bytes()
    remote_manifest = fs.cat_file(f"{root}/{MANIFEST}") if MANIFEST in before else None
    files = _local_files(local)
    fs.invalidate_cache()
    if remote_manifest == manifest and set(files) == set(_remote_files(fs, root)):
        return 0  # up to date: the remote folder already holds this output
    fs.pipe_file(f"{root}/{MANIFEST}", _incomplete(stage))
    fs.invalidate_cache()
    put = 0
    now = _remote_files(fs, root)
    for rel, path in sorted(files.items()):
        if rel == MANIFEST:
            continue
        if rel.startswith(".shards/") and now.get(rel) == path.stat().st_size:
            continue  # uploaded when it was written
        fs.put_file(str(path), f"{root}/{rel}")
        put += 1
        fault_point("objectstore.put")
    for rel in sorted(set(now) - set(files)):
        fs.rm_file(f"{root}/{rel}")
    fault_point("objectstore.before_manifest")
    fs.pipe_file(f"{root}/{MANIFEST}", manifest)  # the commit point
    return put + 1


def pull(url: str, stage: str) -> tuple[object, str, dict[str, int], Path]:
    """Steps 1 and 2: claim the remote folder and mirror it into its staging folder (returned last)."""
    fs, root, before = claim(url, stage)
    local = staging_dir(url)
    with reaching(url):
        got = _mirror(fs, root, local, before)
    if got > 1:
        log.info("%s: fetched %d files of the existing output into %s", url, got, local)
    ALIASES[str(local)] = url
    return fs, root, before, local


@contextmanager
def remote_output(url: str, stage: str, fs, root: str, before: dict[str, int], local: Path) -> Iterator[Path]:
    """Around a stage run in `local` (after `pull`): upload each shard as it is written (step 3), commit on success
    (step 4)."""
    from toolkit.core import shards

    def upload_shard(path: Path) -> None:
        with reaching(url):
            if not before:  # a new folder: marked as this stage's before its first object
                fs.pipe_file(f"{root}/{MANIFEST}", _incomplete(stage))
                before[MANIFEST] = 0
            fs.put_file(str(path), f"{root}/{path.relative_to(local).as_posix()}")

    shards.ON_WRITTEN.append(upload_shard)
    try:
        yield local
    finally:
        shards.ON_WRITTEN.remove(upload_shard)
    with reaching(url):
        n = commit(fs, root, local, stage, before)
    if n:
        log.info("%s: committed (%d files put, manifest last)", url, n)


def fetch_input(url: str) -> Path:
    """A complete stage folder at `url`, mirrored into the toolkit cache; its local path."""
    with reaching(url):
        return _fetch(url)


def _fetch(url: str) -> Path:
    from toolkit.core.models import cache_dir

    fs, root = _fs(url)
    root = root.rstrip("/")
    fs.invalidate_cache()
    m = _read_json(fs, f"{root}/{MANIFEST}")
    if m is None:
        raise UserError(f"{url}: no stage folder here (no manifest.json); check the URL")
    if m.get("complete") is False:
        raise UserError(f"{url}: this stage folder is incomplete (a run is writing it, or one was killed "
                        f"while writing); rerun `toolkit {m.get('stage', '<stage>')}` on it")
    local = cache_dir() / "remote" / _key(url)
    _mirror(fs, root, local, _remote_files(fs, root))
    ALIASES[str(local)] = url
    return local
