#!/usr/bin/env bash
# End-to-end test of deploy/compose.yaml on a real Docker engine (`make e2e-compose`, called from .ci/run):
#   1. installs Debian's docker.io and docker-compose if missing and starts dockerd if none answers;
#   2. builds a local base image (debootstrap → docker import: no registry images can be pulled here) and
#      the service images on it, plus a PostgreSQL image standing in for the official one;
#   3. generates a throwaway CA, TLS certificates and every secret;
#   4. brings up PostgreSQL and the aggregator (migrations on start, health-gated), enrols three sites and
#      starts a run of FEDMEDCLIP_E2E_ROUNDS (default 2) rounds on the tiny test backbone;
#   5. brings up the synthetic site data, the three agents and the inference API, waits for the run to
#      complete and for every service to be healthy, and calls predict for every site on the published port;
#   6. tears everything down (containers, volumes, network) on success and on failure.
#
# Environment (all optional):
#   FEDMEDCLIP_E2E_BASE_IMAGE   use this base image instead of building one (e.g. python:3.11-slim where a
#                               registry is reachable); POSTGRES_IMAGE likewise (default: built locally too)
#   FEDMEDCLIP_E2E_ROUNDS       rounds in the run (default 2)
#   FEDMEDCLIP_E2E_TIMEOUT_S    how long the run may take once the agents start (default 900)
#   FEDMEDCLIP_E2E_KEEP=1       leave the stack up (and its secrets in the work folder) for debugging
#   FEDMEDCLIP_E2E_WORK         work folder (default: a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

ROUNDS="${FEDMEDCLIP_E2E_ROUNDS:-2}"
RUN_TIMEOUT_S="${FEDMEDCLIP_E2E_TIMEOUT_S:-900}"
PROJECT="fedmedclip-e2e"
SITES=(site-1 site-2 site-3)
WORK="${FEDMEDCLIP_E2E_WORK:-$(mktemp -d /tmp/fedmedclip-e2e.XXXXXX)}"
mkdir -p "$WORK"
T0=$SECONDS

