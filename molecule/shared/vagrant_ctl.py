#!/usr/bin/env python3
"""Bring a Molecule scenario's Vagrant VMs up or down with python-vagrant.

usage: vagrant_ctl.py up DIR INSTANCE_CONFIG DOMAIN_PREFIX | destroy DIR

`up` removes the VMs a killed run of the same scenario left behind (libvirt domains
named DOMAIN_PREFIX*), then writes Molecule's instance config (how to reach each VM
over SSH).
"""

import contextlib
import fcntl
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import vagrant

UP_ATTEMPTS = 3


def parse_ssh_config(text: str) -> list[dict]:
    """Molecule instances from `vagrant ssh-config` output (every VM at once)."""
    hosts, current = [], None
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "Host":
            current = {"instance": value.strip()}
            hosts.append(current)
        elif current is not None and key in ("HostName", "User", "Port", "IdentityFile"):
            current[key] = value.strip().strip('"')
    return [{"instance": h["instance"], "address": h["HostName"], "user": h["User"],
             "port": int(h["Port"]), "identity_file": h["IdentityFile"]} for h in hosts]


def domain_id_files(root: str) -> list[str]:
    """Where Vagrant keeps the libvirt domain id of each of this directory's VMs; it
    makes one only once the box is in libvirt's storage pool."""
    return glob.glob(os.path.join(root, ".vagrant", "machines", "*", "libvirt", "id"))


def virsh(*args: str, check: bool = True) -> str:
    return subprocess.run(["virsh", "--connect", "qemu:///system", *args],
                          check=check, capture_output=True, text=True).stdout


def remove_stale_domains(root: str, prefix: str) -> None:
    """A run killed before its destroy step leaves its VMs running under the names
    this run's VMs need (and on their addresses): `vagrant up` then fails at once.
    Domains with the scenario's prefix that this directory did not make are
    such leftovers."""
    ours = set()
    for id_file in domain_id_files(root):
        with open(id_file) as f:
            ours.add(f.read().strip())
    for name in virsh("list", "--all", "--name").split():
        if name.startswith(prefix) and virsh("domuuid", name).strip() not in ours:
            print(f"removing {name}, left behind by an earlier run", flush=True)
            virsh("destroy", name, check=False)  # fails when it is not running: fine
            virsh("undefine", name, "--remove-all-storage")


def start_vms(v: vagrant.Vagrant, root: str) -> None:
    """`vagrant up` of the scenario's VMs."""
    # Scenarios may run side by side, and two `vagrant up` that both find the box
    # missing from libvirt's pool would both copy it in. So each holds a lock until
    # its first domain exists (the box is in the pool by then), and the VMs of the
    # scenarios boot side by side after that.
    with (open(os.path.join(tempfile.gettempdir(), "jobqueue-vagrant-up.lock"), "w") as lock,
          ThreadPoolExecutor(1) as pool):
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = pool.submit(v.up, provider="libvirt")
        while not started.done() and not domain_id_files(root):
            time.sleep(1)
        fcntl.flock(lock, fcntl.LOCK_UN)
        started.result()


def up(root: str, instance_config: str, domain_prefix: str) -> None:
    v = vagrant.Vagrant(root=root, quiet_stdout=False, quiet_stderr=False)
    # A loaded host makes vagrant-libvirt give up on a VM that is only slow (its
    # 2-second address lookup, a boot past its timeout): such a VM is destroyed and
    # all are brought up again, a bounded number of times.
    for attempt in range(1, UP_ATTEMPTS + 1):
        try:
            remove_stale_domains(root, domain_prefix)
            start_vms(v, root)
            break
        except subprocess.CalledProcessError as exc:
            if attempt == UP_ATTEMPTS:
                raise
            print(f"vagrant up failed ({exc}); attempt {attempt} of {UP_ATTEMPTS}: "
                  "destroying the VMs and bringing them up again", flush=True)
            with contextlib.suppress(subprocess.CalledProcessError):
                v.destroy()
    # One `vagrant ssh-config` for all VMs: each vagrant command costs seconds.
    instances = parse_ssh_config(v.ssh_config())
    with open(instance_config, "w") as out:
        json.dump(instances, out, indent=2)


def destroy(root: str) -> None:
    if not os.path.isfile(os.path.join(root, "Vagrantfile")):
        return
    vagrant.Vagrant(root=root, quiet_stdout=False, quiet_stderr=False).destroy()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "up":
        up(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "destroy":
        destroy(sys.argv[2])
    else:
        sys.exit(__doc__)
