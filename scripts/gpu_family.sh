#!/usr/bin/env bash
# One device call for the models issue: the autoencoder family (results/autoencoder/train_family.sh)
# trained on the GPU, all four members at once (100 epochs: 7.3 min on one H100; two width-64 members
# at once: 47 epochs in 225 s on one H200) (and, with COLORIZER_EPOCHS > 0, a wider colorizer beside
# them), stopped after BUDGET_S seconds whatever the epoch, and the run folders brought back through $OUT.
#
#   here:    mkdir -p data && cp ../shared/datasets/cifar10-jpeg/train.tar.gz data/     (data/ is git-ignored)
#            scripts/device_tree.sh out      (models/ off device calls: alone they are over 64 MiB; `in` after)
#   device:  run(command="scripts/gpu_family.sh", carry=["data"], timeout_s=540)
#            (a second call carries the unpacked runs/ back, carry=["data", "runs"], and resumes them)
#   here:    cd <files_at> && for p in *.part-aa; do cat "${p%.part-aa}".part-* > /tmp/"${p%.part-aa}"; done
#            for t in <files_at>/*.tar /tmp/*.tar; do tar -xf "$t" -C runs; done
#            MEMBERS="runs/... " results/autoencoder/ship.sh   (export on the CPU: parity, scores, manifest, card)
#
# MEMBERS, LOSS and BATCH pass to train_family.sh, and so do extra arguments (e.g. --augment flip, as the
# PCA-started member was trained).
# EPOCHS (default 100: what the shipped family was trained with) sets the recipe's length; checked here with
#   DEVICE=cpu EPOCHS=1 DATA=fake:256 THREADS=1 RUNS=/tmp/family OUT=/tmp/family_out scripts/gpu_family.sh
set -uo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-100}
DATA=${DATA:-data/train.tar.gz}
BUDGET_S=${BUDGET_S:-420}
COLORIZER_EPOCHS=${COLORIZER_EPOCHS:-0}
OUT=${OUT:-$(mktemp -d)}
export RUNS=${RUNS:-runs/autoencoder}
export PYTHONUNBUFFERED=1 CAE="python3 -m cae"
# $OUT brings back 8 files of at most 16 MiB: one log, one tar per run, split in 15 MiB parts where larger.
LOG=$OUT/train.log
(nvidia-smi -L || echo "no nvidia-smi") | tee "$LOG"
started=$(date +%s)
if (( COLORIZER_EPOCHS > 0 )); then
  # Routes the models issue names: longer training on all colour images and a wider U-Net; cosine and the
  # global-context fusion layer, as the shipped width-32 colorizer (16 cosine epochs beat 5 constant ones by
  # ~0.2 dB at equal colourfulness; the fusion layer another ~0.1 dB).
  timeout "$BUDGET_S" $CAE train-colorizer --width 64 --global-context --schedule cosine --epochs "$COLORIZER_EPOCHS" --data "$DATA" \
    --device "${DEVICE:-cuda}" --quiet --out "$RUNS/../colorization/unet64g_lab_classification" > "$OUT/colorizer.tmp" 2>&1 &
fi
EPOCHS=$EPOCHS PAIRS=4 THREADS=${THREADS:-4} timeout "$BUDGET_S" results/autoencoder/train_family.sh --data "$DATA" \
  --device "${DEVICE:-cuda}" "$@" 2>&1 | tee -a "$LOG"
wait
if [[ -f $OUT/colorizer.tmp ]]; then cat "$OUT/colorizer.tmp" >> "$LOG"; rm "$OUT/colorizer.tmp"; fi
echo "stopped after $(( $(date +%s) - started )) s (budget $BUDGET_S s); finished epochs:" | tee -a "$LOG"
for run in "$RUNS"/rae_* "$RUNS"/pae_* "$RUNS"/../colorization/*; do
  [[ -f $run/checkpoint.pt ]] || continue
  echo "  $(basename "$run"): $(tail -n +2 "$run/metrics.csv" | wc -l)" | tee -a "$LOG"
  tarball=$OUT/$(basename "$(dirname "$run")")_$(basename "$run").tar
  tar -cf "$tarball" -C "$(dirname "$(dirname "$run")")" "$(basename "$(dirname "$run")")/$(basename "$run")"
  if (( $(stat -c %s "$tarball") > 15 * 1024 * 1024 )); then  # here: cat NAME.tar.part-* > NAME.tar
    split -b 15m "$tarball" "$tarball.part-" && rm "$tarball"
  fi
done
ls -la "$OUT"
