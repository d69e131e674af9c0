"""Take a worker out for maintenance and back (`fab drain WORKER`, `fab resume WORKER`),
in either queue mode: the dispatcher hands a drained worker no new job; in Slurm mode
the node is drained in Slurm (`scontrol update state=drain`). `fab rotate-tokens` gives
workers new tokens, one worker at a time, through a drain."""

from __future__ import annotations

import io
import json
import time
import tomllib

from fabric import Connection, task

from fabfile import controller
from fabfile.inventory import INVENTORY_HELP, Inventory

WORKER_CONFIG = "/etc/jobqueue/worker.toml"  # roles/worker's worker_config_dir


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
    drain_worker(Inventory(inventory), worker, int(timeout))


def drain_worker(inv: Inventory, worker: str, timeout: int) -> None:
    host, conn = inv.worker(worker), inv.controller.connect()
    slurm = controller.slurm_mode(conn)
    if slurm:
        conn.sudo(f"scontrol update nodename={worker} state=drain reason=jobqueue-ops-drain",
                  hide=True, in_stream=False)
        deadline = time.monotonic() + timeout
        while (running := _running(conn, worker, slurm)) and time.monotonic() < deadline:
            time.sleep(5)
    else:  # jobqueue-admin waits itself: one Python start instead of one per look
        running = controller.admin(conn, "drain", worker, "--wait", str(timeout))["running"]
    if running:
        print(f"{worker}: {running} job(s) still running after {timeout} s: handing them back")
        if slurm:
            conn.sudo(f"sh -c 'squeue -h -w {worker} -t RUNNING -o %i | xargs -r scontrol "
                      "requeue'", hide=True, in_stream=False)
        else:  # a stopping worker hands its jobs back; started again, it stays drained
            host.connect().sudo("systemctl restart jobqueue-worker", hide=True, in_stream=False)
        running = _running(conn, worker, slurm)
    print(f"{worker}: drained, {running} job(s) running")


@task(help={"worker": "the worker's inventory name", "inventory": INVENTORY_HELP})
def resume(c, worker, inventory=None):
    """A drained worker takes jobs again."""
    resume_worker(Inventory(inventory), worker)


def resume_worker(inv: Inventory, worker: str) -> None:
    inv.worker(worker)
    conn = inv.controller.connect()
    if controller.slurm_mode(conn):
        conn.sudo(f"scontrol update nodename={worker} state=resume", hide=True, in_stream=False)
    else:
        controller.admin(conn, "resume", worker)
    print(f"{worker}: taking jobs")


@task(help={"workers": "comma-separated inventory names (default: every worker)",
            "timeout": "seconds each worker's drain waits for its running jobs",
            "inventory": INVENTORY_HELP})
def rotate_tokens(c, workers="", timeout=600, inventory=None):
    """New tokens for the workers, one at a time; each one's old tokens are revoked.

    Each worker is drained (its running jobs finish; the others keep taking jobs), given
    its new token and restarted; then its other tokens are revoked (the controller first
    checks that the new one is live and the worker's) and it is resumed."""
    inv = Inventory(inventory)
    conn = inv.controller.connect()
    names = [w for w in workers.split(",") if w] or [h.name for h in inv.group("workers")]
    for name in names:
        drain_worker(inv, name, int(timeout))
        try:
            _rotate(inv.worker(name).connect(), conn, name)
        finally:
            resume_worker(inv, name)


def _rotate(worker: Connection, conn: Connection, name: str) -> None:
    config = tomllib.loads(worker.sudo(f"cat {WORKER_CONFIG}", hide=True,
                                       in_stream=False).stdout)
    path = config["token_file"]
    token = conn.sudo(f"{controller.ADMIN} issue-token {name} --label 'worker {name} "
                      f"(rotated {time.strftime('%Y-%m-%d %H:%M')})'",
                      hide=True, in_stream=False).stdout.strip()
    # Written beside the old one with its owner and mode, then moved over it.
    worker.sudo(f"sh -c 'umask 077 && cat >{path}.new && chown --reference={path} {path}.new "
                f"&& chmod --reference={path} {path}.new && mv {path}.new {path}'",
                hide=True, in_stream=io.StringIO(token + "\n"))
    if worker.run("systemctl is-enabled --quiet jobqueue-worker", warn=True, hide=True,
                  in_stream=False).ok:  # Slurm mode: each job's worker reads the file
        worker.sudo("systemctl restart jobqueue-worker", hide=True, in_stream=False)
    revoked = json.loads(conn.sudo(f"{controller.ADMIN} revoke-tokens {name} --keep-stdin",
                                   hide=True, in_stream=io.StringIO(token + "\n")).stdout)
    print(f"{name}: new token in {path}, {revoked['revoked']} old one(s) revoked")
