#!/usr/bin/env python3
"""Bring a Molecule scenario's Vagrant VMs up or down with python-vagrant.

usage: vagrant_ctl.py up DIR INSTANCE_CONFIG | destroy DIR

`up` writes Molecule's instance config (how to reach each VM over SSH).
"""

import fcntl
import json
import os
import sys
import tempfile

import vagrant


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


def up(root: str, instance_config: str) -> None:
    v = vagrant.Vagrant(root=root, quiet_stdout=False, quiet_stderr=False)
    # Scenarios may run side by side: one `vagrant up` at a time, so that a new
    # box is copied into libvirt's pool once, not by two processes at once.
    with open(os.path.join(tempfile.gettempdir(), "jobqueue-vagrant-up.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        v.up(provider="libvirt")
    # One `vagrant ssh-config` for all VMs: each vagrant command costs seconds.
    instances = parse_ssh_config(v.ssh_config())
    with open(instance_config, "w") as out:
        json.dump(instances, out, indent=2)


def destroy(root: str) -> None:
    if not os.path.isfile(os.path.join(root, "Vagrantfile")):
        return
    vagrant.Vagrant(root=root, quiet_stdout=False, quiet_stderr=False).destroy()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "up":
        up(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "destroy":
        destroy(sys.argv[2])
    else:
        sys.exit(__doc__)
