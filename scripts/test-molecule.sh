#!/usr/bin/env bash
# Run every Molecule scenario (create, converge, idempotence, verify, destroy)
# and report how long each took. Usage: scripts/test-molecule.sh [scenario...]
# where a scenario is one of: install controller worker cluster (default: all).
# Logs: build/molecule/<scenario>.log
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

# scenario name -> "directory molecule-scenario"
declare -A SCENARIOS=(
    [install]="roles/jobqueue_install default"
    [controller]="roles/controller default"
    [worker]="roles/worker default"
    [cluster]=". cluster"
)
ORDER=(install controller worker cluster)
[ $# -gt 0 ] && ORDER=("$@")

# Settings every scenario shares, named explicitly: Molecule finds them by
# itself only in a git checkout.
BASE_CONFIG=$PWD/.config/molecule/config.yml

[ -f build/wheelhouse.tar ] || scripts/build-wheelhouse.sh
mkdir -p build/molecule

summary=()
rc=0
for name in "${ORDER[@]}"; do
    read -r dir scenario <<<"${SCENARIOS[$name]:?unknown scenario $name}"
    log=$PWD/build/molecule/$name.log
    start=$SECONDS
    echo "== molecule $name ($dir, scenario $scenario), log $log"
    if (cd "$dir" && molecule --base-config "$BASE_CONFIG" test -s "$scenario") >"$log" 2>&1; then
        status=passed
    else
        status=FAILED
        rc=1
        tail -60 "$log"
    fi
    # Per step: wall time from the timer callback, changed tasks of the
    # idempotence run, and pytest's verdict.
    steps=$(awk '
        /\] Executing$/ { match($0, /> [a-z_]+\]/); step = substr($0, RSTART + 2, RLENGTH - 3) }
        /Playbook run took/ { printf "%s=%dm%02ds ", step, $(NF-3), $(NF-1) }
        step == "idempotence" && /changed=[0-9]+/ { match($0, /changed=[0-9]+/); n += substr($0, RSTART + 8, RLENGTH - 8) }
        step == "idempotence" && /Executed:/ { printf "idempotence_changed=%d ", n }
        / passed| failed/ && /[0-9]+(\.[0-9]+)?s/ && /=====/ { gsub(/=/, ""); printf "verify:%s ", $0 }
    ' "$log")
    summary+=("$(printf '%-12s %-7s %5ds  %s' "$name" "$status" $((SECONDS - start)) "$steps")")
done

echo
echo "== molecule summary (total wall time, then per step)"
printf '%s\n' "${summary[@]}"
echo "leftover VMs:"; vagrant global-status --prune 2>/dev/null | grep -E 'running|shutoff' || echo "  none"
exit $rc
