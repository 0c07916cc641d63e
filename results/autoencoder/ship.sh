#!/usr/bin/env bash
# Export the shipped models/ from the candidate autoencoders (train_candidates.sh) and the colorizer
# (results/colorization/train_all.sh), with the colorizer's decoding chosen on validation by color-report.
# The autoencoder is picked by the rule in export/choose.py; the model card records the command and numbers.
set -euo pipefail
cae export --autoencoder runs/autoencoder/rae_* \
  --colorizer runs/colorization/unet_lab_classification \
  --decoding-from results/colorization/results.json \
  --out models "$@"
