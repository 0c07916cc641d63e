#!/usr/bin/env bash
# The GPU training issue's figures in one device call (see the `device` notes in README "GPU"):
#   1. benchmarks/gpu_train.py: the project's step against the plain loops and the notebook loop;
#   2. the study's 36-model sweep at its settings (batch 32, Adam 1e-3, 10 epochs) on the full training
#      split, WORKERS trials at once on the one GPU, timed, into SWEEP (default runs/sweep_full_gpu: a fresh
#      folder, since results/sweep_full is complete and a resumed sweep times only what it still trains;
#      copy it over results/sweep_full to ship an all-GPU table) with Fig. 2 and Fig. 3.
# Everything comes back in $OUT: the benchmark's JSON and log, and the sweep folder as a tar (no
# checkpoints). The sweep resumes: a call cut short keeps its finished trials in SWEEP on
# the machine while it stays warm, and the tar holds what finished.
#
#   run: DATA=data/train.tar.gz scripts/gpu_train_bench.sh       (carry ["data"]; first, here: scripts/device_tree.sh out)
#   here, to check the script: DEVICE=cpu DATA=fake:512 IMAGES=512 ROUNDS=1 WORKERS=2 OUT=/tmp/out scripts/gpu_train_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
# The device machine has torch but not this package installed: run it from the checkout.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-data/train.tar.gz}
WORKERS=${WORKERS:-6}
IMAGES=${IMAGES:-40000}
ROUNDS=${ROUNDS:-3}
SWEEP=${SWEEP:-runs/sweep_full_gpu}
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
# Trials in separate processes time-slice the GPU unless the CUDA MPS daemon lets their kernels run side
# by side; start it where the machine has it (MPS=0 to compare without), and check a CUDA client still starts.
if [[ ${MPS:-1} == 1 && $DEVICE == cuda ]] && command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/mps-pipe} CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/mps-log}
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c "import torch; torch.zeros(1, device='cuda')"; then
    echo "MPS: on" | tee "$OUT/mps.txt"
    trap 'echo quit | nvidia-cuda-mps-control' EXIT
    trap 'exit 143' TERM  # cut short by the caller's timeout: still stop the daemon
  else
    echo quit | nvidia-cuda-mps-control 2> /dev/null
    echo "MPS: could not start; trials time-slice the GPU" | tee "$OUT/mps.txt"
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
python3 benchmarks/gpu_train.py --device "$DEVICE" --data "$DATA" --images "$IMAGES" --rounds "$ROUNDS" \
  --sweep --workers "$WORKERS" --sweep-out "$SWEEP" --out "$OUT/gpu_train.json" 2>&1 | tee "$OUT/gpu_train.log"
tar czf "$OUT/sweep_full.tar.gz" --exclude=trials "$SWEEP"
ls -la "$OUT"
