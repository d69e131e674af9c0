#!/usr/bin/env bash
# The service's tests (unit, API, end to end, fault injection) on SQLite and on a
# real PostgreSQL server started on loopback, the slurm backend's against a one-node
# Slurm started here (scripts/test-slurm.sh), then the fuzz of the API's OpenAPI
# document in a process of its own (its generated cases depend on nothing else that
# ran). Extra arguments go to the first pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBQUEUE_TEST_POSTGRES_URL=$(scripts/test-postgres.sh)
export JOBQUEUE_TEST_POSTGRES_URL
SLURM_CONF=$(scripts/test-slurm.sh)/slurm.conf
export SLURM_CONF
cd service
../.venv/bin/python -m pytest --ignore=tests/test_fuzz.py "$@"
exec ../.venv/bin/python -m pytest -p no:cacheprovider tests/test_fuzz.py
