#!/usr/bin/env python3
"""Bring a Molecule scenario's Vagrant VMs up or down with python-vagrant.

usage: vagrant_ctl.py up DIR INSTANCE_CONFIG | destroy DIR

`up` writes Molecule's instance config (how to reach each VM over SSH).
"""

import json
import os
import sys

import vagrant


def up(root: str, instance_config: str) -> None:
    v = vagrant.Vagrant(root=root, quiet_stdout=False, quiet_stderr=False)
    v.up(provider="libvirt")
    instances = []
    for status in v.status():
        conf = v.conf(vm_name=status.name)
        instances.append({
            "instance": status.name,
            "address": conf["HostName"],
            "user": conf["User"],
            "port": int(conf["Port"]),
            "identity_file": conf["IdentityFile"].strip('"'),
        })
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
