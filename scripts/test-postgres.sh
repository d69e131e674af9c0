#!/usr/bin/env bash
# Start Debian's PostgreSQL on loopback for the service's tests (installing it if
# missing) and print the database URL the tests use. Works without systemd.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_lsclusters >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$version/main"; then
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
su postgres -c "psql -q -p $port" >&2 <<SQL
SELECT 'CREATE ROLE jobqueue_test LOGIN PASSWORD ''jobqueue_test'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jobqueue_test')\gexec
-- Each pytest-xdist worker makes a database of its own beside this one.
ALTER ROLE jobqueue_test CREATEDB;
SELECT 'CREATE DATABASE jobqueue_test OWNER jobqueue_test'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'jobqueue_test')\gexec
SQL
echo "postgresql+psycopg://jobqueue_test:jobqueue_test@127.0.0.1:$port/jobqueue_test"
