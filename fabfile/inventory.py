"""The cluster's hosts, from the Ansible inventory the deploy uses (never a second list).

Which inventory: the task's --inventory, else $JOBQUEUE_INVENTORY (comma separated, as
`ansible -i` takes them), else what `make cluster` made: inventories/vagrant with the
addresses and keys Vagrant generated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fabric import Connection

ROOT = Path(__file__).resolve().parent.parent
VAGRANT_GENERATED = ROOT / ".vagrant" / "provisioners" / "ansible" / "inventory"
# Every task's --inventory.
INVENTORY_HELP = "Ansible inventory (default: $JOBQUEUE_INVENTORY, else make cluster's)"
# roles/jobqueue_install's default; an inventory may set its own.
INSTALL_DIR = "/opt/jobqueue"


@dataclass
class Host:
    name: str
    groups: list[str]
    vars: dict = field(default_factory=dict)

    @property
    def install_dir(self) -> str:
        return self.vars.get("jobqueue_install_dir", INSTALL_DIR)

    def connect(self) -> Connection:
        key = self.vars.get("ansible_ssh_private_key_file") or \
            self.vars.get("ansible_private_key_file")
        return Connection(self.vars.get("ansible_host", self.name),
                          user=self.vars.get("ansible_user"),
                          port=int(self.vars.get("ansible_port", 22)),
                          connect_kwargs={"key_filename": key} if key else {},
                          connect_timeout=60)


def sources(inventory: str | None = None) -> list[str]:
    given = inventory or os.environ.get("JOBQUEUE_INVENTORY")
    if given:
        return [part for part in given.split(",") if part]
    found = [str(ROOT / "inventories" / "vagrant")]
    if VAGRANT_GENERATED.exists():
        found.append(str(VAGRANT_GENERATED))
    return found


def ansible_command(name: str) -> str:
    """An Ansible command (ansible-inventory, ansible-playbook): on PATH, else beside this
    Python (the project's virtualenv)."""
    command = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if command is None:
        raise SystemExit(f"{name} not found: run `make venv` and use its .venv/bin/fab")
    return command


class Inventory:
    def __init__(self, inventory: str | None = None):
        # -i SOURCE for each source, as every Ansible command of a task takes them.
        self.ansible_args = [arg for source in sources(inventory) for arg in ("-i", source)]
        argv = [ansible_command("ansible-inventory"), "--list", *self.ansible_args]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
        if result.returncode != 0:
            raise SystemExit(f"ansible-inventory failed: {result.stderr.strip()}")
        data = json.loads(result.stdout)
        hostvars = data.get("_meta", {}).get("hostvars", {})
        groups: dict[str, list[str]] = {}
        for group, body in data.items():
            for name in body.get("hosts", []) if isinstance(body, dict) else []:
                groups.setdefault(name, []).append(group)
        self.hosts = {name: Host(name, sorted(groups.get(name, [])), hostvars.get(name, {}))
                      for name in sorted(set(groups) | set(hostvars))}

    def group(self, group: str) -> list[Host]:
        return [host for host in self.hosts.values() if group in host.groups]

    @property
    def controller(self) -> Host:
        controllers = self.group("controllers")
        if not controllers:
            raise SystemExit("the inventory has no host in group 'controllers'")
        return controllers[0]

    def worker(self, name: str) -> Host:
        for host in self.group("workers"):
            if host.name == name:
                return host
        raise SystemExit(f"no worker named {name!r} in the inventory "
                         f"(workers: {', '.join(h.name for h in self.group('workers'))})")
