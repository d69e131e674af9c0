"""A new build of the service on every host while jobs keep flowing (`fab
rolling-upgrade`): a backup of the controller, then the controller's play (the new
wheel installed, the database migrated, Apache reloaded), then the workers' play on
one worker at a time between a drain and a resume, so the others keep taking jobs.
Slurm itself is left as it is (site.yml's Slurm play is not run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fabric import task

from fabfile import backups, fleet
from fabfile.inventory import INVENTORY_HELP, ROOT, Inventory, ansible_command
from fabfile.workers import drain_worker, resume_worker


def _deploy(inv: Inventory, playbook: str, host: str, wheelhouse: Path,
            extra_vars: str) -> None:
    """`playbook` (of playbooks/) on `host` alone, with the new wheelhouse."""
    argv = [ansible_command("ansible-playbook"), f"playbooks/{playbook}", "--limit", host,
            "-e", f"jobqueue_wheelhouse_archive={wheelhouse}", *inv.ansible_args]
    if extra_vars:
        argv += ["-e", extra_vars]
    print(f"== {playbook} on {host}", flush=True)
    if subprocess.run(argv, cwd=ROOT, check=False).returncode != 0:
        raise SystemExit(f"{playbook} failed on {host}: the hosts before it are upgraded, "
                         "the others not; fix and run the task again")


@task(help={"wheelhouse": "the new build (default: build/wheelhouse.tar, as `make "
                          "wheelhouse` makes it)",
            "timeout": "seconds each worker's drain waits for its running jobs",
            "extra_vars": "more variables for the plays, as ansible-playbook -e takes them",
            "inventory": INVENTORY_HELP})
def rolling_upgrade(c, wheelhouse=None, timeout=600, extra_vars="", inventory=None):
    """The new build on every host, jobs flowing: controller, then one worker at a time.

    The controller is backed up first (build/backups/); each worker is drained (its
    running jobs finish), upgraded and resumed, so the others keep taking jobs."""
    archive = Path(wheelhouse or ROOT / "build" / "wheelhouse.tar").resolve()
    if not archive.is_file():
        raise SystemExit(f"no wheelhouse at {archive}: run `make wheelhouse` first")
    inv = Inventory(inventory)
    backups.backup(c, inventory=inventory)
    _deploy(inv, "controller.yml", inv.controller.name, archive, extra_vars)
    for worker in inv.group("workers"):
        drain_worker(inv, worker.name, int(timeout))
        try:
            _deploy(inv, "workers.yml", worker.name, archive, extra_vars)
        finally:
            resume_worker(inv, worker.name)
    versions = {found["host"]: found.get("version", "-")
                for found in map(fleet.probe, inv.hosts.values())}
    print("versions: " + ", ".join(f"{host} {v}" for host, v in versions.items()))
