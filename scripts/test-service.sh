#!/usr/bin/env bash
# The service's tests (unit, API, end to end, fault injection, the web page in
# headless Chromium) on SQLite and on a real PostgreSQL server started on loopback,
# the slurm backend's against a one-node Slurm started here (scripts/test-slurm.sh),
# then the fuzz of the API's OpenAPI document in a process of its own (its generated
# cases depend on nothing else that ran). Extra arguments go to the first pytest run.
# The first run spreads the test files over JOBQUEUE_TEST_PROCESSES pytest-xdist
# workers (default 3: the tests spend much of their time waiting on the controllers
# and workers they start; on this 2-core machine 3 workers took the run from 16 to
# 9 minutes). A file's tests stay in one worker, in order, sharing its module fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
# The web page's test drives Debian's Chromium through its driver (about 30 s to
# install, on top of an apt-get update); the worker's systemd client is tested on a
# bus of its own (dbus-daemon).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
    || ! command -v dbus-daemon >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core \
    dbus-daemon >&2
fi
JOBQUEUE_TEST_POSTGRES_URL=$(scripts/test-postgres.sh)
export JOBQUEUE_TEST_POSTGRES_URL
SLURM_CONF=$(scripts/test-slurm.sh)/slurm.conf
export SLURM_CONF
cd service
../.venv/bin/python -m pytest -n "${JOBQUEUE_TEST_PROCESSES:-3}" --dist loadfile \
    --ignore=tests/test_fuzz.py "$@"
exec ../.venv/bin/python -m pytest -p no:cacheprovider tests/test_fuzz.py
