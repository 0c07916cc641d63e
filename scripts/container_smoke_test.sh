#!/usr/bin/env bash
# Container smoke test: build the CPU image, run it, wait for /readyz, send one request to each endpoint
# through the client library, check the health check, and stop it gracefully (SIGTERM).
#
#   scripts/container_smoke_test.sh                       # base image python:3.11-slim from a registry
#   BASE_IMAGE=cae-local/python:3.11-slim scripts/container_smoke_test.sh   # a local stand-in
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
IMAGE=${IMAGE:-cae-smoke:latest}
PORT=${PORT:-18123}
KEY="smoke-$RANDOM$RANDOM"

# A base whose / is private (0700: the local stand-in, made from a mktemp directory) cannot run a
# non-root user at all; re-import its files under a normal / (a layer cannot change / itself).
if [[ "$(docker run --rm --network host "$BASE_IMAGE" stat -c %a / 2>/dev/null)" == 700 ]]; then
  fixed="${BASE_IMAGE}-rootfix"
  if ! docker image inspect "$fixed" >/dev/null 2>&1; then
    echo "[smoke] $BASE_IMAGE has a private /; re-importing it as $fixed"
    changes=()
    while IFS= read -r e; do [[ -n "$e" ]] && changes+=(-c "ENV $e"); done \
      < <(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$BASE_IMAGE")
    tmp=$(docker create "$BASE_IMAGE" true)
    docker export "$tmp" | docker import "${changes[@]}" -c 'CMD ["python3"]' - "$fixed" >/dev/null
    docker rm "$tmp" >/dev/null
  fi
  BASE_IMAGE=$fixed
fi

echo "[smoke] building $IMAGE on $BASE_IMAGE"
docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" . >/tmp/cae-smoke-build.log 2>&1 \
  || { tail -40 /tmp/cae-smoke-build.log; exit 1; }
GRPC_PORT=$((PORT + 1))
cid=$(docker run -d --network host -e CAE_PORT="$PORT" -e CAE_GRPC_PORT="$GRPC_PORT" -e CAE_API_KEY="$KEY" "$IMAGE")
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
echo "[smoke] container ${cid:0:12} on port $PORT"

if ! python scripts/smoke_client.py --url "http://127.0.0.1:$PORT" --api-key "$KEY"; then
  docker logs "$cid" | tail -40
  exit 1
fi
# V2 over gRPC beside HTTP (tritonclient[grpc] is in the test extra; the check skips without it).
if python -c "import tritonclient.grpc" 2>/dev/null; then
  python - "$GRPC_PORT" "$KEY" <<'PY' || { docker logs "$cid" | tail -20; exit 1; }
import sys, numpy as np, tritonclient.grpc as g
client = g.InferenceServerClient(f"127.0.0.1:{sys.argv[1]}")
x = g.InferInput("image", [1, 3, 32, 32], "FP32")
x.set_data_from_numpy(np.random.rand(1, 3, 32, 32).astype(np.float32))
z = client.infer("encoder", [x], headers={"authorization": f"Bearer {sys.argv[2]}"}).as_numpy("latent")
assert client.is_server_ready() and z.shape[0] == 1, z.shape
print(f"[smoke] gRPC: ready, encoder latent {z.shape}")
PY
fi
[[ "$(docker exec "$cid" id -u)" == 10001 ]] || { echo "[smoke] the service runs as root"; exit 1; }

for _ in $(seq 1 40); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$cid")
  [[ "$health" == healthy ]] && break
  sleep 1
done
[[ "$health" == healthy ]] || { echo "[smoke] HEALTHCHECK says $health"; exit 1; }
echo "[smoke] HEALTHCHECK: healthy"

docker stop -t 30 "$cid" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
# 0, or 143 (terminated by SIGTERM: uvicorn re-raises the signal after its graceful shutdown).
[[ "$code" == 0 || "$code" == 143 ]] || { echo "[smoke] exit code $code after SIGTERM"; docker logs "$cid" | tail -20; exit 1; }
docker logs "$cid" 2>&1 | grep -q "Finished server process" || { echo "[smoke] no graceful shutdown in the log"; exit 1; }
echo "[smoke] stopped gracefully (exit $code): passed"
