#!/usr/bin/env bash
# Start the local PostgreSQL 15 cluster for the aggregator's store tests and print the URL to export.
#
#   export FEDMEDCLIP_TEST_POSTGRES_URL="$(scripts/ci/start_postgres.sh)"
#
# Idempotent: installs PostgreSQL with apt only where it is missing, starts the cluster only if it is down,
# creates the test role and database only if they do not exist. Everything but the URL goes to stderr, so
# the command substitution above captures exactly the URL. Runs as root (CI) or with passwordless sudo.
set -euo pipefail

PG_VERSION="${PG_VERSION:-15}"
PG_CLUSTER="${PG_CLUSTER:-main}"
DB_ROLE="${FEDMEDCLIP_TEST_PG_ROLE:-fedmedclip}"
DB_NAME="${FEDMEDCLIP_TEST_PG_DATABASE:-fedmedclip_test}"
# A throwaway password for a loopback-only test role; never used outside tests.
DB_PASSWORD="${FEDMEDCLIP_TEST_PG_PASSWORD:-fedmedclip-test}"

log() { echo "start_postgres: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
as_postgres() { "${SUDO[@]}" runuser -u postgres -- "$@"; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d "/usr/lib/postgresql/${PG_VERSION}" ]; then
  log "PostgreSQL ${PG_VERSION} not found; installing with apt-get"
  "${SUDO[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "postgresql-${PG_VERSION}" >&2 \
    || DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq postgresql >&2
fi

if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c {found=1} END {exit !found}'; then
  log "creating cluster ${PG_VERSION}/${PG_CLUSTER}"
  "${SUDO[@]}" pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2
fi

status="$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c {print $4}')"
if [ "$status" != "online" ]; then
  log "starting cluster ${PG_VERSION}/${PG_CLUSTER}"
  "${SUDO[@]}" pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2
fi
PG_PORT="$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c {print $3}')"

for _ in $(seq 1 30); do
  if as_postgres pg_isready -q -p "$PG_PORT"; then break; fi
  sleep 1
done
as_postgres pg_isready -q -p "$PG_PORT" || { log "PostgreSQL did not become ready on port ${PG_PORT}"; exit 1; }

psql_admin() { as_postgres psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtAX "$@"; }

# CREATEDB: the tests create (and drop) one scratch database per test from this role.
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '${DB_ROLE}'")" != "1" ]; then
  log "creating role ${DB_ROLE}"
  psql_admin -c "CREATE ROLE \"${DB_ROLE}\" LOGIN CREATEDB PASSWORD '${DB_PASSWORD}'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '${DB_NAME}'")" != "1" ]; then
  log "creating database ${DB_NAME}"
  psql_admin -c "CREATE DATABASE \"${DB_NAME}\" OWNER \"${DB_ROLE}\"" >&2
fi

echo "postgresql+psycopg://${DB_ROLE}:${DB_PASSWORD}@127.0.0.1:${PG_PORT}/${DB_NAME}"
