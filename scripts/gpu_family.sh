#!/usr/bin/env bash
# One device call for the models issue: the autoencoder family (results/autoencoder/train_family.sh)
# trained on the GPU, all four members at once, and the run folders brought back through $OUT.
#
#   here:    mkdir -p data && cp ../shared/datasets/cifar10-jpeg/train.tar.gz data/     (data/ is git-ignored)
#   device:  run(command="scripts/gpu_family.sh", carry=["data"], timeout_s=540)
#   here:    for t in <files_at>/rae_*.tar; do tar -xf "$t" -C runs/autoencoder; done
#            results/autoencoder/ship.sh          (export on the CPU: parity, scores, manifest, card)
#
# EPOCHS (default 200) sets the recipe's length; checked here with
#   DEVICE=cpu EPOCHS=1 DATA=fake:256 THREADS=1 RUNS=/tmp/family OUT=/tmp/family_out scripts/gpu_family.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-200}
DATA=${DATA:-data/train.tar.gz}
OUT=${OUT:-$(mktemp -d)}
export RUNS=${RUNS:-runs/autoencoder}
export PYTHONUNBUFFERED=1 CAE="python3 -m cae"
(nvidia-smi -L || true) | tee "$OUT/hardware.txt"
started=$(date +%s)
EPOCHS=$EPOCHS PAIRS=4 THREADS=${THREADS:-4} results/autoencoder/train_family.sh --data "$DATA" --device "${DEVICE:-cuda}" \
  2>&1 | tee "$OUT/train.log"
echo "family trained in $(( $(date +%s) - started )) s" | tee -a "$OUT/train.log"
for run in "$RUNS"/rae_*; do
  tar -cf "$OUT/$(basename "$run").tar" -C "$RUNS" "$(basename "$run")"
done
ls -la "$OUT"
