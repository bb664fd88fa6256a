#!/usr/bin/env bash
# Build the foldserve images (full, and serving-only without TensorFlow) and prove they
# run: health, upload, predictions over both HTTP protocols and gRPC; the serving-only
# image refusing uploads; then the compose "replicas" profile (full image + serving-only
# image behind the proxy) with an upload through the proxy served by both. Installs what it needs, starts its own dockerd when none runs,
# makes a local Debian base image when Docker Hub is out of reach, and stops only the
# processes it started. Everything listens on 127.0.0.1 (host networking).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-foldserve-base:bookworm}"
IMAGE="foldserve:smoke"
SERVING_IMAGE="foldserve:serving"
GRPC_PORT=18090
PROJECT="foldserve-smoke"
PORT=18080
WORK="$(mktemp -d /tmp/foldserve-smoke.XXXXXX)"
DOCKERD_PID=""
CONTAINER=""
# docker-compose.yml publishes ports, which host networking forbids, and compose 1.29
# cannot drop a key in an override: the smoke test runs a copy without "ports:".
COMPOSE=(docker-compose -p "$PROJECT" --project-directory "$PWD" -f "$WORK/compose.base.yml"
         -f deploy/compose.smoke.yml --profile replicas)
started_at=$SECONDS

say() { printf '[smoke %4ds] %s\n' "$((SECONDS - started_at))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }

cleanup() {
  set +e
  if [ -n "$CONTAINER" ]; then docker rm -f "$CONTAINER" >/dev/null 2>&1; fi
  if command -v docker-compose >/dev/null && docker info >/dev/null 2>&1; then
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
  fi
  if [ -n "$DOCKERD_PID" ]; then
    say "stopping the dockerd this script started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

install_tools() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then say "using the running Docker engine"; return; fi
  say "starting dockerd (host and none networking only)"
  dockerd --bridge=none --iptables=false --ip-masq=false >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  cat "$WORK/dockerd.log"; fail "dockerd did not start"
}

make_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  say "making the local base $BASE_IMAGE (debootstrap bookworm + python3)"
  local rootfs="$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
}

wait_healthy() {  # container name, seconds
  for _ in $(seq 1 "$2"); do
    case "$(docker inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null)" in
      healthy) return 0 ;;
      unhealthy) docker logs "$1" | tail -30; fail "$1 is unhealthy" ;;
    esac
    sleep 1
  done
  docker logs "$1" | tail -30; fail "$1 not healthy in $2 s"
}

expect_json() {  # description, python expression over `r` (the parsed reply), curl args...
  local what="$1" check="$2"; shift 2
  local reply
  reply="$(curl -sS --max-time 300 "$@")" || fail "$what: request failed"
  python3 -c "import json, sys; r = json.loads(sys.argv[1]); sys.exit(0 if ($check) else 1)" "$reply" \
    || fail "$what: unexpected reply ${reply:0:300}"
  say "ok: $what"
}

ROW='[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]'

predict_both() {  # port, model
  expect_json "TF Serving predict on :$1 ($2)" 'len(r["predictions"][0]) == 10' \
    -X POST "http://127.0.0.1:$1/v1/models/$2:predict" -d "{\"instances\": [$ROW]}"
  expect_json "V2 infer on :$1 ($2)" 'r["outputs"][0]["shape"] == [1, 10]' \
    -X POST "http://127.0.0.1:$1/v2/models/$2/infer" \
    -d "{\"inputs\": [{\"name\": \"pixels\", \"shape\": [1, 64], \"datatype\": \"FP32\", \"data\": $ROW}]}"
}

install_tools
start_dockerd
make_base

say "building $IMAGE on $BASE_IMAGE"
build_started=$SECONDS
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -t "$IMAGE" -t foldserve:latest . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "docker build"; }
build_seconds=$((SECONDS - build_started))
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -t foldserve-proxy:latest deploy/proxy >"$WORK/proxy-build.log" 2>&1 || { tail -30 "$WORK/proxy-build.log"; fail "proxy build"; }
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg FOLDSERVE_EXTRAS=serve -t "$SERVING_IMAGE" . >"$WORK/serving-build.log" 2>&1 \
  || { tail -30 "$WORK/serving-build.log"; fail "serving-only build"; }
