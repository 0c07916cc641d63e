#!/usr/bin/env bash
# Short pilots that chose the family's recipe: 5 epochs on 20 % of the data (about 1 full-data epoch),
# cosine schedule, batch 128, lr 2e-3, one thread each, two at a time; then a table of test PSNR
# (pilots.md). Each line of PILOTS is "<folder name> <model> <extra cae train flags>". Resumable like any
# run; `pilot.sh report` only rewrites the table from the run folders in $RUNS. TABLE names the table
# (default pilots.md beside this script); flags in a line override the defaults (e.g. --lr 4e-3).
set -euo pipefail
RUNS=${RUNS:-runs/pilot}
CAE=${CAE:-cae}
here=$(dirname "$0")
PILOTS=${PILOTS:-"rae_w16_d1_z2_b1 rae_w16_d1_z2_b1 --loss mse
rae_w32_d1_z2_b1 rae_w32_d1_z2_b1 --loss mse
rae_w32_d1_z2_b2 rae_w32_d1_z2_b2 --loss mse
rae_w64_d1_z2_b1 rae_w64_d1_z2_b1 --loss mse
rae_w16_d1_z2_b1_psnr rae_w16_d1_z2_b1 --loss psnr
rae_w16_d1_z1_b1 rae_w16_d1_z1_b1 --loss mse
rae_w16_d1_z1_b1_psnr rae_w16_d1_z1_b1 --loss psnr
rae_w16_d2_z2_b1 rae_w16_d2_z2_b1 --loss mse
rae_w16_d2_z2_b1_psnr rae_w16_d2_z2_b1 --loss psnr
rae_w16_d2_z2_b1_ema2 rae_w16_d2_z2_b1 --loss mse --ema 0.999
rae_w16_d2_z2_b1_flip rae_w16_d2_z2_b1 --loss mse --augment flip"}
if [[ ${1:-} != report ]]; then
  export OMP_NUM_THREADS=1
  mapfile -t lines <<< "$PILOTS"
  for ((i = 0; i < ${#lines[@]}; i += 2)); do
    for line in "${lines[@]:i:2}"; do
      read -r out model flags <<< "$line"
      # shellcheck disable=SC2086 (flags are words)
      $CAE train --model "$model" --schedule cosine --epochs 5 --batch-size 128 --lr 2e-3 --fraction 0.2 \
        --out "$RUNS/$out" --quiet $flags > /dev/null &
    done
    wait
  done
fi
python3 - "$RUNS" "${TABLE:-$here/pilots.md}" <<'PY'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for result in sorted(runs.glob("*/result.json")):
    r = json.loads(result.read_text())
    t = r["train"]
    rows.append((r["latent_size"], r["name"], t["loss"], t.get("ema", 0), t.get("augment", "none"), t["lr"], t["batch_size"],
                 r["epochs"], r["parameters"], r["test"]["psnr"]))
lines = ["| latent | model | loss | EMA | augment | lr | batch | epochs | parameters | test PSNR (dB) |", "|---|---|---|---|---|---|---|---|---|---|"]
lines += [f"| {z} | {n} | {l} | {e or '-'} | {a} | {lr:g} | {b} | {ep} | {p:,} | {s:.2f} |"
          for z, n, l, e, a, lr, b, ep, p, s in sorted(rows, key=lambda r: (-r[0],) + r[1:8])]
text = "Pilots (results/autoencoder/pilot.sh): 20 % of the training split, cosine schedule.\n\n" + "\n".join(lines) + "\n"
out.write_text(text)
print(text)
PY
