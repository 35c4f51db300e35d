#!/bin/sh
# The GPU figures of issues 15 and 16 in one prepared run, for a session lent a GPU machine.
# Here first: make gpu-kit (bench/gpu_kit.sh). Then with the device tool, from the repo root:
#   run(command="sh bench/gpu_check.sh", carry=["gpu_kit"], timeout_s=600)
# 1. Query speed (issue 15): bench_query_speed.py with --device cuda on the kit's dev-20 frames
#    (memorize both scene models, every query setting that applies to CUDA, the SIFT peer on the
#    CPU), then the same with PyTorch's TF32 defaults.
# 2. Training (issue 16): renders a 10-scene synthetic corpus there, then
#    bench_pretrain_throughput.py --device cuda (pretraining from ALIKE-n with its detector kept,
#    global batch 4 and 16, and meta-train, also with each outer step's episodes batched into
#    one stacked head, 2 and 8 episodes a step), one process per GPU.
# The parts' own limits add up to more than one device command may run (600 s); measured there:
# query 98-105 s, query_tf32 94-105, corpus 64-67, train 84, meta2 64, meta8 83, matching 104,
# train16 55.
# The parts run in this file's order; PARTS picks which (e.g. PARTS="corpus meta2 meta8").
# Each part runs under its own time limit and a failing part does not stop the next. The logs,
# the tables and their JSON, and the GPU's name come back under $OUT (or out/gpu_check):
# machine.txt, <part>.log for each part, results.tar.gz.
# Locally, DEVICE=cpu PY=.venv/bin/python sh bench/gpu_check.sh runs the same on the CPU.
set -u
KIT=${KIT:-gpu_kit}
OUT=${OUT:-out/gpu_check}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
ITERATIONS=${ITERATIONS:-300}   # pretraining iterations per run
META_STEPS=${META_STEPS:-10}    # meta-train outer steps per run
PARTS=${PARTS:-corpus train meta2 meta8 matching train16 query query_tf32}
test -d "$KIT/kitchen" || { echo "no $KIT/kitchen: run make gpu-kit here first" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)   # the tables are packed from inside the work folder
# The packages as their source folders (no install step); poselib / faiss from the kit's wheels
# only where the machine lacks them.
P=/tmp/scene_reloc_path
mkdir -p "$P"
ln -sfn "$PWD/scene_reloc" "$P/scene_reloc"
ln -sfn "$PWD/training" "$P/scene_reloc_training"
export PYTHONPATH="$P${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! $PY -c 'import poselib, faiss' 2>/dev/null; then
    $PY -m pip install --quiet --no-deps --no-index --target "$P" "$KIT"/wheels/*.whl
fi
{
    $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
    echo "cpus $(nproc)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
} | tee "$OUT/machine.txt"
WORK=/tmp/gpu_check_work
rm -rf "$WORK"
mkdir -p "$WORK"
part() {   # part NAME SECONDS COMMAND...: run it under a time limit, log it, go on if it fails
    name=$1 limit=$2
    shift 2
    case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -25 "$OUT/$name.log"
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s (limit $limit s)" \
        | tee -a "$OUT/$name.log"
    # The tables so far, after every part: a run stopped at the tool's limit still returns them.
    (cd "$WORK" && find . -maxdepth 3 \( -name '*.json' -o -name '*.md' -o -name '*.csv' \) \
        -not -path './corpus/*' -print0 | xargs -0 -r tar czf "$OUT/results.tar.gz")
}
part query 260 $PY bench/bench_query_speed.py --data "$KIT/kitchen" --weights "$KIT/weights" \
    --device "$DEVICE" --threads 2 --out "$WORK/query_speed"
# The same with PyTorch's TF32 defaults (what scene_reloc.precision.no_tf32 turns off), on the
# same machine: its first lent H200 gave the landmark detector 92.8 % with TF32, 98.6 % without.
part query_tf32 200 env SCENE_RELOC_ALLOW_TF32=1 $PY bench/bench_query_speed.py \
    --data "$KIT/kitchen" --weights "$KIT/weights" --device "$DEVICE" --threads 2 \
    --out "$WORK/query_speed_tf32"
part corpus 90 $PY -m scene_reloc_training.cli make-corpus --out "$WORK/corpus" --scenes 10 \
    --seed 0
TRAIN="$PY bench/bench_pretrain_throughput.py --corpus $WORK/corpus/corpus.json --scenes 7
    --init $KIT/weights/alike-n.pth --device $DEVICE"
# shellcheck disable=SC2086   # TRAIN is split into words on purpose
part train 150 $TRAIN --meta-steps "$META_STEPS" --iterations "$ITERATIONS" \
    --out "$WORK/throughput"
# Meta-training with each outer step's episodes as one stacked head (meta-train --batched)
# against one after another, with the shipped start's 2 episodes a step and with 8.
# shellcheck disable=SC2086
part meta2 120 $TRAIN --skip-pretrain --meta-steps "$META_STEPS" --batched --out "$WORK/meta2"
# shellcheck disable=SC2086
part meta8 150 $TRAIN --skip-pretrain --meta-steps "$META_STEPS" --meta-batch 8 --batched \
    --out "$WORK/meta8"
# Pretraining with the cross-view matching loss (its correspondences are CPU work).
# shellcheck disable=SC2086
part matching 150 $TRAIN --matching-weight 1 --iterations "$ITERATIONS" --out "$WORK/matching"
# shellcheck disable=SC2086
part train16 90 $TRAIN --batch-size 16 --iterations "$(( ITERATIONS / 2 ))" \
    --out "$WORK/throughput16"
ls -la "$OUT"
