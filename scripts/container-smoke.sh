#!/usr/bin/env bash
# Build the foldserve image and prove it runs: health, upload, predictions over both
# protocols, then the compose "replicas" profile with an upload through one replica
# served by the other. Installs what it needs, starts its own dockerd when none runs,
# makes a local Debian base image when Docker Hub is out of reach, and stops only the
# processes it started. Everything listens on 127.0.0.1 (host networking).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-foldserve-base:bookworm}"
IMAGE="foldserve:smoke"
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
image_size="$(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
say "image built in ${build_seconds}s, $image_size"

CONTAINER="foldserve-smoke-single"
run_started=$SECONDS
docker run -d --name "$CONTAINER" --network host -e FOLDSERVE_PORT=$PORT "$IMAGE" >/dev/null
wait_healthy "$CONTAINER" 300
say "container healthy after $((SECONDS - run_started))s (demo model folded at start-up)"
[ "$(docker inspect --format '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] || fail "image user is not 10001"
predict_both $PORT digits
expect_json "upload of a Keras model" 'r["version"] == 1 and r["report"]["verification"]["passed"]' \
  -F "file=@models/digits/1/model.keras" -F name=uploaded "http://127.0.0.1:$PORT/v1/models"
predict_both $PORT uploaded
docker rm -f "$CONTAINER" >/dev/null; CONTAINER=""

say "compose: two replicas behind the proxy, one shared model store"
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
expect_json "upload through replica A" 'r["name"] == "via-a"' \
  -F "file=@models/digits/1/model.keras" -F name=via-a "http://127.0.0.1:18081/v1/models"
sleep 1
predict_both 18082 via-a
predict_both 18088 via-a
"${COMPOSE[@]}" down -v >/dev/null 2>&1

say "PASSED in $((SECONDS - started_at))s: build ${build_seconds}s, image $image_size"
