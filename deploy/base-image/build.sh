#!/usr/bin/env bash
# Build a minimal Debian + Python 3.11 base image locally (debootstrap → docker import), for machines that
# cannot pull images from a registry (docs/design.md §10). The Dockerfiles take it as `--build-arg BASE_IMAGE=…`;
# on a normal Docker host you do not need this: they default to python:3.11-slim.
#
#   deploy/base-image/build.sh [--tag IMAGE] [--suite bookworm] [--mirror URL] [--ca-bundle FILE] [--force]
#
# Idempotent: the image records a key of its inputs (suite, mirror, packages, CA bundle, this script) in the
# env var FEDMEDCLIP_BASE_KEY; when an image with the same tag and key exists, nothing is rebuilt.
# The CA bundle (default: the host's, $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt) replaces the
# image's, so that pip and apt inside `docker build` trust what the host trusts (e.g. an inspecting proxy).
# Needs root (debootstrap), debootstrap and a running Docker engine. Prints the image tag on stdout.
set -euo pipefail

TAG="fedmedclip-base:bookworm"
SUITE="bookworm"
MIRROR="http://deb.debian.org/debian"
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
FORCE=0
# python3-venv brings ensurepip (the Dockerfiles make a venv); ca-certificates for HTTPS; procps for `ps`.
PACKAGES="python3,python3-venv,ca-certificates,procps"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --suite) SUITE="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --ca-bundle) CA_BUNDLE="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { echo "[base-image] $*" >&2; }
command -v docker >/dev/null || { log "docker is not installed"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers (docker info failed); start dockerd first"; exit 1; }

ca_digest="none"
if [[ -f "$CA_BUNDLE" ]]; then ca_digest="$(sha256sum "$CA_BUNDLE" | cut -c1-64)"; else CA_BUNDLE=""; fi
KEY="$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "$ca_digest" "$(sha256sum "$0" | cut -c1-64)" | sha256sum | cut -c1-16)"

if [[ "$FORCE" -eq 0 ]]; then
  existing="$(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$TAG" 2>/dev/null \
    | sed -n 's/^FEDMEDCLIP_BASE_KEY=//p' || true)"
  if [[ "$existing" == "$KEY" ]]; then
    log "$TAG is up to date (key $KEY)"
    echo "$TAG"
    exit 0
  fi
fi

[[ "$(id -u)" -eq 0 ]] || { log "debootstrap needs root"; exit 1; }
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

work="$(mktemp -d /var/tmp/fedmedclip-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
log "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
started=$SECONDS
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  log "debootstrap failed"
  exit 1
}
if [[ -n "$CA_BUNDLE" ]]; then
  cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
# Keep the image small and build-friendly: no apt caches, no docs, no man pages.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/var/cache/debconf/*-old
log "debootstrap took $((SECONDS - started)) s; importing as $TAG"
# `python` as well as `python3`, like python:3.11-slim, so commands work on either base.
ln -sf python3 "$rootfs/usr/bin/python"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change "ENV FEDMEDCLIP_BASE_KEY=$KEY" \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
docker run --rm "$TAG" python3 -c 'import ssl, sys, venv; print(sys.version.split()[0])' >&2
log "built $TAG in $((SECONDS - started)) s"
echo "$TAG"
