#!/usr/bin/env bash
# The GPU serving issue's figures on a lent GPU machine, which has python 3.12 and torch but neither
# onnxruntime-gpu (a 255 MB wheel) nor the service's dependencies nor wrk, and takes at most 64 MiB per
# call (README "GPU"). Three steps:
#
#   here:    scripts/gpu_serving_kit.sh prepare
#            -> wheels/gpu/ (git-ignored): ort/part-aa.. (46,000,000-byte pieces of the wheel) and
#               ort.sha256, serve/*.whl (the serve extra for cp312, without numpy and pillow, which the
#               machine has), bin/ (this machine's wrk and its LuaJIT library)
#   device:  scripts/gpu_serving_kit.sh stage            carry ["wheels/gpu/ort/part-aa"]
#            ... one call per part but the last, back to back while the machine stays warm (30 s idle):
#            each copies its part to /tmp/cae-ort/ there
#   device:  scripts/gpu_serving_kit.sh run              carry ["wheels/gpu/ort/part-af", "wheels/gpu/serve", "wheels/gpu/bin"]
#            joins the parts, checks the sha256, unpacks the wheels into /tmp/site, and runs
#            benchmarks/gpu_serving.py (CPU and CUDA providers, batching off and on, c1/c16/c64) and
#            benchmarks/photo_size.py with CAE_PROVIDERS=cuda, results and logs into $OUT.
#
# `run` with STAGE_ONLY=1 stops after installing (checks the kit here: the wheel is cp312, so nothing is
# imported). BENCH_ARGS go to gpu_serving.py (e.g. "--duration 5").
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=wheels/gpu
ORT_WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
STAGE=/tmp/cae-ort
SITE=/tmp/site

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

case "${1:-}" in
prepare)
  rm -rf "$KIT" && mkdir -p "$KIT/ort" "$KIT/serve" "$KIT/bin"
  target=(--python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any)
  pip download --no-deps "${target[@]}" -d "$KIT" onnxruntime-gpu==1.31.1
  (cd "$KIT" && sha256sum "$ORT_WHEEL" > ort.sha256 && split -b 46000000 "$ORT_WHEEL" ort/part- && rm "$ORT_WHEEL")
  mapfile -t reqs < <(serve_requirements)
  pip download "${target[@]}" -d "$KIT/serve" "${reqs[@]}"
  rm -f "$KIT"/serve/numpy-*.whl "$KIT"/serve/pillow-*.whl
  wrk_bin=$(command -v wrk) || { echo "wrk not found here: apt-get install wrk" >&2; exit 1; }
  cp "$wrk_bin" "$KIT/bin/wrk"
  ldd "$wrk_bin" | awk '/luajit/ {print $3}' | xargs -r -I{} cp -L {} "$KIT/bin/"
  du -sh "$KIT"/ort/* "$KIT/serve" "$KIT/bin"
  parts=("$KIT"/ort/part-*)
  echo "device calls: ${#parts[@]} (one per part; the last with serve/ and bin/)"
  ;;
stage)
  mkdir -p "$STAGE"
  for part in "$KIT"/ort/part-*; do cp "$part" "$STAGE/"; done
  ls -la "$STAGE"
  ;;
run)
  mkdir -p "$STAGE"
  for part in "$KIT"/ort/part-*; do cp "$part" "$STAGE/"; done
  cat "$STAGE"/part-* > "$STAGE/$ORT_WHEEL"
  (cd "$STAGE" && sha256sum -c "$OLDPWD/$KIT/ort.sha256")
  rm -rf "$SITE" && mkdir -p "$SITE"
  python3 -m zipfile -e "$STAGE/$ORT_WHEEL" "$SITE"
  for wheel in "$KIT"/serve/*.whl; do python3 -m zipfile -e "$wheel" "$SITE"; done
  [[ ${STAGE_ONLY:-0} == 1 ]] && { ls "$SITE" | head -50; exit 0; }
  OUT=${OUT:?set OUT}
  export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
  export WRK=$PWD/$KIT/bin/wrk LD_LIBRARY_PATH=$PWD/$KIT/bin:${LD_LIBRARY_PATH:-}
  # onnxruntime-gpu's CUDA provider needs the CUDA 13 runtime, cuBLAS and cuDNN: torch's nvidia packages have them.
  nvidia_libs=$(python3 -c "import glob, os, nvidia; print(':'.join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + '/**/lib/*.so*', recursive=True)})))" 2>/dev/null || true)
  export LD_LIBRARY_PATH=$nvidia_libs:$LD_LIBRARY_PATH
  { nvidia-smi -L; python3 -c "import onnxruntime as ort; print(ort.__version__, ort.get_available_providers())"; } 2>&1 | tee "$OUT/versions.txt"
  timeout "${BENCH_S:-330}" python3 benchmarks/gpu_serving.py --providers cpu cuda --out "$OUT/gpu_serving.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_serving.log" || true
  CAE_PROVIDERS=cuda timeout "${PHOTO_S:-150}" python3 benchmarks/photo_size.py --out "$OUT/photo_size_cuda.json" 2>&1 | tee "$OUT/photo_size_cuda.log" || true
  ;;
*)
  echo "usage: $0 prepare | stage | run" >&2
  exit 2
  ;;
esac
