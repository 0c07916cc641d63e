#!/usr/bin/env bash
# The colorization runs behind results/colorization/ (resumable: rerun after a kill).
set -euo pipefail
# The study's setting: its best autoencoder (the sweep's cae_l5_ch4_k3_s1) with one input channel,
# L2 loss, one run per encoding, on 10% of the data (the study: 100 epochs; here 15).
for enc in ycbcr ycbcr_centred ratio difference rgb lab; do
  cae train-colorizer --arch cae --color-loss l2 --encoding "$enc" --fraction 0.1 --epochs 15 --batch-size 32 --quiet \
    --out "runs/colorization/study_$enc"
done
# The fix: a U-Net with Zhang et al.'s rebalanced classification loss and annealed mean, full training split.
cae train-colorizer --arch unet --color-loss classification --encoding lab --epochs 5 --quiet --out runs/colorization/unet_lab_classification
# The same U-Net with L2 on Lab, to separate the effect of the loss from that of the network.
cae train-colorizer --arch unet --color-loss l2 --encoding lab --epochs 4 --quiet --out runs/colorization/unet_lab_l2
