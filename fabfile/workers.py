"""Take a worker out for maintenance and back (`fab drain WORKER`, `fab resume WORKER`),
in either queue mode: the dispatcher hands a drained worker no new job; in Slurm mode
the node is drained in Slurm (`scontrol update state=drain`)."""

from __future__ import annotations

import time

from fabric import task

from fabfile import controller
from fabfile.inventory import INVENTORY_HELP, Inventory


def _running(conn, worker: str, slurm: bool) -> int:
    if slurm:
        return next(n["running"] for n in controller.slurm_nodes(conn) if n["node"] == worker)
    return next(w["running"] for w in controller.admin(conn, "workers")
                if w["worker"] == worker)


@task(help={"worker": "the worker's inventory name",
            "timeout": "seconds to wait for its running jobs (0: do not wait); those still "
                       "running then go back to the queue",
            "inventory": INVENTORY_HELP})
def drain(c, worker, timeout=600, inventory=None):
    """Take a worker out: no new job; its running ones finish.

    Those still running at the timeout go back to the queue to run elsewhere."""
    inv = Inventory(inventory)
    host, conn = inv.worker(worker), inv.controller.connect()
    slurm = controller.slurm_mode(conn)
    if slurm:
        conn.sudo(f"scontrol update nodename={worker} state=drain reason=jobqueue-ops-drain",
                  hide=True, in_stream=False)
    else:
        controller.admin(conn, "drain", worker)
    deadline = time.monotonic() + int(timeout)
    while (running := _running(conn, worker, slurm)) and time.monotonic() < deadline:
        time.sleep(5)
    if running:
        print(f"{worker}: {running} job(s) still running after {timeout} s: handing them back")
        if slurm:
            conn.sudo(f"sh -c 'squeue -h -w {worker} -t RUNNING -o %i | xargs -r scontrol "
                      "requeue'", hide=True, in_stream=False)
        else:  # a stopping worker hands its jobs back; started again, it stays drained
            host.connect().sudo("systemctl restart jobqueue-worker", hide=True, in_stream=False)
    print(f"{worker}: drained, {_running(conn, worker, slurm)} job(s) running")


@task(help={"worker": "the worker's inventory name", "inventory": INVENTORY_HELP})
def resume(c, worker, inventory=None):
    """A drained worker takes jobs again."""
    inv = Inventory(inventory)
    inv.worker(worker)
    conn = inv.controller.connect()
    if controller.slurm_mode(conn):
        conn.sudo(f"scontrol update nodename={worker} state=resume", hide=True, in_stream=False)
    else:
        controller.admin(conn, "resume", worker)
    print(f"{worker}: taking jobs")
