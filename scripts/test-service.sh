#!/usr/bin/env bash
# The service's tests (unit, API, end to end) on SQLite and on a real PostgreSQL
# server started on loopback. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBQUEUE_TEST_POSTGRES_URL=$(scripts/test-postgres.sh)
export JOBQUEUE_TEST_POSTGRES_URL
cd service
exec ../.venv/bin/python -m pytest "$@"
