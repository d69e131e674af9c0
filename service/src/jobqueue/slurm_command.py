"""Running one of Slurm's commands (sbatch, squeue, sacct, scancel, sinfo), as both the
controller's Slurm backend (queue/slurm.py) and the node's runner
(worker/slurm_runner.py) do: bounded in time, its failure an error that says which
command and why."""

from __future__ import annotations

import subprocess
from pathlib import Path

TIMEOUT_SECONDS = 60.0


class SlurmCommandError(RuntimeError):
    pass


def run(name: str, *args: str, bin_dir: str = "", stdin: str | None = None) -> str:
    """The command's stdout; SlurmCommandError if it could not run, timed out or failed."""
    binary = str(Path(bin_dir) / name) if bin_dir else name
    try:
        done = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmCommandError(f"{name}: {exc}") from None
    if done.returncode != 0:
        raise SlurmCommandError(f"{name}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout
