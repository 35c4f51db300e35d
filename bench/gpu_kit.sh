#!/bin/sh
# Build what a lent GPU machine needs to run bench/gpu_check.sh (`make gpu-kit`): that machine
# has its own Python 3.12 with PyTorch (CUDA), OpenCV, SciPy, ONNX Runtime and safetensors, no
# ../shared and no package index. The kit (about 31 MB, git-ignored, carried with the run):
#   gpu_kit/kitchen   the dev-20 / dev-10 frames of the 7-Scenes kitchen (memorized + queries)
#   gpu_kit/weights   alike-n.pth
#   gpu_kit/wheels    poselib and faiss-cpu for CPython 3.12 on x86_64 Linux (from PyPI)
# Usage: sh bench/gpu_kit.sh DATA WEIGHTS [KIT]
set -eu
DATA=${1:?the 7-Scenes redkitchen dev folder}
WEIGHTS=${2:?the folder with alike-n.pth}
KIT=${3:-gpu_kit}
PIP=${PIP:-.venv/bin/python -m pip}
rm -rf "$KIT"
mkdir -p "$KIT/kitchen" "$KIT/weights" "$KIT/wheels"
cp "$DATA/camera-intrinsics.txt" "$KIT/kitchen/"
cp "$DATA"/LICENSE* "$KIT/kitchen/" 2>/dev/null || true
# dev-20 memorizes 0:700:35 (dev-10's 0:700:70 among them); both query 15:700:10.
for i in $(seq 0 35 699) $(seq 15 10 699); do
    stem=$(printf 'frame-%06d' "$i")
    cp "$DATA/$stem".* "$KIT/kitchen/"
done
cp "$WEIGHTS/alike-n.pth" "$KIT/weights/"
$PIP download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/wheels" "$(grep '^poselib==' requirements.txt)" "$(grep '^faiss-cpu==' requirements.txt)"
du -sh "$KIT"
