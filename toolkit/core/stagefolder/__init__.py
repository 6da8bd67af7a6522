"""Everything a stage folder promises, in one place.

A stage reads input folders and writes one output folder (`-o`). The folder holds the stage's files
(names in `files`), its resolved config (config.yaml) and its manifest (manifest.json: stage, toolkit
version, fingerprint, input hashes, output hashes, counts, and the facts that travel to the next stage
under the names in `manifest.Key`). This package owns:

- `config`    StageConfig (a stage's config dataclass base) and the run's fingerprint; up-to-date checks
- `atomic`    the output-folder rules (what -o may touch), the per-folder lock, atomic files and folders
- `manifest`  reading a manifest and its named keys; refusing a folder whose run was cut off
- `files`     the output file names of every stage
- `folder`    StageFolder.open(path): an input folder's scale, lineage, files and pairs, read once
- `result`    StageResult (one summary format) and run_stage (skip when up to date, else write atomically)
- `remote`    `hf://datasets/...` inputs, fetched into the toolkit cache
"""

from toolkit.core.stagefolder.manifest import (CONFIG, MANIFEST, Key, check_complete, check_model_scale, manifest_of,
                                               model_manifest, read_manifest, scale_of, sha256_file, sha256_json)
from toolkit.core.stagefolder.atomic import (LEGACY_SHARDS, SHARDS, atomic_dir, atomic_write_text, check_output_folder,
                                             check_output_path, claim_output, config_paths, fault_point, listing,
                                             lock_dir, remove_leftovers, write_parquet, writes_output)
from toolkit.core.stagefolder.config import (ADDED_LATER, StageConfig, fingerprint, input_hashes, is_up_to_date,
                                             mark_incomplete, model_inputs, write_manifest)
from toolkit.core.stagefolder import files
from toolkit.core.stagefolder.folder import StageFolder
from toolkit.core.stagefolder.result import (StageResult, dropped_text, recorded_result, run_stage, up_to_date_line,
                                             write_stage)

__all__ = [
    "ADDED_LATER", "CONFIG", "LEGACY_SHARDS", "MANIFEST", "SHARDS", "Key", "StageConfig", "StageFolder", "StageResult",
    "atomic_dir", "atomic_write_text", "check_complete", "check_model_scale", "check_output_folder",
    "check_output_path", "claim_output", "config_paths", "fault_point", "files", "fingerprint", "input_hashes",
    "is_up_to_date", "listing", "lock_dir", "manifest_of", "mark_incomplete", "model_inputs", "model_manifest",
    "read_manifest", "recorded_result", "remove_leftovers", "run_stage", "dropped_text", "scale_of", "sha256_file",
    "sha256_json", "up_to_date_line", "write_manifest", "write_parquet", "write_stage", "writes_output",
]
