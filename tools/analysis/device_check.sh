#!/usr/bin/env bash
# One-command GPU check, for one GPU machine with PyTorch + CUDA preinstalled
# and no network, in under 8 minutes:
#
#   bash tools/analysis/prepare_wheels.sh          # once, on a networked machine
#   bash tools/analysis/device_check.sh [WHEELS]   # on the GPU machine (WHEELS: wheels/)
#
# 1. installs the package's Python dependencies from the local wheel folder
#    into $SITE (no network, no build, nothing compiled; the machine's own
#    torch is used) and puts $SITE and the repository first on sys.path of
#    every python3 process through a .pth file (removed at exit), so the
#    tests' subprocesses (train.py, dist_train.sh) see them too;
# 2. runs the CUDA test subset: tests/test_cuda.py (a training step of
#    every method in fp32/fp16/bf16 against fp32, GPU = CPU in fp32, a
#    1-process NCCL run through dist_train.sh, exact resume on the GPU,
#    benchmark.py on CUDA), tests/test_precision.py (bf16 islands, the
#    --amp-dtype CLI run, now on the GPU), tests/test_install.py (every
#    registered component and every shipped config without mmcv._ext) and
#    the fp16 --amp CLI run;
# 3. benchmarks every paper config at its recipe crop and batch in float32
#    and bfloat16 (benchmark.py --same-process): s/iter, peak GPU memory
#    (torch.cuda.max_memory_allocated) and the ratio to source-only, and one
#    run with the real dataloader on the converted demo data (data time per
#    iteration). Before them, the cost questions of HRDA/MIC (float32, one
#    process each): MIC(HRDA) at its recipe (1024 crops, 2+2 images) with
#    gradient checkpointing of the MiT-B5 encoder against without
#    (model.segmentor.backbone.with_cp=True: does it fit in 24 GB?), and
#    MIC(HRDA) and HRDA against DAFormer at the same 1024 crop
#    (benchmark.py --baseline). Benchmarks stop being started once
#    $BUDGET_S seconds have passed, so the script ends in time; skipped
#    configs and comparisons are listed.
#
# Output in $OUT (the device tool's folder) or work_dirs/device_check:
# device_check.log, env.txt, pytest.xml, benchmark.md, benchmark.json,
# comparisons.txt and comparisons/*.json (the --baseline runs).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
START=$(date +%s)
WHEELS=${1:-wheels}
SCRATCH=${TMPDIR:-/tmp}
SITE=${SITE:-$SCRATCH/mmseg_uda_site}
BUDGET_S=${BUDGET_S:-330}          # no benchmark starts after this (s)
ITERS=${ITERS:-6}
WARMUP=${WARMUP:-3}
OUT_DIR=${OUT:-work_dirs/device_check}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
exec > >(tee -a "$OUT_DIR/device_check.log") 2>&1
export PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[device-check $(elapsed)s] $*"; }

# ------------------------------------------------------------ 1. install
PY=${PYTHON:-python3}
if ! command -v python >/dev/null 2>&1; then  # dist_train.sh calls `python`
  mkdir -p "$SCRATCH/mmseg_uda_bin" && ln -sf "$(command -v "$PY")" "$SCRATCH/mmseg_uda_bin/python"
  export PATH="$SCRATCH/mmseg_uda_bin:$PATH"
fi
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  say "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "$WHEELS"/*.whl || { say 'install failed'; exit 1; }
  else  # no pip: a wheel is a zip of its site-packages files
    mkdir -p "$SITE"
    for whl in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$whl" "$SITE" || exit 1; done
  fi
else
  say "no wheels in $WHEELS: using the packages already installed"
  mkdir -p "$SITE"
fi
PTH_DIR=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
PTH="$PTH_DIR/000_mmseg_uda_device_check.pth"
if [ "${NO_PTH:-0}" != 1 ] && printf \
    'import sys; sys.path[:0] = [p for p in (%s, %s) if p not in sys.path]\n' \
    "'$SITE'" "'$REPO'" > "$PTH" 2>/dev/null; then
  trap 'rm -f "$PTH"' EXIT
else
  say "cannot write $PTH: falling back to PYTHONPATH (subprocess tests may miss $SITE)"
  export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF' | tee "$OUT_DIR/env.txt"
import platform
import torch
import numpy, mmengine, mmcv, mmseg
import mmseg_uda
print(f'python {platform.python_version()}, torch {torch.__version__}, '
      f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, compute '
          f'capability {p.major}.{p.minor}, bf16 '
          f'{torch.cuda.is_bf16_supported()}, {torch.cuda.device_count()} '
          'visible')
else:
    print('no CUDA device visible: the CUDA tests will be skipped')
print(f'numpy {numpy.__version__}, mmengine {mmengine.__version__}, mmcv '
      f'{mmcv.__version__}, mmseg {mmseg.__version__}, mmseg_uda '
      f'{mmseg_uda.__version__}')
try:
    import mmcv._ext  # noqa: F401
    print('mmcv: full (compiled ops)')
except ImportError:
    print('mmcv: lite (no compiled ops; mmcv.ops shim)')
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { say 'import check failed'; exit 1; }

# ------------------------------------------------------------ 2. tests
say 'CUDA test subset'
timeout "${TEST_TIMEOUT_S:-240}" "$PY" -m pytest -q -rs -p no:cacheprovider \
  --junitxml="$OUT_DIR/pytest.xml" \
  ${TESTS:-tests/test_cuda.py tests/test_precision.py tests/test_install.py
  tests/test_train_e2e.py::test_train_cli_amp_without_gpu_is_clear}
