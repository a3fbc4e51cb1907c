#!/usr/bin/env bash
# Download, on a machine with network access, the wheels that
# tools/analysis/device_check.sh installs on an offline GPU machine that has
# PyTorch + CUDA (and the usual scientific stack) preinstalled.
#
#   bash tools/analysis/prepare_wheels.sh [DIR]      # default: wheels/ (git-ignored)
#
# What: the pinned runtime requirements (requirements/mmcv_lite.txt +
# runtime.txt) and their dependencies that a CUDA PyTorch image usually
# lacks, for CPython $PYVER on manylinux x86_64, one version each, no
# dependency resolution (--no-deps): every name is listed here. Not torch
# (the machine's own CUDA build is kept) and not opencv-python (~60 MB; the
# image's opencv-python(-headless) provides the same cv2). numpy is the
# requirements' pin (2.3.5: numpy 2.4 removed np.in1d, which
# cityscapesscripts' evaluation calls), so the check runs the same numpy as
# `pip install -r requirements.txt` would. About 30 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-wheels}
PYVER=${PYVER:-3.12}
PYTHON=${PYTHON:-python3}

pinned() {  # NAME==VERSION of a requirement file line
  grep -hE "^$1==" requirements/mmcv_lite.txt requirements/runtime.txt \
    | awk '{print $1}'
}
PACKAGES=(
  "$(pinned mmcv-lite)" "$(pinned mmengine)" "$(pinned mmsegmentation)"
  "$(pinned numpy)" "$(pinned setuptools)" "$(pinned ftfy)"
  "$(pinned regex)" "$(pinned cityscapesscripts)" "$(pinned kornia)"
  # dependencies of the above that CUDA PyTorch images usually lack
  # (versions as resolved by `pip install -r requirements.txt`, 2026-12)
  kornia-rs==0.2.0 wcwidth==0.9.4 addict==2.4.0 yapf==0.43.0
  platformdirs==4.14.9 termcolor==3.3.0 prettytable==3.18.0
  appdirs==1.4.4 pyquaternion==0.9.9 coloredlogs==15.0.1
  humanfriendly==10.0
)
mkdir -p "$DIR"
echo "[wheels] ${#PACKAGES[@]} packages for CPython $PYVER manylinux x86_64 -> $DIR"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$DIR" "${PACKAGES[@]}"
ls -1 "$DIR"
du -sh "$DIR"
