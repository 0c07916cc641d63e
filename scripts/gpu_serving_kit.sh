#!/usr/bin/env bash
# The GPU serving issue's figures on a lent GPU machine, which has python 3.12 and torch but neither
# onnxruntime-gpu (a 255 MB wheel) nor the service's dependencies nor wrk, and takes at most 64 MiB per
# call, the checkout included (README "GPU"; scripts/device_tree.sh). Three steps:
#
#   here:    scripts/gpu_serving_kit.sh prepare
#            -> wheels/gpu/ (git-ignored): ort/part-aa.. (46,000,000-byte pieces of the wheel) and
#               ort/sha256, serve/*.whl (the serve extra for cp312, without numpy and pillow, which the
#               machine has), bin/ (this machine's wrk and its LuaJIT library), models/ (the default
#               autoencoder and the colorizer: `cae export --reuse models --keep`), and the device calls
#               that carry them, each under 64 MiB with the checkout: run `scripts/device_tree.sh out`
#               first (the shipped models/ alone are over the limit), `scripts/device_tree.sh in` after
#   device:  scripts/gpu_serving_kit.sh stage            carry: the pieces prepare's plan gives that call
#            ... back to back while the machine stays warm (30 s idle): each copies what it carries
#            under wheels/gpu/ to /tmp/cae-kit/ there
#   device:  scripts/gpu_serving_kit.sh run              carry: the plan's last call
#            stages its own pieces, joins the parts, checks the sha256, unpacks the wheels into /tmp/site,
#            and runs benchmarks/gpu_serving.py (CPU and CUDA providers, batching off and on, c1/c16/c64)
#            and benchmarks/photo_size.py with CAE_PROVIDERS=cuda on the kit's models, results and logs
#            into $OUT.
#
# `run` with STAGE_ONLY=1 stops after installing (checks the kit here: the wheel is cp312, so nothing is
# imported). BENCH_ARGS go to gpu_serving.py (e.g. "--duration 5").
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=wheels/gpu
ORT_WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
STAGE=${STAGE:-/tmp/cae-kit}
SITE=${SITE:-/tmp/site}

serve_requirements() {
  # The serve extra's pins, read from pyproject.toml, without onnxruntime (the GPU build replaces it).
  python3 - <<'EOF'
import re, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
for req in extras["serve"]:
    if not re.match(r"onnxruntime\b", req):
        print(req)
EOF
}

stage() {
  # Whatever of the kit this call carried (a path not carried is absent here) joins what earlier calls left.
  mkdir -p "$STAGE"
  [[ -d $KIT ]] && cp -r "$KIT"/. "$STAGE"/
  find "$STAGE" -maxdepth 2 | sort
}

