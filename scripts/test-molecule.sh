#!/usr/bin/env bash
# Run every Molecule scenario (create, converge, idempotence, verify, destroy)
# and report how long each took. Usage: scripts/test-molecule.sh [scenario...]
# where a scenario is one of: controller cluster (default: all).
# Logs: build/molecule/<scenario>.log
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

# scenario name -> "directory molecule-scenario"
declare -A SCENARIOS=(
    [controller]="roles/controller default"
    [cluster]=". cluster"
)
ORDER=(controller cluster)
[ $# -gt 0 ] && ORDER=("$@")

[ -f build/wheelhouse.tar ] || scripts/build-wheelhouse.sh
mkdir -p build/molecule

summary=()
rc=0
for name in "${ORDER[@]}"; do
    read -r dir scenario <<<"${SCENARIOS[$name]:?unknown scenario $name}"
    log=$PWD/build/molecule/$name.log
    start=$SECONDS
    echo "== molecule $name ($dir, scenario $scenario), log $log"
    if (cd "$dir" && molecule test -s "$scenario") >"$log" 2>&1; then
        status=passed
    else
        status=FAILED
        rc=1
        tail -60 "$log"
    fi
    # The timer callback prints one line per playbook, in sequence order.
    steps=$(grep -o 'Playbook run took [0-9]* days, [0-9]* hours, [0-9]* minutes, [0-9]* seconds' "$log" \
        | sed -E 's/Playbook run took 0 days, 0 hours, ([0-9]+) minutes, ([0-9]+) seconds/\1m\2s/' | paste -sd' ')
    summary+=("$(printf '%-12s %-7s %5ds  playbooks: %s' "$name" "$status" $((SECONDS - start)) "$steps")")
done

echo
echo "== molecule summary (playbooks in order: destroy create converge idempotence [side_effect] destroy)"
printf '%s\n' "${summary[@]}"
echo "leftover VMs:"; vagrant global-status --prune 2>/dev/null | grep -E 'running|shutoff' || echo "  none"
exit $rc
