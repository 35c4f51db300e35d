#!/bin/sh
# The GPU figures of issue 15 in one prepared run, for a session that is lent a GPU machine.
# Here first: make gpu-kit (bench/gpu_kit.sh). Then with the device tool, from the repo root:
#   run(command="sh bench/gpu_check.sh", carry=["gpu_kit"], timeout_s=560)
# It runs bench_query_speed.py with --device cuda on the kit's dev-20 frames (memorize both
# scene models, then every query setting that applies to CUDA, and the SIFT peer on the CPU)
# and leaves the table, its JSON and the GPU's name under $OUT (or out/gpu_check).
# Locally, DEVICE=cpu PY=.venv/bin/python sh bench/gpu_check.sh runs the same on the CPU.
set -eu
KIT=${KIT:-gpu_kit}
OUT=${OUT:-out/gpu_check}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
test -d "$KIT/kitchen" || { echo "no $KIT/kitchen: run make gpu-kit here first" >&2; exit 2; }
mkdir -p "$OUT"
# The packages as their source folders (no install step); poselib / faiss from the kit's wheels
# only where the machine lacks them.
P=/tmp/scene_reloc_path
mkdir -p "$P"
ln -sfn "$PWD/scene_reloc" "$P/scene_reloc"
ln -sfn "$PWD/training" "$P/scene_reloc_training"
export PYTHONPATH="$P${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c 'import poselib, faiss' 2>/dev/null; then
    $PY -m pip install --quiet --no-deps --no-index --target "$P" "$KIT"/wheels/*.whl
fi
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$OUT/machine.txt"
nproc >> "$OUT/machine.txt"
WORK=/tmp/gpu_check_work
$PY bench/bench_query_speed.py --data "$KIT/kitchen" --weights "$KIT/weights" \
    --device "$DEVICE" --threads 2 --out "$WORK" 2>&1 | tail -40
cp "$WORK"/*.md "$WORK"/*.json "$OUT/" 2>/dev/null || true
ls -la "$OUT"
