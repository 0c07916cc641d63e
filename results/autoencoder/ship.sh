#!/usr/bin/env bash
# Export the shipped models/: the autoencoder family (train_family.sh) and the colorizer
# (results/colorization/train_all.sh), with the colorizer's decoding chosen on validation by color-report.
# Where a model's run folder is gone (checkpoints are not committed), its run rebuilt from models/ by
# `cae recover models/NAME` (into RECOVERED, default runs/recovered) is exported instead, if there is one
# (to add a gradient graph, say); else the model already in models/ is kept as it is (--reuse models --keep NAME). The default autoencoder is picked by the
# rule in export/choose.py; the model card records the command and the numbers. Each run's result,
# metrics and loss curve are copied next to this script.
# The defaults are the runs behind what models/ ships now (README, "The shipped models"). MEMBERS="name ..."
# ships other members (run folders under RUNS, or paths with a slash; RUN=NAME serves a run under a name of
# its own, beside another run of the same network); COLORIZER=<run folder> another
# colorizer run, DECODING=<results.json> the color-report that chose its decoding.
# Other arguments go to `cae export`: models/ scores pae_k64_w16_l3_refine at 10, 25 and 50 refining steps
# (`--refine-steps 10,25,50 --data data/train.tar.gz`; it meets the target at 50), the others at 10 and 25.
set -euo pipefail
RUNS=${RUNS:-runs/autoencoder}
SHIPPED="runs/gpu/autoencoder/rae_w16_d2_z1_b1 runs/gpu/autoencoder/rae_w16_d2_z2_b1"
SHIPPED+=" runs/gpu64/autoencoder/rae_w64_d1_z1_b1 runs/gpu64/autoencoder/rae_w64_d1_z2_b1"
SHIPPED+=" runs/pae_flip/pae_k64_w16_l3 runs/pae_flip/pae_k128_w16_l3 runs/pae_flip/pae_k256_w16_l3 runs/pae_flip/pae_k512_w16_l3"
SHIPPED+=" runs/refined25b/pae_k64_w16_l3=pae_k64_w16_l3_refine"  # its decoder trained for refined latents
read -r -a names <<< "${MEMBERS:-$SHIPPED}"
family=()
for name in "${names[@]}"; do [[ ${name%=*} == */* ]] && family+=("$name") || family+=("$RUNS/$name"); done
colorizer=${COLORIZER:-runs/colorization/unet64g_served80}
recovered=${RECOVERED:-runs/recovered}
present=() gone=()
member() { [[ $1 == *=* ]] && echo "${1##*=}" || basename "$1"; }  # the name a family entry is served by
for spec in "${family[@]}"; do
  run=${spec%=*} alias=""
  [[ $spec == *=* ]] && alias="=${spec##*=}"
  if [[ -f $run/checkpoint.pt ]]; then present+=("$spec")
  elif [[ -f $recovered/$(member "$spec")/checkpoint.pt ]]; then present+=("$recovered/$(member "$spec")$alias")
  else gone+=("$(member "$spec")"); fi
done
args=()
(( ${#present[@]} )) && args+=(--autoencoder "${present[@]}")
if [[ -f $colorizer/checkpoint.pt ]]; then
  args+=(--colorizer "$colorizer" --decoding-from "${DECODING:-results/colorization/served80/results.json}")
else
  gone+=(colorizer)
fi
(( ${#gone[@]} )) && args+=(--reuse models --keep "${gone[@]}")
cae export "${args[@]}" --out models "$@"
here=$(dirname "$0")
for spec in "${present[@]}"; do
  run=${spec%=*}
  [[ -f $run/result.json ]] || continue  # a recovered run has no curves: the ones copied when it was trained stay
  dest="$here/$(member "$spec")"
  # A fine-tuned run's curves go beside those of the run it started from, not over them.
  grep -q '^  "init": {' "$run/result.json" && dest+=/fine_tune
  mkdir -p "$dest"
  cp "$run/result.json" "$run/metrics.csv" "$run/loss_curve.png" "$dest/"
done
for sweep in results/sweep results/sweep_full; do cae figures --sweep "$sweep" --family models; done
cae figures --sweep results/sweep_full --family models --margins "$here/family_margins.png"
