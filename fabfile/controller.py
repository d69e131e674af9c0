"""What the ops tasks ask of the controller: jobqueue-admin (the controller role's
wrapper, as the service's user with its settings) and, in Slurm mode, Slurm."""

from __future__ import annotations

import json

from fabric import Connection

ADMIN = "/usr/local/sbin/jobqueue-admin"


def admin(conn: Connection, *args: str) -> dict | list:
    """jobqueue-admin's JSON answer."""
    return json.loads(conn.sudo(" ".join([ADMIN, *args]), hide=True, in_stream=False).stdout)


def slurm_mode(conn: Connection) -> bool:
    """Slurm mode: slurmctld runs on the controller (roles/slurm), jobs are Slurm jobs."""
    return conn.run("systemctl is-active --quiet slurmctld", warn=True, hide=True,
                    in_stream=False).ok


def slurm_nodes(conn: Connection) -> list[dict]:
    """sinfo's nodes: name, state (drain, idle, mix, alloc...), CPUs, jobs running (one
    squeue for all: each job of the service runs on one node)."""
    out = conn.run("sinfo -h -N -o '%N %t %c'", hide=True, in_stream=False).stdout
    running = conn.run("squeue -h -t RUNNING -o %N", hide=True, in_stream=False).stdout.split()
    nodes = []
    for line in out.splitlines():
        name, state, cpus = line.split()
        nodes.append({"node": name, "state": state, "cpus": int(cpus),
                      "running": running.count(name)})
    return nodes
