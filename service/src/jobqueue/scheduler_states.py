"""What a batch scheduler's job states mean for a job: the outcomes every scheduler
backend works with, and Slurm's words for them. One table for the controller's Slurm
backend (queue/slurm.py) and the node's runner (worker/slurm_runner.py); nothing here
needs the server's dependencies."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """What a scheduler's job state means for our job."""

    WAITING = "waiting"  # not started yet: our job stays queued
    RUNNING = "running"
    DONE = "done"  # ended normally: the results must have arrived, else a failed attempt
    FAILED = "failed"  # ended by a failure of the node or of the scheduler: retry
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"  # the scheduler's time limit
    OUT_OF_MEMORY = "out_of_memory"  # the scheduler's memory limit


# Every state squeue and sacct can show (slurm 22.05), and what it means for us.
SLURM_STATES: dict[str, Outcome] = {
    "PENDING": Outcome.WAITING,
    "CONFIGURING": Outcome.WAITING,
    "REQUEUED": Outcome.WAITING,
    "REQUEUE_FED": Outcome.WAITING,
    "REQUEUE_HOLD": Outcome.WAITING,
    "RESV_DEL_HOLD": Outcome.WAITING,
    "SPECIAL_EXIT": Outcome.WAITING,
    "RESIZING": Outcome.RUNNING,
    "RUNNING": Outcome.RUNNING,
    "COMPLETING": Outcome.RUNNING,
    "SIGNALING": Outcome.RUNNING,
    "STAGE_OUT": Outcome.RUNNING,
    "SUSPENDED": Outcome.RUNNING,
    "STOPPED": Outcome.RUNNING,
    "COMPLETED": Outcome.DONE,
    "FAILED": Outcome.FAILED,
    "BOOT_FAIL": Outcome.FAILED,
    "DEADLINE": Outcome.FAILED,
    "NODE_FAIL": Outcome.FAILED,
    "PREEMPTED": Outcome.FAILED,
    "REVOKED": Outcome.FAILED,
    "LAUNCH_FAILED": Outcome.FAILED,
    "CANCELLED": Outcome.CANCELLED,
    "TIMEOUT": Outcome.TIMED_OUT,
    "OUT_OF_MEMORY": Outcome.OUT_OF_MEMORY,
}


def slurm_outcome(state: str) -> tuple[Outcome, str]:
    """(outcome, detail) of a Slurm state word; sacct writes e.g. `CANCELLED by 1000`
    (the detail is then `uid 1000`). An unknown word counts as a failure: it must not
    pass for a success, nor leave the job waiting for ever."""
    word, _, rest = state.strip().partition(" ")
    word = word.rstrip("+")  # sacct marks truncated states with a "+"
    detail = rest.removeprefix("by ").strip()
    return SLURM_STATES.get(word, Outcome.FAILED), (f"uid {detail}" if detail else "")


# An outcome that is an end, and the job's limit it stands for, if any.
ENDED = frozenset(Outcome) - {Outcome.WAITING, Outcome.RUNNING}
LIMITS = {Outcome.TIMED_OUT: "walltime", Outcome.OUT_OF_MEMORY: "memory"}
