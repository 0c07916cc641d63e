#!/usr/bin/env bash
# The residual autoencoders that compete to be shipped (see models/MODEL_CARD.md for the rule that picks one).
# Full training split of the default data (../shared's CIFAR-10 JPEG copy), MSE, cosine schedule.
# Resumable: rerun the same command after a kill and each run continues from its last finished epoch.
# THREADS=1 runs the candidates side by side on a 2-core machine.
set -euo pipefail
EPOCHS=${EPOCHS:-40}
export OMP_NUM_THREADS=${THREADS:-1}
for model in rae_w16_d3_z4_b1 rae_w16_d3_z8_b1; do
  cae train --model "$model" --loss mse --schedule cosine --epochs "$EPOCHS" --batch-size 128 --lr 2e-3 \
    --out "runs/autoencoder/$model" --quiet "$@" &
done
wait
