#!/bin/sh
# PostgreSQL from Debian's packages, started like the postgres image: the
# first start creates the cluster with POSTGRES_USER / POSTGRES_PASSWORD and
# the database POSTGRES_DB; later starts reuse the data volume.
set -eu
PGBIN=$(echo /usr/lib/postgresql/*/bin)
DATA=/var/lib/postgresql/data
PORT=${PGPORT:-5432}
mkdir -p "$DATA" /var/run/postgresql
chown -R postgres:postgres "$DATA" /var/run/postgresql
chmod 0700 "$DATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$DATA/PG_VERSION" ]; then
    pw=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
    chown postgres "$pw"
    # UTF8 as the postgres image has it: a minimal root file system has no
    # locale, and initdb would pick SQL_ASCII, whose text psycopg returns as
    # bytes (org keys never match, retention fails).
    as_postgres "$PGBIN/initdb" -D "$DATA" -U "$POSTGRES_USER" --pwfile="$pw" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pw"
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
        | as_postgres "$PGBIN/postgres" --single -D "$DATA" -j postgres >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PGBIN/postgres" -D "$DATA" -p "$PORT" -c listen_addresses="${POSTGRES_LISTEN:-127.0.0.1}"
