"""Back the controller up to this machine and restore it (`fab backup`, `fab restore`):
jobqueue-admin's backup (database and job storage, with a manifest of checksums),
fetched as one tar file."""

from __future__ import annotations

import time
from pathlib import Path

from fabric import task

from fabfile import controller
from fabfile.inventory import INVENTORY_HELP, ROOT, Inventory

# Served by the controller; stopped while a restore replaces what they read.
SERVICES = ("apache2", "jobqueue-scheduler")


@task(help={"dest": "the tar file to write (default: build/backups/<time>.tar)",
            "inventory": INVENTORY_HELP})
def backup(c, dest=None, inventory=None):
    """Back the controller's database and job storage up, here."""
    conn = Inventory(inventory).controller.connect()
    made = controller.admin(conn, "backup")
    remote = "/tmp/jobqueue-backup.tar"
    conn.sudo(f"sh -c 'tar -C {made['backup']} -cf {remote} . && chown {conn.user} {remote} "
              f"&& rm -rf {made['backup']}'", hide=True, in_stream=False)
    local = Path(dest) if dest else \
        ROOT / "build" / "backups" / f"{time.strftime('%Y%m%dT%H%M%S')}.tar"
    local.parent.mkdir(parents=True, exist_ok=True)
    conn.get(remote, str(local))
    conn.run(f"rm -f {remote}", hide=True, in_stream=False)
    print(f"{made['jobs']} jobs and {made['files']} files of the controller in {local}")


@task(help={"archive": "a tar file `fab backup` wrote", "inventory": INVENTORY_HELP})
def restore(c, archive, inventory=None):
    """Put a backup back onto the controller.

    Its database and job storage are replaced (its web service is stopped meanwhile):
    every job, log and result of the backup comes back."""
    conn = Inventory(inventory).controller.connect()
    where = controller.admin(conn, "paths")
    staging = f"{where['data_dir']}/restore-{time.strftime('%Y%m%dT%H%M%S')}"
    remote = "/tmp/jobqueue-restore.tar"
    conn.put(str(archive), remote)
    conn.sudo(f"sh -c 'install -d -m 0700 -o {where['user']} {staging} && "
              f"tar -C {staging} -xf {remote} && chown -R {where['user']} {staging} && "
              f"rm -f {remote}'", hide=True, in_stream=False)
    running = [unit for unit in SERVICES if conn.run(
        f"systemctl is-active --quiet {unit}", warn=True, hide=True, in_stream=False).ok]
    conn.sudo(f"systemctl stop {' '.join(running)}", hide=True, in_stream=False)
    try:
        restored = controller.admin(conn, "restore", staging)
    finally:
        conn.sudo(f"systemctl start {' '.join(running)}", hide=True, in_stream=False)
        conn.sudo(f"rm -rf {staging}", hide=True, in_stream=False)
    print(f"restored {restored['jobs']} jobs and {restored['files']} files "
          f"(backup of {restored['created_at']})")