TESTS_RC=$?
say "tests finished with exit code $TESTS_RC"

# ------------------------------------------------------------ 3. benchmarks
# Paper configs, GTA5 -> Cityscapes (the SYNTHIA ones share model and crop),
# in order of priority; the recipe's own crops and batch sizes.
CONFIGS=(${CONFIGS:-configs/advent/gta2cs.py configs/cdga/gta2cs.py
  configs/plca/gta2cs.py configs/daformer/gta2cs_dlv2.py
  configs/t2s/gta2cs_dlv2.py configs/daformer/gta2cs.py configs/t2s/gta2cs.py
  configs/mic/gta2cs_daformer.py configs/hrda/gta2cs.py
  configs/mic/gta2cs_hrda.py configs/vfm/gta2cs_dinov2_vitl_mic.py})
BENCH=$(mktemp -d)
SKIPPED=()
# HRDA/MIC cost (docs/hrda.md, docs/mic.md "Cost and memory"): name, then
# benchmark.py arguments; CONFIG against --baseline in one process.
COMPARISONS=(
  "mic_hrda_with_cp_vs_plain|configs/mic/gta2cs_hrda.py --baseline configs/mic/gta2cs_hrda.py --method-cfg-options model.segmentor.backbone.with_cp=True"
  "mic_hrda_vs_daformer_1024|configs/mic/gta2cs_hrda.py --baseline configs/daformer/gta2cs.py --crop 1024"
  "hrda_vs_daformer_1024|configs/hrda/gta2cs.py --baseline configs/daformer/gta2cs.py --crop 1024"
  "vfm_frozen_lora_vs_full|configs/vfm/gta2cs_dinov2_vitl_frozen_lora_mic.py --baseline configs/vfm/gta2cs_dinov2_vitl_mic.py"
  "vfm_with_cp_vs_plain|configs/vfm/gta2cs_dinov2_vitl_mic.py --baseline configs/vfm/gta2cs_dinov2_vitl_mic.py --method-cfg-options model.segmentor.backbone.with_cp=True")
[ "${COMPARE:-1}" = 1 ] || COMPARISONS=()
mkdir -p "$OUT_DIR/comparisons"
for item in ${COMPARISONS[@]+"${COMPARISONS[@]}"}; do  # empty-safe (bash < 4.4)
  name=${item%%|*}
  if [ "$(elapsed)" -ge "$BUDGET_S" ]; then SKIPPED+=("$name"); continue; fi
  say "comparison $name (float32)"
  # shellcheck disable=SC2086
  timeout 120 "$PY" tools/analysis/benchmark.py ${item#*|} --device cuda \
    --same-process --warmup "$WARMUP" --iters "$ITERS" \
    --cfg-options env_cfg.cudnn_benchmark=True \
    --json "$OUT_DIR/comparisons/$name.json" > "$BENCH/$name.txt" 2>&1 \
    || say "comparison $name failed (tail of its output below)"
  sed -n '/^config:/,$p' "$BENCH/$name.txt" | tee -a "$OUT_DIR/comparisons.txt"
  [ -s "$OUT_DIR/comparisons/$name.json" ] || tail -n 20 "$BENCH/$name.txt"
done
for cfg in "${CONFIGS[@]}"; do
  if [ "$(elapsed)" -ge "$BUDGET_S" ]; then SKIPPED+=("$cfg"); continue; fi
  [ -f "$cfg" ] || { say "no $cfg"; continue; }
  name=$(echo "$cfg" | sed 's|configs/||; s|/|_|g; s|\.py$||')
  say "benchmark $cfg (float32, bfloat16)"
  timeout 120 "$PY" tools/analysis/benchmark.py "$cfg" --device cuda \
    --amp-dtype float32 bfloat16 --same-process --warmup "$WARMUP" \
    --iters "$ITERS" --cfg-options env_cfg.cudnn_benchmark=True \
    --json "$BENCH/$name.json" || say "benchmark of $cfg failed"
done
# the real dataloader on the converted demo data (data time per iteration)
if [ "$(elapsed)" -lt "$((BUDGET_S - 60))" ]; then
  say 'demo data + dataloader benchmark (configs/daformer/gta2cs_dlv2.py, bf16)'
  DEMO=$(mktemp -d)/demo
  timeout 60 "$PY" tools/make_demo_data.py "$DEMO" --num-train 40 \
    --num-val 2 --nproc 8 >/dev/null \
  && timeout 100 "$PY" tools/analysis/benchmark.py \
    configs/daformer/gta2cs_dlv2.py --device cuda --amp-dtype bfloat16 \
    --same-process --warmup "$WARMUP" --iters "$((ITERS * 2))" \
    --dataloader --demo-data "$DEMO" \
    --cfg-options env_cfg.cudnn_benchmark=True \
    --json "$BENCH/daformer_gta2cs_dlv2_dataloader.json" \
  || say 'dataloader benchmark failed'
else
  SKIPPED+=('dataloader benchmark')
fi
if ls "$BENCH"/*.json >/dev/null 2>&1; then
  "$PY" tools/analysis/benchmark_table.py "$BENCH"/*.json \
    --markdown "$OUT_DIR/benchmark.md" --json "$OUT_DIR/benchmark.json" \
    --title "GPU step time and peak memory ($WARMUP warm-up + $ITERS iterations)"
fi
[ ${#SKIPPED[@]} = 0 ] || say "not benchmarked (time budget ${BUDGET_S}s): ${SKIPPED[*]}" \
  | tee -a "$OUT_DIR/benchmark.md"
say "done: tests exit code $TESTS_RC; results in $OUT_DIR"
exit $TESTS_RC
