#!/usr/bin/env bash
# The GPU checks and benchmarks in one call of a lent GPU machine (Python 3.12, a CUDA build of torch, no network).
#
#   bash benchmarks/device_run.sh prepare        # here: wheels/ (cp312 wheels the GPU machine lacks), device/ (data)
#   bash benchmarks/device_run.sh run [STEPS]    # there, with carry ["wheels", "device"]; results under $OUT
#
# STEPS (default "tests models train hippocampus"): any of
#   tests        the unit and CLI tests on the GPU machine (CUDA is picked wherever a test asks for "auto")
#   models       benchmarks/models.py --gpu: images/s of every architecture in bf16, inference and a training step
#   train        benchmarks/train.py --gpu --no-peer: unet3d 128³ bf16 training samples/s, memory, MFU
#   hippocampus  benchmarks/train_hippocampus.py --device cuda --systems medseg,monai --minutes $MINUTES (default 2)
# Each step has its own time limit and a failed step does not stop the next; logs and JSON come back in $OUT.
# nnU-Net is left out there: its wheels (SimpleITK alone is 53 MB) and the data exceed the 64 MiB a call carries.
set -u
cd "$(dirname "$0")/.."
SHARED_SRC=${MEDSEG_SHARED_DATA:-../shared/data}
PIP_TARGET_ARGS=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# Not in the GPU machine's image (typer: the CLI needs 0.29; the image's may differ). Lazy imports only: SimpleITK,
# highdicom (DICOM paths) stay behind.
WHEELS=(monai==1.6.1 nibabel==5.4.2 pydicom==3.0.2 typer==0.29.2)

prepare() {
  mkdir -p wheels device/shared/3d
  python3 -m pip download -q "${PIP_TARGET_ARGS[@]}" -d wheels "${WHEELS[@]}" || exit 1
  if ! ls wheels/pydensecrf2-*cp312*.whl >/dev/null 2>&1; then
    # no binary for Python 3.12 on the index: build one with a local Python 3.12 (PY312, else pyenv's, else PATH's)
    local py=${PY312:-$(ls "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}
    py=${py:-python3.12}
    "$py" -c "import sys; assert sys.version_info[:2] == (3, 12)" || { echo "prepare: set PY312 to a Python 3.12"; exit 1; }
    "$py" -m pip wheel -q --no-deps --no-cache-dir -w wheels pydensecrf2==1.1 || exit 1
  fi
  rm -rf device/shared/3d/hippocampus
  cp -r "$SHARED_SRC/3d/hippocampus" device/shared/3d/ || exit 1
  du -sh wheels device
}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, go on after a failure
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  tail -5 "$OUT/$name.log"
}

run() {
  : "${OUT:?run on the GPU machine, where OUT is set}"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site wheels/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MEDSEG_SHARED_DATA=$PWD/device/shared
  nvidia-smi -L; python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"
  python3 -m medseg ingest device/shared/3d/hippocampus --name hippocampus >"$OUT/ingest.log" 2>&1 \
    || { tail -3 "$OUT/ingest.log"; exit 1; }
  for s in ${1:-tests models train hippocampus}; do
    case $s in
      tests) step tests 180 python3 -m pytest -q -n 8 -p no:cacheprovider tests/unit tests/cli ;;
      models) step models 150 python3 benchmarks/models.py --gpu --seconds 2 ;;
      train) step train 150 python3 benchmarks/train.py --gpu --no-peer --seconds 15 ;;
      hippocampus) step hippocampus $(( ${MINUTES:-2} * 120 + 180 )) python3 benchmarks/train_hippocampus.py \
        --device cuda --systems medseg,monai --minutes "${MINUTES:-2}" --threads 8 \
        --out "$OUT/train_hippocampus_gpu.json" ;;
      *) echo "unknown step $s" ;;
    esac
  done
  cp benchmarks/results/models_gpu.json benchmarks/results/train_gpu.json "$OUT/" 2>/dev/null
  ls "$OUT"
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 prepare | run [STEPS]"; exit 2 ;;
esac
