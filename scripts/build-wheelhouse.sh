#!/usr/bin/env bash
# Build, on the control machine, the wheels of the service and of all its
# dependencies for the hosts (CPython 3.11, manylinux x86_64), so that hosts
# install with `pip install --no-index` and never reach the internet.
# Output: build/wheelhouse/ and build/wheelhouse.tar (what the roles copy).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=build/wheelhouse
PLATFORMS=(manylinux_2_36_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

rm -rf "$OUT" build/wheelhouse.tar
mkdir -p "$OUT"

# The service itself: pure Python, built here; reproducible across rebuilds of
# the same commit so an unchanged service does not look new to the hosts.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
export SOURCE_DATE_EPOCH
# Built from a copy: setuptools' in-tree build/ directory would otherwise keep
# files that were deleted from the source.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a service/pyproject.toml service/src "$tmp"/
[ -f service/README.md ] && cp service/README.md "$tmp"/
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$tmp"

# Its dependencies with the server and worker extras (the hosts run the controller
# and the worker): binary wheels for the hosts' interpreter and platform, whatever the
# control machine runs.
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
wheel=("$OUT"/jobqueue-*.whl)
"$PY" -m pip download --quiet --dest "$OUT" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    "${platform_args[@]}" "${wheel[0]}[server,worker]"

# A deterministic archive: same wheels, same bytes, so the hosts see no change.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -cf build/wheelhouse.tar -C build wheelhouse
echo "wheelhouse: $(ls "$OUT" | wc -l) wheels in $OUT, archive build/wheelhouse.tar"
