"""Issue 19's GPU budget on a borrowed GPU machine: the CPU half (prepare, then read the rows back).

The borrowed machine (one H100/H200 for 15 device minutes a session, no network, 64 MiB per call) lacks polars,
datasets, trl and gguf, and the default model (a 98 MB GGUF) is larger than one call may carry. So the run is split:

1. here, on the CPU machine::

       .venv/bin/python benchmarks/gpu_quality.py prep --data ../shared/data/crowdflower/train_shared.csv

   runs the data stages (ingest, split, index, retrieve; under a minute) and, unless --no-baseline, the cross-encoder
   (2 epochs on the full train split, ~13 min on 2 cores; it needs no GPU), and fills .gpu/, .whl/ and .whl-pyarrow/
   (ignored by git) with what the device needs. It prints the three device calls to make, back to back (a machine
   waits 30 s), and a fourth, pyarrow's wheel, to make after the first only if the device's pyarrow is too old.

2. on the device, three calls: the wheels (installed into /tmp/site), the GGUF's first chunk, then the GGUF's second
   chunk with the pipeline folder, running benchmarks/gpu_quality_device.sh: every stage of `bench_quality.py
   --budget gpu` but the cross-encoder, cut at its time limit (plain label-only SFT trains last), and a tar of the
   folder without the weights.

3. here again::

       .venv/bin/python benchmarks/gpu_quality.py rows --tgz /work/.device/.../qgpu.tgz

   unpacks the device's folder, runs what is missing of the data stages and the cross-encoder, and evaluates every
   row that has predictions (β fitted on dev, test macro-F1 with bootstrap intervals): quality.md, quality.json and
   the plots in the pipeline folder, as bench_quality.py writes them. The unpacked model folders hold no weights:
   `bench_quality.py --budget gpu` on the same folder here would train those models again.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # noqa: E402
from toolkit.cli.runner import RECORD  # noqa: E402  (the runner writes it when a stage has finished)

REPO = bq.REPO
BUNDLE, WHEELS, PYARROW = REPO / ".gpu", REPO / ".whl", REPO / ".whl-pyarrow"
DATA_STAGES = ("pairs", "splits", "splits_gen", "index", "retrieved", "retrieved_gen")
# what the device lacks (ENVIRONMENT.md), at this venv's versions: the pure-Python ones and polars' runtime
CARRIED = ("polars", "polars-runtime-32", "datasets", "dill", "multiprocess", "trl", "gguf")
CALL_LIMIT = 64 << 20
RUN_CARRY = ("g2", "run", "data_file", "device.yaml", "paths.sh")  # the third call's paths under .gpu/ (not g1)
CHUNK = 60_000_000  # the GGUF's first chunk: the rest travels with the pipeline folder


def spec_of(args) -> dict:
    ns = argparse.Namespace(data=args.data, format=args.format, pairs=None, out=args.out, seed=args.seed,
                            backend="transformers")
    spec = bq.pipeline(ns, bq.BUDGETS["gpu"])
    spec.pop("_baseline_at", None)
    return spec


def _write(spec: dict, names, path: Path) -> Path:
    part = {k: v for k, v in spec.items() if not k.startswith("_")}
    part["stages"] = [s for s in spec["stages"] if names(s["name"])]
    path.write_text(yaml.safe_dump(part, sort_keys=False))
    return path


def _toolkit_run(path: Path) -> None:
    subprocess.run([str(Path(sys.executable).with_name("toolkit")), "run", str(path)], check=True)


def _size(paths) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def _download(dest: Path, packages) -> None:
    """Wheels of `packages` at this venv's versions, for the device's Python 3.12 on x86-64, into `dest`."""
    shutil.rmtree(dest, ignore_errors=True)
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in packages]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(dest),
                    *pins], check=True)


def _pyarrow_need() -> str:
    """What datasets asks of pyarrow, as its metadata says (e.g. `datasets 5.2.0 needs pyarrow>=24.0.0`)."""
    need = next((r.split(";")[0].replace(" ", "") for r in importlib.metadata.requires("datasets") or []
                 if r.startswith("pyarrow")), "pyarrow")
    return f"datasets {importlib.metadata.version('datasets')} needs {need}"


def tracked_size() -> int:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    return _size([REPO / f for f in files if (REPO / f).is_file()])


def prep(args) -> None:
    from toolkit.core.models import _find_gguf

    spec = spec_of(args)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    keep = DATA_STAGES if args.no_baseline else DATA_STAGES + ("baseline",)
    _toolkit_run(_write(spec, lambda n: n in keep, out / "cpu.yaml"))
    shutil.rmtree(BUNDLE, ignore_errors=True)
    BUNDLE.mkdir()
    # the device runs every stage but the cross-encoder; the data stages are "up to date" there by content, at the
    # same paths: the pipeline folder, this checkout (the guideline) and the dataset file
    _write(spec, lambda n: n != "baseline", BUNDLE / "device.yaml")
    for name in DATA_STAGES:
        shutil.copytree(out / name, BUNDLE / "run" / name)
    data = Path(spec["stages"][0]["args"][0])
    shutil.copyfile(data, BUNDLE / "data_file")
    gguf = _find_gguf().read_bytes()
    (BUNDLE / "paths.sh").write_text(f"RUN_DIR={out}\nDATA_FILE={data}\nREPO_DIR={REPO}\n"
                                     f"GGUF_SHA256={hashlib.sha256(gguf).hexdigest()}\n")
    (BUNDLE / "g1").write_bytes(gguf[:CHUNK])
    (BUNDLE / "g2").write_bytes(gguf[CHUNK:])
    _download(WHEELS, CARRIED)
    # datasets needs pyarrow >= 24; the device's own pyarrow is not known beforehand: its wheel (55 MB) is kept
    # ready for a call of its own, made only when the first call prints an older version
    _download(PYARROW, ("pyarrow",))
    tree = tracked_size()
    calls = [("wheels", [WHEELS]), ("pyarrow, only if needed", [PYARROW]), ("chunk 1", [BUNDLE / "g1"]),
             ("run", [BUNDLE / n for n in RUN_CARRY])]
    for name, paths in calls:
        size = tree + _size(paths)
        print(f"call {name}: {size / 2**20:.1f} MiB{'  (OVER the 64 MiB a call may carry)' if size > CALL_LIMIT else ''}")
    print(f"""
