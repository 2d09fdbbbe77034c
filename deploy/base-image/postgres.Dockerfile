# A stand-in for the official `postgres` image, for machines that cannot pull images (docs/design.md §10):
# Debian's PostgreSQL 15 on the locally built base, with the same interface the compose file uses —
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start, data in /var/lib/postgresql/data, port
# 5432, `pg_isready` on PATH. Real deployments use the official image (compose's POSTGRES_IMAGE default).
#
#   docker build -f deploy/base-image/postgres.Dockerfile --build-arg BASE_IMAGE=fedmedclip-base:bookworm \
#       -t fedmedclip-postgres:15 deploy/base-image
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
