"""Validation of the job spec a user submits: every problem named, nothing assumed."""

from __future__ import annotations

from dataclasses import dataclass

from jobqueue.archive import UnsafeArchive, check_relative_path
from jobqueue.controller import jsonin
from jobqueue.controller.errors import bad_request
from jobqueue.controller.settings import ControllerSettings

KNOWN_KEYS = {"name", "entry", "args", "cpus", "walltime", "memory", "output_limit"}
MAX_ARGS = 1000


@dataclass(frozen=True)
class JobSpec:
    name: str
    entry: str
    args: list[str]
    cpus: int
    walltime: int
    memory: int
    output_limit: int


def _int(spec: dict, key: str, default: int, low: int, high: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"spec field {key!r} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise bad_request(f"spec field {key!r} must be between {low} and {high}, got {value}")
    return value


def parse_spec(raw: str | None, settings: ControllerSettings) -> JobSpec:
    if raw is None:
        raise bad_request("the multipart form needs a 'spec' part holding the job's JSON spec")
    spec = jsonin.loads(raw, "the spec")
    if not isinstance(spec, dict):
        raise bad_request("the spec must be a JSON object")
    unknown = sorted(set(spec) - KNOWN_KEYS)
    if unknown:
        raise bad_request(f"unknown spec field(s): {', '.join(unknown)}")
    entry = spec.get("entry")
    if not isinstance(entry, str) or not entry:
        raise bad_request("spec field 'entry' (the script to run) is required")
    try:
        entry = str(check_relative_path(entry))
    except UnsafeArchive as exc:
        raise bad_request(f"spec field 'entry': {exc}") from None
    name = spec.get("name", entry)
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise bad_request("spec field 'name' must be a string of 1 to 200 characters")
    args = spec.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise bad_request("spec field 'args' must be a list of strings")
    if len(args) > MAX_ARGS:
        raise bad_request(f"spec field 'args' may hold at most {MAX_ARGS} arguments")
    return JobSpec(
        name=name,
        entry=entry,
        args=args,
        cpus=_int(spec, "cpus", 1, 1, settings.max_job_cpus),
        walltime=_int(spec, "walltime", settings.default_walltime, 1, settings.max_walltime),
        memory=_int(spec, "memory", settings.default_memory, 16, 1 << 30),
        output_limit=_int(spec, "output_limit", settings.default_output_limit, 1, 1 << 30),
    )