Device calls, back to back (each within 30 s of the last; ~2 of the 15 device minutes before the run):
1. carry [".whl"], timeout_s 180:
   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \\
     && PYTHONPATH=/tmp/site:$PWD python3 -c "import pyarrow; print('pyarrow', pyarrow.__version__); \\
     import polars, datasets, trl, gguf, trainers.sft; print('ok')"
   only if that import failed on pyarrow ({_pyarrow_need()}), a call of its own: carry [".whl-pyarrow"], timeout_s 120:
   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl-pyarrow/*.whl \\
     && PYTHONPATH=/tmp/site:$PWD python3 -c "import pyarrow, datasets; print('pyarrow', pyarrow.__version__, 'ok')"
2. carry [".gpu/g1"], timeout_s 60:   cp .gpu/g1 /tmp/g1 && ls -l /tmp/g1
3. carry {json.dumps([".gpu/" + n for n in RUN_CARRY])}, timeout_s 600:
   bash benchmarks/gpu_quality_device.sh SECONDS
   SECONDS = min(520, budget_left_s - 120), with budget_left_s from `status` just before the call: the tool cuts a
   call at the device time left, and the script needs ~60 s after the run to pack the folder
Then: .venv/bin/python benchmarks/gpu_quality.py rows --tgz FILES_AT/qgpu.tgz --out {out}""")


def rows(args) -> None:
    spec = spec_of(args)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    if args.tgz:
        with tarfile.open(args.tgz) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] not in (["baseline"], ["eval"])]
            tar.extractall(out, members=members, filter="data")
    _toolkit_run(_write(spec, lambda n: n in DATA_STAGES + ("baseline",), out / "cpu.yaml"))
    names = spec["_rows"]
    # a stage's folder exists from its start: only a finished one (the runner's record) has whole predictions
    have = [(i, r) for i, r in enumerate(names) if all((out / f"m{i}_{s}" / RECORD).is_file() for s in ("dev", "test"))]
    missing = [r for r in names if r not in dict(have).values()]
    sources = [("cross-encoder baseline", out / "baseline", out / "baseline")]
    sources += [(r, out / f"m{i}_dev", out / f"m{i}_test") for i, r in have]
    bq.report(out, [bq.evaluate_row(out, *src) for src in sources])
    if missing:
        print(f"\nno predictions yet (not run, or the device run stopped before them): {', '.join(missing)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["prep", "rows"])
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/crowdflower/train_shared.csv"))
    ap.add_argument("--format", default="crowdflower")
    ap.add_argument("--out", default="/tmp/qgpu", help="The pipeline folder (the same path is used on the device).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="prep: leave the cross-encoder to the rows step.")
    ap.add_argument("--tgz", help="rows: the device's qgpu.tgz.")
    args = ap.parse_args()
    args.data = str(Path(args.data).resolve())
    (prep if args.step == "prep" else rows)(args)


if __name__ == "__main__":
    main()
