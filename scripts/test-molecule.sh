#!/usr/bin/env bash
# Run every Molecule scenario (create, converge, idempotence, check, verify,
# destroy) and report how long each took. Usage: scripts/test-molecule.sh
# [scenario...] where a scenario is one of: install apparmor controller worker
# cluster slurm slurm-role.
#
# With no arguments: cluster, then slurm, the second started when the first reaches
# its verify (see the pipeline below). The VMs run under software emulation: what
# can share a VM does, and what CI's time limit cannot hold runs on demand. Left out
# there: apparmor (the cluster scenario's hostile suite attacks the same profiles
# through real jobs; its aa-exec checks of each rule run on demand), install (every
# scenario converges roles/jobqueue_install on every host; its own scenario installs
# from scratch, without the box's pre-filled virtualenv, which costs an emulated VM
# 4 minutes), controller (the cluster scenario's controller is on PostgreSQL, the slurm
# one's on SQLite, and both run tests/controller), worker (the cluster scenario
# converges the same role on two workers of a real controller and runs all of its
# checks, the hostile-job suite included) and slurm-role (roles/slurm alone; the
# slurm scenario runs its checks). Every scenario runs a second converge, which must
# change nothing, and a --check run, which must not fail. The default ones do not
# run the checks marked `lengthy` (archive bombs through Apache: minutes of the
# cluster verify): with JOBQUEUE_LENGTHY_CHECKS=1 in the environment they run too.
# Logs: build/molecule/<scenario>.log
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

