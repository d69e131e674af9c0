"""Validation of the job spec a user submits: every problem named, nothing assumed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jobqueue.archive import UnsafeArchive, check_relative_path
from jobqueue.arrayspec import ArrayRange, BadArray, parse_array
from jobqueue.controller import jsonin
from jobqueue.controller.errors import bad_request
from jobqueue.controller.settings import ControllerSettings
from jobqueue.queue.dependencies import CONDITIONS

KNOWN_KEYS = {"name", "entry", "args", "env", "environment", "cpus", "walltime", "memory",
              "output_limit", "array", "array_args", "after", "inputs_from"}
MAX_ARGS = 1000
MAX_AFTER = 1000  # ids in `after` (an array's id counts once, however many tasks it has)
MAX_ID = 32
MAX_ENV = 100  # variables, each name up to 128 characters and value up to 4096
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Set by the worker for every job: where it is and who it is.
WORKER_SET_ENV = ("HOME", "TMPDIR")


@dataclass(frozen=True)
class JobSpec:
    name: str
    entry: str
    args: list[str]
    cpus: int
    walltime: int
    memory: int
    output_limit: int
    # A job array: its indices and %N limit, and each task's own arguments (after `args`).
    array: ArrayRange | None = None
    array_args: list[list[str]] | None = None
    # Jobs (ids, unique starts of ids, or array ids) that must end before this starts:
    # (condition, name) pairs, the condition as `jobqueue.queue.dependencies` has it.
    after: tuple[tuple[str, str], ...] = ()
    # Jobs whose results come in as inputs (each also waits for it to succeed, unless
    # `after` names it with another condition).
    inputs_from: tuple[str, ...] = ()
    # Environment variables for the job (names checked, JOBQUEUE_* and the worker's own
    # HOME and TMPDIR refused).
    env: dict[str, str] = field(default_factory=dict)
    # The software environment (a name the settings declare); None: the worker's own.
    environment: str | None = None


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
    array, array_args = _array(spec, settings.max_array_size)
    return JobSpec(
        name=name,
        entry=entry,
        args=args,
        cpus=_int(spec, "cpus", 1, 1, settings.max_job_cpus),
        walltime=_int(spec, "walltime", settings.default_walltime, 1, settings.max_walltime),
        memory=_int(spec, "memory", settings.default_memory, 16, settings.max_job_memory),
        output_limit=_int(spec, "output_limit", settings.default_output_limit, 1,
                          settings.max_output_limit),
        array=array,
        array_args=array_args,
        after=_after(spec),
        inputs_from=_ids(spec, "inputs_from"),
        env=_env(spec),
        environment=_environment(spec, settings),
    )


def _array(spec: dict, max_size: int) -> tuple[ArrayRange | None, list[list[str]] | None]:
    """`array` (Slurm's syntax) and `array_args` (one list of strings per task); with only
    `array_args`, the array's indices are 0 to n-1."""
    text, per_task = spec.get("array"), spec.get("array_args")
    array = None
    if text is not None:
        if not isinstance(text, str):
            raise bad_request("spec field 'array' must be a string such as '0-99%10'")
        try:
            array = parse_array(text, max_size)
        except BadArray as exc:
            raise bad_request(f"spec field 'array': {exc}") from None
    if per_task is None:
        return array, None
    if not isinstance(per_task, list) or not all(
            isinstance(a, list) and all(isinstance(s, str) for s in a) for a in per_task):
        raise bad_request("spec field 'array_args' must be a list of lists of strings, one "
                          "list per task")
    if not 0 < len(per_task) <= max_size:
        raise bad_request(f"spec field 'array_args' must hold 1 to {max_size} lists")
    if any(len(a) > MAX_ARGS for a in per_task):
        raise bad_request(f"spec field 'array_args': a task may have at most {MAX_ARGS} "
                          "arguments")
    if array is None:
        array = ArrayRange(tuple(range(len(per_task))))
    elif array.size != len(per_task):
        raise bad_request(f"spec field 'array_args' has {len(per_task)} lists but 'array' "
                          f"names {array.size} tasks")
    return array, per_task


def _ids(spec: dict, key: str) -> tuple[str, ...]:
    """A list of ids (or starts of ids) under `key`, each once."""
    ids = spec.get(key, [])
    if not isinstance(ids, list) or not all(
            isinstance(i, str) and 0 < len(i) <= MAX_ID for i in ids):
        raise bad_request(f"spec field {key!r} must be a list of job or array ids")
    if len(ids) > MAX_AFTER:
        raise bad_request(f"spec field {key!r} may hold at most {MAX_AFTER} ids")
    return tuple(dict.fromkeys(ids))


def _after(spec: dict) -> tuple[tuple[str, str], ...]:
    """`after`: ids, or CONDITION:ID as in Slurm's --dependency (afterok, afterany,
    afternotok); a bare id is afterok."""
    after = spec.get("after", [])
    if not isinstance(after, list) or not all(isinstance(e, str) for e in after):
        raise bad_request("spec field 'after' must be a list of job or array ids")
    parsed = []
    for entry in after:
        word, colon, name = entry.rpartition(":")
        condition = word.removeprefix("after") if colon else "ok"
        if colon and (not word.startswith("after") or condition not in CONDITIONS):
            raise bad_request(f"spec field 'after': {entry[:60]!r}: the condition is one of "
                              + ", ".join(f"after{c}" for c in CONDITIONS))
        parsed.append((name, condition))
    _ids({"after": [name for name, _ in parsed]}, "after")
    pairs: dict[str, str] = {}
    for name, condition in parsed:
        if pairs.setdefault(name, condition) != condition:
            raise bad_request(f"spec field 'after' gives {name!r} two conditions")
    return tuple((condition, name) for name, condition in pairs.items())


def _env(spec: dict) -> dict[str, str]:
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise bad_request("spec field 'env' must be an object of names to string values")
    if len(env) > MAX_ENV:
        raise bad_request(f"spec field 'env' may hold at most {MAX_ENV} variables")
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise bad_request(f"spec field 'env': {name[:60]!r} is not a variable name "
                              "(letters, digits and _, not starting with a digit, up to 128)")
        if name.startswith("JOBQUEUE_") or name in WORKER_SET_ENV:
            raise bad_request(f"spec field 'env': {name} is set by the worker")
        if len(value) > 4096 or "\0" in value:
            raise bad_request(f"spec field 'env': the value of {name} must be at most 4096 "
                              "characters, without NUL")
    return env


def _environment(spec: dict, settings: ControllerSettings) -> str | None:
    name = spec.get("environment", settings.default_environment)
    if name == "":
        return None
    if name not in settings.environments:
        offered = ", ".join(settings.environments) or "none"
        raise bad_request(f"spec field 'environment': {str(name)[:64]!r} is not one of this "
                          f"service's environments ({offered})")
    return name
