#!/usr/bin/env bash
# Issue 19's GPU budget, the device half: run from the repo root on the borrowed GPU machine, as the third of the
# calls that `benchmarks/gpu_quality.py prep` prints (the first installed the wheels into /tmp/site, the second put the
# GGUF's first chunk in /tmp/g1). .gpu/ holds what prep made on the CPU machine: the GGUF's second chunk (g2), the
# dataset file, the pipeline folder with the data stages done (run/), the pipeline without the cross-encoder
# (device.yaml) and the paths they had there (paths.sh). Stage folders are found "up to date" by content, so the
# pipeline folder, the checkout (the guideline's path) and the dataset file take the same paths here.
# Usage: bash benchmarks/gpu_quality_device.sh [SECONDS]   (the run's time limit; default 520: leave ~60 s of the
# call's limit for packing, and the call's limit is the device time left when that is less than its timeout_s)
set -u
. .gpu/paths.sh
[ -d /tmp/site/polars ] || { echo "no /tmp/site/polars: make the first call (the wheels) first"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD TOOLKIT_CACHE=/tmp/tc HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
dest=${OUT:-/tmp/gpu_out}
mkdir -p "$dest" /tmp/tc/gguf "$(dirname "$DATA_FILE")" "$(dirname "$REPO_DIR")"
[ -e "$REPO_DIR" ] || ln -s "$PWD" "$REPO_DIR"
cmp -s "$REPO_DIR/demo/guideline.md" demo/guideline.md || echo "warning: $REPO_DIR is another checkout"
gguf=/tmp/tc/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ]; then
    [ -f /tmp/g1 ] || { echo "no /tmp/g1: make the second call (the GGUF's first chunk) first"; exit 1; }
    cat /tmp/g1 .gpu/g2 > "$gguf.part" || exit 1
    sum=$(sha256sum "$gguf.part" | cut -d' ' -f1)
    [ "$sum" = "$GGUF_SHA256" ] || { echo "the joined GGUF's sha256 is $sum, not prep's: redo the second call"; rm -f "$gguf.part"; exit 1; }
    mv "$gguf.part" "$gguf"
fi
cmp -s .gpu/data_file "$DATA_FILE" || cp .gpu/data_file "$DATA_FILE"
[ -d "$RUN_DIR" ] || cp -r .gpu/run "$RUN_DIR"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
timeout -k 15 "${1:-520}" python3 -m toolkit run .gpu/device.yaml > "$dest/run.log" 2>&1
echo "run: rc $? after $(( $(date +%s) - t0 )) s"
grep -v -E "it/s\]|s/it\]" "$dest/run.log" | tail -c 9000
# everything but the weights: the rows are evaluated from the predictions on the CPU machine
tar czf "$dest/qgpu.tgz" -C "$RUN_DIR" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' \
    --exclude='tokenizer.json' --exclude='checkpoint-*' .
ls -la "$dest"