# scenario name -> "directory molecule-scenario"
declare -A SCENARIOS=(
    [install]="roles/jobqueue_install default"
    [apparmor]="roles/apparmor default"
    [cluster]=". cluster"
    [slurm]=". slurm"
    # On demand only (not in the default run below).
    [controller]="roles/controller default"
    [worker]="roles/worker default"
    [slurm-role]="roles/slurm default"
)
if [ $# -gt 0 ]; then
    NAMES=("$@")
else
    NAMES=(cluster slurm)
fi

# Settings every scenario shares, named explicitly: Molecule finds them by
# itself only in a git checkout.
BASE_CONFIG=$PWD/.config/molecule/config.yml

[ -f build/wheelhouse.tar ] || scripts/build-wheelhouse.sh
mkdir -p build/molecule

# A scenario's test_sequence: each of the project's scenarios names its own.
sequence() {  # sequence DIR SCENARIO
    python - "$1/molecule/$2/molecule.yml" <<'PY'
import sys, yaml
print(" ".join(yaml.safe_load(open(sys.argv[1]))["scenario"]["test_sequence"]))
PY
}

# One scenario, its test_sequence a step at a time (as `molecule test` runs it; on a
# failure, its VMs are destroyed), with its log and a summary line in
# build/molecule/<name>.summary. With AFTER (a PID), the steps past the converge wait
# until that process has ended: starved of CPU beside another scenario's verify, an
# emulated VM's SSH timed out in CI.
run_scenario() {  # run_scenario NAME [AFTER]
    local name=$1 after=${2:-} dir scenario log start status steps step sequence_steps
    read -r dir scenario <<<"${SCENARIOS[$name]:?unknown scenario $name}"
    log=$PWD/build/molecule/$name.log
    rm -f "build/molecule/$name.summary"
    start=$SECONDS
    echo "== molecule $name ($dir, scenario $scenario), log $log"
    status=passed
    sequence_steps=$(sequence "$dir" "$scenario") || { status=FAILED; sequence_steps=; }
    for step in $sequence_steps; do
        if [ -n "$after" ] && [ "$step" = idempotence ]; then
            while kill -0 "$after" 2>/dev/null; do sleep 10; done
        fi
        echo "== step $step" >>"$log"
        # Alone, `molecule check` runs a sequence of its own (a new deploy, then
        # destroy); the step itself is the converge playbook in --check mode.
        if [ "$step" = check ]; then
            set -- converge -- --check
        else
            set -- "${step//_/-}"
        fi
        if ! (cd "$dir" && molecule --base-config "$BASE_CONFIG" "$1" -s "$scenario" "${@:2}") \
                >>"$log" 2>&1; then
            status=FAILED
            tail -60 "$log"
            (cd "$dir" && molecule --base-config "$BASE_CONFIG" destroy -s "$scenario") \
                >>"$log" 2>&1
            break
        fi
    done
    # Per step: wall time from the timer callback, changed tasks of the
    # idempotence run, and pytest's verdict.
    steps=$(awk '
        /^== step / { step = $3 }
        /Playbook run took/ { printf "%s=%dm%02ds ", step, $(NF-3), $(NF-1) }
        step == "idempotence" && /changed=[0-9]+/ { match($0, /changed=[0-9]+/); n += substr($0, RSTART + 8, RLENGTH - 8) }
        step == "idempotence" && /Executed:/ && !shown { printf "idempotence_changed=%d ", n; shown = 1 }
        / passed| failed/ && /[0-9]+(\.[0-9]+)?s/ && /=====/ { gsub(/=/, ""); printf "verify:%s ", $0 }
    ' "$log")
    printf '%-12s %-7s %5ds  %s\n' "$name" "$status" $((SECONDS - start)) "$steps" \
        >"build/molecule/$name.summary"
    # The first error of a failed scenario, beside its summary: a CI log may keep
    # only its end.
    if [ "$status" = FAILED ]; then
        { grep -m 3 '^FAILED [^ ]*::' "$log"  # pytest's summary: which tests failed
          grep -v RETRYING "$log" | grep -m 3 -E 'fatal: \[|FAILED!|^E  |ERROR |Error:|Traceback'
        } | cut -c 1-400 | sed 's/^/    why: /' >>"build/molecule/$name.summary"
    fi
    [ "$status" = passed ]
}

# Pipelined, going on after a failure so that one run reports every scenario:
# each scenario starts once the one before it reaches its verify. A verify leaves
# about half of this machine's two cores idle (its tests mostly wait for jobs),
# which the next scenario's create and converge fill. Until the verify before it
# has ended, the next scenario's VMs get a small share of the CPU (libvirt's
# cpu_shares), so that the verify's VMs run as fast as they do alone (side by side
# at equal shares, the cluster verify took 31 minutes instead of 18; with the shares,
# 15.4 while the slurm scenario's create and converge ran beside it), and its steps
# after the converge wait for it (run_scenario).
started_verify() {  # started_verify NAME PID: true once it verifies or has ended
    grep -q "\[[a-z_-]* > verify\] Executing" "build/molecule/$1.log" 2>/dev/null ||
        ! kill -0 "$2" 2>/dev/null
}
cpu_shares() {  # cpu_shares NAME SHARES: for every running VM of that scenario
    local dir scenario domain
    read -r dir scenario <<<"${SCENARIOS[$1]}"
    for domain in $(virsh list --name 2>/dev/null |
            grep -F "molecule-$(basename "$(cd "$dir" && pwd)")-$scenario-"); do
        virsh schedinfo "$domain" --live --set "cpu_shares=$2" >/dev/null 2>&1 || true
    done
}
start=$SECONDS
pids=()
rm -f build/molecule/ops-timings.txt
for name in "${NAMES[@]}"; do
    rm -f "build/molecule/$name.log"
    run_scenario "$name" ${pids[@]:+"${pids[-1]}"} &
    pids+=($!)
    pid=$!
    # The scenario before this one still verifying: this one waits its turn for CPU.
    while [ ${#pids[@]} -gt 1 ] && kill -0 "${pids[-2]}" 2>/dev/null; do
        cpu_shares "$name" 64
        sleep 10
    done
    cpu_shares "$name" 1024  # libvirt's default
    until started_verify "$name" "$pid"; do sleep 10; done
done
rc=0
for pid in "${pids[@]}"; do
    wait "$pid" || rc=1
done

echo
echo "== molecule summary (wall time of each scenario, then per step; $((SECONDS - start)) s in all)"
for name in "${NAMES[@]}"; do
    cat "build/molecule/$name.summary" 2>/dev/null || echo "$name: no summary"
done
if [ -s build/molecule/ops-timings.txt ]; then
    echo "the admin's Fabric tasks in the cluster verify:"
    sed 's/^/  /' build/molecule/ops-timings.txt
fi
echo "leftover VMs:"; vagrant global-status --prune 2>/dev/null | grep -E 'running|shutoff' || echo "  none"
exit $rc
