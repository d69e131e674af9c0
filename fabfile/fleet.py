"""The fleet at a glance (`fab status`) and every host's logs in one folder
(`fab collect-logs`)."""

from __future__ import annotations

import json
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fabric import task
from paramiko.ssh_exception import SSHException

from fabfile import controller
from fabfile.inventory import INVENTORY_HELP, ROOT, Host, Inventory

UNITS = ("apache2", "postgresql", "jobqueue-scheduler", "jobqueue-worker", "slurmctld",
         "slurmdbd", "slurmd", "munge")


def probe(host: Host) -> dict:
    """One round trip: the host's jobqueue and Slurm units, service version, disk, load."""
    script = (
        f"for u in {' '.join(UNITS)}; do echo \"unit $u $(systemctl is-active $u)\"; done; "
        f"echo \"version $({host.install_dir}/venv/bin/python -c "
        "'import jobqueue; print(jobqueue.__version__)' 2>/dev/null || echo -)\"; "
        "echo \"disk $(df -P / | awk 'NR == 2 { print $5 }')\"; "
        "echo \"load $(cut -d' ' -f1 /proc/loadavg)\"")
    found = {"host": host.name, "groups": host.groups, "units": {}}
    try:
        out = host.connect().run(script, hide=True, warn=True, in_stream=False).stdout
    except (OSError, SSHException) as exc:  # unreachable: in the table, the rest goes on
        return found | {"error": f"{type(exc).__name__}: {exc}"}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "unit":
            unit, state = value.split()
            if state != "inactive":
                found["units"][unit] = state
        else:
            found[key] = value
    return found


def _table(rows: list[list], headers: list[str]) -> str:
    cells = [headers] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


@task(help={"inventory": INVENTORY_HELP, "json_": "print JSON instead of tables"})
def status(c, inventory=None, json_=False):
    """The fleet: hosts, workers and the queue in one table.

    Every host's services, version, disk and load; each worker's slots (busy, free,
    set aside), whether it is drained and its last claim; jobs per state."""
    inv = Inventory(inventory)
    with ThreadPoolExecutor(8) as pool:
        hosts = list(pool.map(probe, inv.hosts.values()))
    conn = inv.controller.connect()
    report = {"hosts": hosts}
    state = controller.admin(conn, "status")
    report["jobs"] = state["jobs"]
    if controller.slurm_mode(conn):
        report["queue"], report["nodes"] = "slurm", controller.slurm_nodes(conn)
    else:
        report["queue"], report["workers"] = "dispatcher", state["workers"]
    if json_:
        print(json.dumps(report, indent=2))
        return
    print(_table([[h["host"], ",".join(h["groups"]), h.get("error") or " ".join(
        f"{u}{'' if s == 'active' else '(' + s + ')'}" for u, s in h["units"].items()),
        h.get("version"), h.get("disk"), h.get("load")] for h in hosts],
        ["HOST", "GROUPS", "SERVICES", "VERSION", "DISK", "LOAD"]))
    print()
    if report["queue"] == "slurm":
        print(_table([[n["node"], n["state"], n["cpus"], n["running"]] for n in report["nodes"]],
                     ["NODE", "SLURM STATE", "CPUS", "RUNNING"]))
    else:
        print(_table([[w["worker"], w["cpus"], w["jobs"], w["running"],
                       None if w["jobs"] is None else max(0, w["jobs"] - w["running"]),
                       w["quarantined_slots"], "yes" if w["drained"] else "no", w["seen_at"]]
                      for w in report["workers"]],
                     ["WORKER", "CPUS", "SLOTS", "BUSY", "FREE", "SET ASIDE", "DRAINED",
                      "LAST CLAIM"]))
    jobs = report["jobs"]
    print(f"\nqueue ({report['queue']}): {jobs['queued']} queued, {jobs['running']} running, "
          f"{jobs['succeeded']} succeeded, {jobs['failed']} failed")


def _host_logs(host: Host, dest: Path) -> str:
    conn = host.connect()
    remote = f"/tmp/jobqueue-logs-{host.name}.tar.gz"
    conn.sudo("sh -c 'd=$(mktemp -d) && journalctl -b --no-pager -o short-iso >$d/journal.txt"
              " && for x in apache2 jobqueue slurm; do [ ! -d /var/log/$x ] || "
              f"cp -r /var/log/$x $d/; done && tar -C $d -czf {remote} . && rm -rf $d && "
              f"chown {conn.user} {remote}'", hide=True, in_stream=False)
    local = dest / f"{host.name}.tar.gz"
    conn.get(remote, str(local))
    conn.run(f"rm -f {remote}", hide=True, in_stream=False)
    with tarfile.open(local) as tar:
        tar.extractall(dest / host.name, filter="data")
    local.unlink()
    return host.name


@task(help={"dest": "folder for the logs (default: build/logs/<time>)",
            "inventory": INVENTORY_HELP})
def collect_logs(c, dest=None, inventory=None):
    """Every host's logs into one folder.

    The journal of the current boot and the Apache, jobqueue and Slurm logs, in a
    subfolder per host."""
    folder = Path(dest) if dest else ROOT / "build" / "logs" / time.strftime("%Y%m%dT%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    inv = Inventory(inventory)
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda h: _host_logs(h, folder), inv.hosts.values()))
    print(f"logs of {', '.join(done)} in {folder}")
