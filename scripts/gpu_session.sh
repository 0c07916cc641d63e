#!/usr/bin/env bash
# One device call for a session lent a GPU, in the order the issues ask for: the GPU training issue's
# figures first (scripts/gpu_train_bench.sh, at most BENCH_S seconds), then the models issue's family
# (scripts/gpu_family.sh) in what is left of TOTAL_S. Everything comes back in $OUT (at most 8 files):
# train_bench.tar (benchmark JSON and log, the full-split sweep folder), train.log and one tar per run.
#
#   here:    mkdir -p data && cp ../shared/datasets/cifar10-jpeg/train.tar.gz data/
#            scripts/device_tree.sh out      (models/ off device calls: alone they are over 64 MiB; `in` after)
#   device:  run(command="scripts/gpu_session.sh", carry=["data"], timeout_s=570)
#   here:    tar -xf <files_at>/train_bench.tar -C /tmp/bench && tar -xzf /tmp/bench/sweep_full.tar.gz (runs/sweep_full_gpu)
#            then the run tars as in scripts/gpu_family.sh
#
# MEMBERS, LOSS, EPOCHS, COLORIZER_EPOCHS go to gpu_family.sh (the family recipe); SKIP_BENCH=1 trains only.
# Checked here with: DEVICE=cpu DATA=fake:512 IMAGES=512 ROUNDS=1 WORKERS=2 EPOCHS=1 TOTAL_S=400 OUT=/tmp/s scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT}
TOTAL_S=${TOTAL_S:-540}
BENCH_S=${BENCH_S:-300}
started=$(date +%s)
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  bench=$(mktemp -d)
  OUT=$bench timeout "$BENCH_S" scripts/gpu_train_bench.sh
  [[ -f $bench/sweep_full.tar.gz ]] || tar czf "$bench/sweep_full.tar.gz" --exclude=trials "${SWEEP:-runs/sweep_full_gpu}" 2>/dev/null
  tar -cf "$OUT/train_bench.tar" -C "$bench" .
fi
left=$(( TOTAL_S - ($(date +%s) - started) - 40 ))  # 40 s to tar the runs
echo "training budget: $left s"
(( left > 60 )) && BUDGET_S=$left scripts/gpu_family.sh
ls -la "$OUT"
