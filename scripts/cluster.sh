#!/usr/bin/env bash
# The local cluster in one command: VMs up, deployed (site.yml), users and the
# admin's client configuration (configure), then a real job (run_experiment).
# `make cluster` runs the venv, host, box and wheelhouse steps before this.
# Safe to run again: every step converges.
set -euo pipefail

cd "$(dirname "$0")/.."

# ansible-playbook, which Vagrant's Ansible provisioner runs, comes from the venv.
if [ -x .venv/bin/ansible-playbook ]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi
command -v ansible-playbook >/dev/null || { echo "cluster: ansible-playbook not found; run scripts/venv.sh" >&2; exit 1; }
[ -f build/wheelhouse.tar ] || { echo "cluster: build/wheelhouse.tar missing; run scripts/build-wheelhouse.sh" >&2; exit 1; }

export VAGRANT_DEFAULT_PROVIDER=${VAGRANT_DEFAULT_PROVIDER:-libvirt}

T_START=$SECONDS
TIMES=()
run_step() {
    local name=$1
    shift
    local t=$SECONDS
    echo "==> cluster: $name: $*"
    "$@" </dev/null
    TIMES+=("$(printf '%-16s %5ds' "$name" $((SECONDS - t)))")
    echo "==> cluster: $name done in $((SECONDS - t))s"
}

# `vagrant up`, again after a failure: on a loaded host vagrant-libvirt gives up on
# a VM that is only slow (its 2-second address lookup, a boot past its timeout).
# Running VMs are kept; a VM left half made is destroyed first.
UP_ATTEMPTS=3
vms_up() {
    local attempt machine
    for attempt in $(seq 1 "$UP_ATTEMPTS"); do
        vagrant up --no-provision && return 0
        [ "$attempt" -lt "$UP_ATTEMPTS" ] || return 1
        echo "==> cluster: vagrant up failed (attempt $attempt of $UP_ATTEMPTS): again, after destroying the VMs that are not running"
        for machine in $(vagrant status --machine-readable \
                | awk -F, '$3 == "state" && $4 != "running" && $4 != "not_created" { print $2 }'); do
            vagrant destroy -f "$machine"
        done
    done
}

# Machines up first, then site.yml exactly once. A plain `vagrant up` also runs it,
# but only for new machines, and vagrant-libvirt runs it twice with --provision on
# running ones. This way a second run finishes a deployment that failed half-way.
run_step up vms_up
run_step deploy vagrant provision
run_step configure vagrant provision --provision-with configure
run_step run_experiment vagrant provision --provision-with run_experiment

client=build/admin-client.toml
url=$(sed -n 's/^url[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' "$client" 2>/dev/null | head -n1)

echo
echo "cluster: step times"
printf '  %s\n' "${TIMES[@]}"
printf '  %-16s %5ds\n' total $((SECONDS - T_START))
echo
echo "Controller:          ${url:-https://10.42.0.10} (web page and API, /api/v1)"
echo "Admin client config: $PWD/$client (url, admin token, CA; keep it private)"
echo "CA certificate:      $PWD/build/ca.crt"
echo
echo "Try it:"
echo "  export JOBQUEUE_CLIENT_CONFIG=$PWD/$client"
echo "  .venv/bin/jobqueue list"
echo "Stop / start the service: vagrant provision --provision-with down (or up)"
echo "Remove the VMs:           vagrant destroy -f"