size_of() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }
image_size="$(size_of "$IMAGE")"
serving_size="$(size_of "$SERVING_IMAGE")"
serving_bytes="$(docker image inspect --format '{{.Size}}' "$SERVING_IMAGE")"
say "images built in ${build_seconds}s: full $image_size, serving-only $serving_size"
[ "$serving_bytes" -lt 500000000 ] || fail "serving-only image is $serving_size, not under 500 MB"
docker run --rm --entrypoint python3 "$SERVING_IMAGE" -c \
  "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)" \
  || fail "the serving-only image has TensorFlow"

CONTAINER="foldserve-smoke-single"
run_started=$SECONDS
docker run -d --name "$CONTAINER" --network host -e FOLDSERVE_PORT=$PORT \
  -e FOLDSERVE_GRPC_PORT=$GRPC_PORT "$IMAGE" >/dev/null
wait_healthy "$CONTAINER" 300
say "container healthy after $((SECONDS - run_started))s (demo model folded at start-up)"
[ "$(docker inspect --format '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] || fail "image user is not 10001"
predict_both $PORT digits
expect_json "upload of a Keras model" 'r["version"] == 1 and r["report"]["verification"]["passed"]' \
  -F "file=@models/digits/1/model.keras" -F name=uploaded "http://127.0.0.1:$PORT/v1/models?wait=true"
predict_both $PORT uploaded
docker exec "$CONTAINER" python3 -c "
import numpy as np, tritonclient.grpc as g
client = g.InferenceServerClient('127.0.0.1:$GRPC_PORT')
pixels = g.InferInput('pixels', [1, 64], 'FP32')
pixels.set_data_from_numpy(np.zeros((1, 64), np.float32))
assert client.infer('uploaded', [pixels]).as_numpy('probabilities').shape == (1, 10)
" || fail "gRPC infer"
say "ok: gRPC infer on :$GRPC_PORT"
docker rm -f "$CONTAINER" >/dev/null; CONTAINER=""

CONTAINER="foldserve-smoke-serving"
docker run -d --name "$CONTAINER" --network host -e FOLDSERVE_PORT=$PORT \
  -e FOLDSERVE_GRPC_PORT=$GRPC_PORT "$SERVING_IMAGE" >/dev/null
wait_healthy "$CONTAINER" 120
status="$(curl -sS -o "$WORK/refused.json" -w '%{http_code}' \
  -F "file=@models/digits/1/model.keras" -F name=refused "http://127.0.0.1:$PORT/v1/models?wait=true")"
[ "$status" = 409 ] && grep -q "foldserve fold" "$WORK/refused.json" \
  || fail "serving-only upload: HTTP $status $(cat "$WORK/refused.json")"
say "ok: the serving-only image refuses uploads (409, names where folding runs)"
docker rm -f "$CONTAINER" >/dev/null; CONTAINER=""

say "compose: full + serving-only replicas behind the proxy, one shared model store"
docker-compose -f docker-compose.yml --profile replicas --profile gpu config -q
python3 - "$WORK/compose.base.yml" <<'PY'
import sys
import yaml
with open("docker-compose.yml") as handle:
    config = yaml.safe_load(handle)
for service in config["services"].values():
    service.pop("ports", None)
with open(sys.argv[1], "w") as handle:
    yaml.safe_dump(config, handle)
PY
"${COMPOSE[@]}" config -q
"${COMPOSE[@]}" up -d --no-build replica-a replica-b proxy >"$WORK/compose.log" 2>&1 || { cat "$WORK/compose.log"; fail "compose up"; }
wait_healthy "${PROJECT}_replica-a_1" 300
wait_healthy "${PROJECT}_replica-b_1" 300
expect_json "upload through the proxy (to the full replica)" 'r["name"] == "via-proxy"' \
  -F "file=@models/digits/1/model.keras" -F name=via-proxy "http://127.0.0.1:18088/v1/models?wait=true"
sleep 1
predict_both 18082 via-proxy
predict_both 18082 digits
predict_both 18088 via-proxy
"${COMPOSE[@]}" down -v >/dev/null 2>&1

say "PASSED in $((SECONDS - started_at))s: build ${build_seconds}s, full $image_size, serving-only $serving_size"