plan() {
  # The device calls that carry the kit: its pieces in order (the wheel's parts, its checksum, serve/, models/,
  # bin/), packed into as few calls as fit beside the checkout; every call but the last stages.
  local tree limit=$((64 * 1024 * 1024 - 1024 * 1024))  # a MiB of room for files written meanwhile
  tree=$(scripts/device_tree.sh bytes)
  ((tree < limit)) || { echo "the checkout alone is over 64 MiB: scripts/device_tree.sh out, then $0 plan" >&2; return 1; }
  local pieces=("$KIT"/ort/part-* "$KIT/ort/sha256" "$KIT/serve" "$KIT/models" "$KIT/bin") calls=() call="" used=$tree size
  for piece in "${pieces[@]}"; do
    size=$(scripts/device_tree.sh bytes "$piece")
    size=$((size - tree))
    if [[ -n $call ]] && ((used + size > limit)); then calls+=("$call"); call="" used=$tree; fi
    ((tree + size <= limit)) || { echo "$piece alone does not fit beside the checkout" >&2; return 1; }
    call+="${call:+, }\"$piece\"" used=$((used + size))
  done
  calls+=("$call")
  local n=${#calls[@]} i
  echo "device calls ($n, back to back; the checkout sends $((tree / 1048576)) MiB each):"
  for ((i = 0; i < n; i++)); do
    if ((i < n - 1)); then
      echo "  run(command=\"scripts/gpu_serving_kit.sh stage\", carry=[${calls[i]}], timeout_s=120)"
    else
      echo "  run(command=\"scripts/gpu_serving_kit.sh run\", carry=[${calls[i]}], timeout_s=540)"
    fi
  done
}

case "${1:-}" in
prepare)
  rm -rf "$KIT" && mkdir -p "$KIT/ort" "$KIT/serve" "$KIT/bin"
  target=(--python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any)
  pip download --no-deps "${target[@]}" -d "$KIT" onnxruntime-gpu==1.31.1
  (cd "$KIT" && sha256sum "$ORT_WHEEL" > ort/sha256 && split -b 46000000 "$ORT_WHEEL" ort/part- && rm "$ORT_WHEEL")
  mapfile -t reqs < <(serve_requirements)
  pip download "${target[@]}" -d "$KIT/serve" "${reqs[@]}"
  rm -f "$KIT"/serve/numpy-*.whl "$KIT"/serve/pillow-*.whl
  wrk_bin=$(command -v wrk) || { echo "wrk not found here: apt-get install wrk" >&2; exit 1; }
  cp "$wrk_bin" "$KIT/bin/wrk"
  ldd "$wrk_bin" | awk '/luajit/ {print $3}' | xargs -r -I{} cp -L {} "$KIT/bin/"
  cae export --reuse models --keep "$(python3 -c 'import json; print(json.load(open("models/manifest.json"))["default_autoencoder"])')" \
    colorizer --out "$KIT/models" > "$KIT/models.log"
  du -sh "$KIT"/ort/* "$KIT/serve" "$KIT/bin" "$KIT/models"
  plan || true
  ;;
plan)
  plan
  ;;
stage)
  stage
  ;;
run)
  stage
  parts=("$STAGE"/ort/part-*)
  cat "${parts[@]}" > "$STAGE/$ORT_WHEEL"
  (cd "$STAGE" && sha256sum -c ort/sha256) || { echo "the wheel's parts are not all there (arrived: ${parts[*]##*/}): carry the others with stage calls first" >&2; exit 1; }
  rm -rf "$SITE" && mkdir -p "$SITE"
  python3 -m zipfile -e "$STAGE/$ORT_WHEEL" "$SITE"
  for wheel in "$STAGE"/serve/*.whl; do python3 -m zipfile -e "$wheel" "$SITE"; done
  [[ ${STAGE_ONLY:-0} == 1 ]] && { ls "$SITE" | head -50; exit 0; }
  OUT=${OUT:?set OUT}
  export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
  export WRK=$STAGE/bin/wrk LD_LIBRARY_PATH=$STAGE/bin:${LD_LIBRARY_PATH:-}
  # onnxruntime-gpu's CUDA provider needs the CUDA 13 runtime, cuBLAS and cuDNN: torch's nvidia packages have them.
  nvidia_libs=$(python3 -c "import glob, os, nvidia; print(':'.join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + '/**/lib/*.so*', recursive=True)})))" 2>/dev/null || true)
  export LD_LIBRARY_PATH=$nvidia_libs:$LD_LIBRARY_PATH
  { nvidia-smi -L; python3 -c "import onnxruntime as ort; print(ort.__version__, ort.get_available_providers())"; } 2>&1 | tee "$OUT/versions.txt"
  timeout "${BENCH_S:-330}" python3 benchmarks/gpu_serving.py --models "$STAGE/models" --providers cpu cuda --out "$OUT/gpu_serving.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_serving.log" || true
  CAE_PROVIDERS=cuda timeout "${PHOTO_S:-150}" python3 benchmarks/photo_size.py --models "$STAGE/models" --out "$OUT/photo_size_cuda.json" 2>&1 | tee "$OUT/photo_size_cuda.log" || true
  ;;
*)
  echo "usage: $0 prepare | plan | stage | run" >&2
  exit 2
  ;;
esac