log() { printf '[e2e-compose %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# --- 1. Docker -----------------------------------------------------------------------------------------
as_root() { if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The client that comes with the engine (another docker CLI earlier on PATH may want buildx).
DOCKER=docker
[[ -x /usr/bin/docker ]] && DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

STARTED_DOCKERD=""
if ! $DOCKER info >/dev/null 2>&1; then
  log "starting dockerd (log: $WORK/dockerd.log)"
  as_root dockerd >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 1; done
  $DOCKER info >/dev/null 2>&1 || { tail -n 40 "$WORK/dockerd.log" >&2; die "dockerd did not come up"; }
fi
log "docker engine $($DOCKER version --format '{{.Server.Version}}'), $(docker-compose version --short)"

COMPOSE=(docker-compose --project-name "$PROJECT" --file "$ROOT/deploy/compose.yaml")
MIRROR_PID=""
cleanup() {
  local status=$?
  set +e
  if [[ $status -ne 0 ]]; then
    log "failed (exit $status); state of the stack and recent logs follow"
    "${COMPOSE[@]}" ps >&2
    "${COMPOSE[@]}" logs --no-color --tail=80 >&2
  fi
  if [[ "${FEDMEDCLIP_E2E_KEEP:-0}" == "1" ]]; then
    log "FEDMEDCLIP_E2E_KEEP=1: leaving the stack up; env in $WORK/env.sh; down with: ${COMPOSE[*]} down -v"
  else
    log "tearing down"
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
    [[ -n "$STARTED_DOCKERD" ]] && { as_root kill "$STARTED_DOCKERD"; wait "$STARTED_DOCKERD"; }
    [[ -z "${FEDMEDCLIP_E2E_WORK:-}" ]] && rm -rf "$WORK"
  fi
  [[ -n "$MIRROR_PID" ]] && kill "$MIRROR_PID" 2>/dev/null
  log "total $((SECONDS - T0)) s, exit $status"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A previous run killed before its trap ran must not leave containers or volumes behind.
"${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true

# --- 2. Images ---------------------------------------------------------------------------------------------
if [[ -n "${FEDMEDCLIP_E2E_BASE_IMAGE:-}" ]]; then
  BASE_IMAGE="$FEDMEDCLIP_E2E_BASE_IMAGE"
else
  log "base image (debootstrap → docker import; skipped when up to date)"
  BASE_IMAGE="$(as_root env DOCKER_BUILDKIT=0 PATH="$(dirname "$DOCKER"):$PATH" bash deploy/base-image/build.sh)"
fi
# pip inside the build uses what pip uses here: local wheel folders and indexes are served on loopback
# (the build runs with --network host), the CA bundle is in the base image (build.sh).
# A fixed port keeps the build arguments, and so Docker's layer cache, the same from run to run.
python3 deploy/base-image/pip_mirror.py --port "${FEDMEDCLIP_E2E_PIP_PORT:-43929}" --args-file "$WORK/pip-args" \
  2>"$WORK/pip-mirror.log" &
MIRROR_PID=$!
for _ in $(seq 1 50); do [[ -f "$WORK/pip-args" ]] && break; sleep 0.2; done
[[ -f "$WORK/pip-args" ]] || die "pip mirror did not start: $(cat "$WORK/pip-mirror.log")"
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_INDEX_URL=${FEDMEDCLIP_E2E_TORCH_INDEX_URL-}")
while IFS= read -r line; do build_args+=(--build-arg "$line"); done <"$WORK/pip-args"
export FEDMEDCLIP_IMAGE_PREFIX=fedmedclip-e2e FEDMEDCLIP_IMAGE_TAG=local
for target in aggregator agent api; do
  started=$SECONDS
  $DOCKER build --quiet --network host -f deploy/docker/Dockerfile --target "$target" \
    -t "$FEDMEDCLIP_IMAGE_PREFIX-$target:$FEDMEDCLIP_IMAGE_TAG" "${build_args[@]}" . >"$WORK/build-$target.log" 2>&1 \
    || { tail -n 60 "$WORK/build-$target.log" >&2; die "docker build --target $target failed"; }
  log "built image $target in $((SECONDS - started)) s"
done
if [[ -z "${POSTGRES_IMAGE:-}" ]]; then
  POSTGRES_IMAGE=fedmedclip-e2e-postgres:15
  $DOCKER build --quiet --network host -f deploy/base-image/postgres.Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t "$POSTGRES_IMAGE" deploy/base-image >"$WORK/build-postgres.log" 2>&1 \
    || { tail -n 40 "$WORK/build-postgres.log" >&2; die "postgres image build failed"; }
  log "built $POSTGRES_IMAGE"
fi
export POSTGRES_IMAGE
kill "$MIRROR_PID" 2>/dev/null; MIRROR_PID=""

# --- 3. TLS and secrets ------------------------------------------------------------------------------------
TLS="$WORK/tls"
mkdir -p "$TLS"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fedmedclip e2e CA" \
  -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
for name in aggregator api; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$TLS/$name.key" -out "$TLS/$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$name" >"$TLS/$name.ext"
  openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
    -extfile "$TLS/$name.ext" -out "$TLS/$name.pem" 2>/dev/null
done
rm -f "$TLS/ca.key" "$TLS"/*.csr "$TLS"/*.ext "$TLS"/*.srl
chmod 0755 "$TLS"
chmod 0644 "$TLS"/*   # throwaway keys; the services run as uid 10001 and must read them

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_KEY="$(python3 -c 'import secrets; print("fmk_" + secrets.token_urlsafe(32))')"
API_KEY_SHA="$(printf '%s' "$API_KEY" | sha256sum | cut -c1-64)"
cat >"$WORK/env.sh" <<ENV
export FEDMEDCLIP_IMAGE_PREFIX=$FEDMEDCLIP_IMAGE_PREFIX FEDMEDCLIP_IMAGE_TAG=$FEDMEDCLIP_IMAGE_TAG
export FEDMEDCLIP_BASE_IMAGE=$BASE_IMAGE POSTGRES_IMAGE=$POSTGRES_IMAGE
export FEDMEDCLIP_TLS_DIR=$TLS FEDMEDCLIP_MODELS_DIR=$WORK/models
export FEDMEDCLIP_POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
export FEDMEDCLIP_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export FEDMEDCLIP_API_KEYS='[{"name": "e2e", "sha256": "$API_KEY_SHA", "sites": ["*"]}]'
export FEDMEDCLIP_API_E2E_KEY=$API_KEY
export FEDMEDCLIP_AGGREGATOR_BIND=127.0.0.1 FEDMEDCLIP_AGGREGATOR_PORT=$(free_port)
export FEDMEDCLIP_API_BIND=127.0.0.1 FEDMEDCLIP_API_PORT=$(free_port)
# The tiny test backbone with random weights: no weights to download, a round takes seconds on a CPU.
export FEDMEDCLIP_BACKBONE_MODEL=fedmedclip-tiny FEDMEDCLIP_BACKBONE_WEIGHTS=random
export FEDMEDCLIP_SYNTH_IMAGES_PER_SITE=60 FEDMEDCLIP_SYNTH_IMAGE_SIZE=64 FEDMEDCLIP_AGENT_TORCH_THREADS=1
ENV
chmod 0600 "$WORK/env.sh"
mkdir -p "$WORK/models"
# shellcheck disable=SC1091
source "$WORK/env.sh"
# Sites are not enrolled yet: compose needs a value for every variable of the file, and the agents are not
# started in this phase. "not-enrolled" is no credential: an agent started with it is refused (exit 78).
for i in 1 2 3; do export "FEDMEDCLIP_SITE_${i}_TOKEN=not-enrolled"; done

# --- 4. Database, aggregator, enrolment, run ---------------------------------------------------------------
container_of() { "${COMPOSE[@]}" ps -q "$1"; }
health_of() {
  local id
  id="$(container_of "$1")"
  [[ -n "$id" ]] || { echo missing; return; }
  $DOCKER inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"
}
wait_healthy() {  # SERVICE... — every one healthy within 240 s
  local deadline=$((SECONDS + 240)) service state pending
  while :; do
    pending=""
    for service in "$@"; do
      state="$(health_of "$service")"
      [[ "$state" == healthy ]] || pending="$pending $service=$state"
    done
    [[ -z "$pending" ]] && return 0
    [[ $SECONDS -lt $deadline ]] || die "not healthy within 240 s:$pending"
    sleep 3
  done
}
admin() { "${COMPOSE[@]}" exec -T -e COLUMNS=200 aggregator python -m aggregator_service "$@"; }

started=$SECONDS
"${COMPOSE[@]}" up -d postgres aggregator >"$WORK/up-1.log" 2>&1 || { cat "$WORK/up-1.log" >&2; die "compose up (aggregator) failed"; }
wait_healthy postgres aggregator
log "postgres and aggregator healthy in $((SECONDS - started)) s"
for i in 1 2 3; do
  token="$(admin sites add "site-$i" --description "e2e synthetic site $i" 2>/dev/null | tail -n 1)"
  [[ -n "$token" && "$token" != not-enrolled ]] || die "enrolling site-$i printed no token"
  export "FEDMEDCLIP_SITE_${i}_TOKEN=$token"
done
RUN_ID="$(admin runs start --name e2e-compose --embed-dim 64 --rounds "$ROUNDS" --min-sites 3 --round-timeout 600 \
  --model fedmedclip-tiny --weights random 2>/dev/null | tail -n 1)"
[[ -n "$RUN_ID" ]] || die "runs start printed no run id"
log "enrolled ${SITES[*]}; started run $RUN_ID ($ROUNDS rounds, quorum 3)"

# --- 5. Agents and API; the run ---------------------------------------------------------------------------
started=$SECONDS
"${COMPOSE[@]}" up -d >"$WORK/up-2.log" 2>&1 || { cat "$WORK/up-2.log" >&2; die "compose up failed"; }
prepare_id="$("${COMPOSE[@]}" ps -a -q prepare-sites)"
[[ "$($DOCKER inspect --format '{{.State.ExitCode}}' "$prepare_id")" == 0 ]] || die "prepare-sites failed"
log "agents and API started in $((SECONDS - started)) s; waiting for run $RUN_ID"
deadline=$((SECONDS + RUN_TIMEOUT_S))
# The machine-readable status: run state and latest FAM version from `runs status --json`.
run_state() {
  admin runs status "$RUN_ID" --json 2>/dev/null | python3 -c '
import json, sys
try:
    status = json.loads(sys.stdin.read())
except ValueError:
    status = {}
print(status.get("state", "UNKNOWN"), status.get("latest_version", 0))' || echo "UNKNOWN 0"
}
while :; do
  read -r state latest <<<"$(run_state)"
  case "$state" in
    RUN_STATE_COMPLETED) break ;;
    RUN_STATE_FAILED | RUN_STATE_STOPPED) die "run ended as $state" ;;
  esac
  for service in agent-site-1 agent-site-2 agent-site-3; do
    id="$(container_of "$service")"
    restarts="$($DOCKER inspect --format '{{.RestartCount}}' "$id")"
    [[ "$restarts" -lt 3 ]] || die "$service keeps restarting ($restarts restarts)"
  done
  [[ $SECONDS -lt $deadline ]] || die "run not completed within $RUN_TIMEOUT_S s (state $state)"
  sleep 5
done
LATEST="$latest"
log "run completed in $((SECONDS - started)) s after the agents started; latest FAM version $LATEST"
[[ "$LATEST" -ge $((ROUNDS + 1)) ]] || die "expected FAM version >= $((ROUNDS + 1)) after $ROUNDS rounds, got $latest"
admin runs status "$RUN_ID" >&2 || true
wait_healthy postgres aggregator agent-site-1 agent-site-2 agent-site-3 api
log "every service healthy"

# --- 6. Predict on every site through the published port --------------------------------------------------
API="https://localhost:$FEDMEDCLIP_API_PORT"
CURL=(curl --silent --show-error --fail-with-body --max-time 60 --cacert "$TLS/ca.pem" -H "X-API-Key: $FEDMEDCLIP_API_E2E_KEY")
deadline=$((SECONDS + 180))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$TLS/ca.pem" "$API/readyz")" == 200 ]]; do
  [[ $SECONDS -lt $deadline ]] || die "the API at $API never became ready"
  sleep 2
done
for site in "${SITES[@]}"; do
  deadline=$((SECONDS + 120))
  # The agents publish the run's final version right after it completes; wait until the API serves it.
  until "${CURL[@]}" "$API/v1/sites/$site" 2>/dev/null | python3 -c '
import json, sys
info = json.load(sys.stdin)
served = info.get("ready") and info.get("version") == info.get("current") and info.get("fam_version") == int(sys.argv[1])
sys.exit(0 if served else 1)' "$LATEST" 2>/dev/null; do
    [[ $SECONDS -lt $deadline ]] || die "site $site does not serve FAM version $LATEST: $("${CURL[@]}" "$API/v1/sites/$site")"
    sleep 2
  done
  image="$("${COMPOSE[@]}" exec -T "agent-$site" sh -c "find /data -type f -name '*.png' | sort | tail -n 1")"
  [[ -n "$image" ]] || die "no image found in $site's data volume"
  "${COMPOSE[@]}" exec -T "agent-$site" cat "$image" >"$WORK/$site.png"
  "${CURL[@]}" -F "files=@$WORK/$site.png;type=image/png" "$API/v1/sites/$site/predict" >"$WORK/$site.json" \
    || die "predict for $site failed: $(cat "$WORK/$site.json")"
  python3 - "$site" "$WORK/$site.json" "$image" "$LATEST" <<'PY' >&2 || die "bad predict answer for $site"
import json
import sys

site, path, image, latest = sys.argv[1:]
answer = json.load(open(path))
assert answer["site"] == site and answer["fam_version"] == int(latest), answer
item = answer["predictions"][0]
probabilities = item["probabilities"]
assert item["predicted_class"] in probabilities, item
assert abs(sum(probabilities.values()) - 1) < 1e-3, probabilities
truth = image.split("/")[-2]
print(f"predict {site}: {image.split('/')[-1]} (class {truth}) -> {item['predicted_class']}, "
      f"bundle {answer.get('bundle_version')}, FAM version {answer.get('fam_version')}")
PY
done
log "PASS: $ROUNDS-round run over TLS on PostgreSQL, predictions from ${SITES[*]} via the published API port"
