#!/usr/bin/env python3
"""Benchmark: the deployed controller's answers to users while hundreds of idle workers
wait (`make bench-load`, after `make cluster`).

Issues tokens on the controller (jobqueue-admin issue-token, expiring after a day) for
N simulated workers (load-worker-NNN) and a few users (load-user-N), drains the real
workers (the load is the controller's alone: their jobs would share the machine's
CPUs), then runs service/bench/bench_controller_load.py against it from this machine:
the users beside 5 simulated workers first, then beside all of them. The real workers are resumed at
the end.

usage: scripts/bench-controller-load.py [-i INVENTORY] [--client build/admin-client.toml]
                                        [--workers 500] [--users 5] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fabfile.controller import ADMIN
from fabfile.inventory import INVENTORY_HELP, Inventory

BENCH = ROOT / "service" / "bench" / "bench_controller_load.py"


def admin(inventory: Inventory, *args: str) -> str:
    with inventory.controller.connect() as conn:
        return conn.sudo(" ".join([ADMIN, *args]), hide=True, in_stream=False).stdout


def issue_tokens(inventory: Inventory, role: str, names: list[str]) -> dict[str, str]:
    """One run of jobqueue-admin on the controller: a token a line, in the names' order."""
    out = admin(inventory, "issue-token", "--create", role, "--days", "1",
                "--label", "load-bench", *names).split()
    if len(out) != len(names):
        raise SystemExit(f"expected {len(names)} tokens from the controller, got {len(out)}")
    return dict(zip(names, out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("-i", "--inventory", help=INVENTORY_HELP)
    parser.add_argument("--client", default="build/admin-client.toml")
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    inventory = Inventory(args.inventory)
    with open(args.client, "rb") as fh:
        client = tomllib.load(fh)
    workers = issue_tokens(inventory, "worker",
                           [f"load-worker-{n:03d}" for n in range(args.workers)])
    users = issue_tokens(inventory, "user", [f"load-user-{n}" for n in range(args.users)])
    real = [host.name for host in inventory.group("workers")]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as tokens:
        json.dump({"workers": workers, "users": list(users.values())}, tokens)
        tokens.flush()
        try:
            for name in real:
                admin(inventory, "drain", name)
            return subprocess.run([sys.executable, str(BENCH), "--url", client["url"],
                                   "--ca", client["ca_bundle"], "--tokens", tokens.name,
                                   "--workers", str(args.workers), "--users", str(args.users),
                                   "--seconds", str(args.seconds)], check=False).returncode
        finally:
            for name in real:
                admin(inventory, "resume", name)


if __name__ == "__main__":
    sys.exit(main())
