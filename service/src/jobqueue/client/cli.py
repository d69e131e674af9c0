"""The ``jobqueue`` command: submit jobs, follow them and fetch their results."""

from __future__ import annotations

import argparse
import fnmatch
import getpass
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jobqueue import __version__
from jobqueue.client import (
    arg_types,
    cluster_commands,
    completion,
    display,
    progress,
    token_commands,
)
from jobqueue.client.api import TERMINAL_STATES, Client
from jobqueue.client.config import config_path, write_config
from jobqueue.client.errors import ApiError, ClientError, WaitTimeout
from jobqueue.client.exit_status import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_JOB_CANCELLED,
    EXIT_JOB_NOT_SUCCEEDED,
    EXIT_JOB_TIMED_OUT,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    job_exit_status,
)
from jobqueue.extras import needs_server, server_missing
from jobqueue.states import JobState

PROG = "jobqueue"
STATES = tuple(state.value for state in JobState)
LIST_DEFAULT_LIMIT = 50

EPILOG = f"""\
The controller is found through JOBQUEUE_URL, JOBQUEUE_TOKEN and JOBQUEUE_CA_BUNDLE, else
the file named by JOBQUEUE_CLIENT_CONFIG or ~/.config/jobqueue/client.toml (keys url, token,
ca_bundle).

exit status: {EXIT_OK} success; {EXIT_ERROR} error; {EXIT_USAGE} bad command line; \
{EXIT_WAIT_TIMEOUT} the wait timed out;
{EXIT_INTERRUPTED} interrupted. A job that ended without succeeding (wait, submit --wait,
log -f): its own exit status (128 + N if signal N killed it), {EXIT_JOB_TIMED_OUT} if it \
ran out of
time, {EXIT_JOB_CANCELLED} if it was cancelled, {EXIT_JOB_NOT_SUCCEEDED} if it has none \
(lost, or an array's task failed)."""




class UsageError(Exception):
    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line instead of argparse's usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    positional = [a for a in args_list if not a.startswith("-")]
    if positional and positional[0] == "dev":
        return _run_dev(args_list[args_list.index("dev") + 1 :])

    parser = build_parser()
    try:
        args = parse_command_line(parser, args_list)
    except UsageError as exc:
        return _fail(f"{exc} (see '{exc.prog} --help')", EXIT_USAGE)
    except SystemExit as exc:  # --help and --version end here
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (`jobqueue list | head`): nothing to say, and nothing
        # left for the interpreter to fail to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except WaitTimeout as exc:
        if args.json:
            display.print_json(exc.job)
        return _fail(str(exc), EXIT_WAIT_TIMEOUT)
    except ClientError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return _fail("interrupted (a submitted job keeps running)", EXIT_INTERRUPTED)
    except Exception as exc:  # a command line tool prints errors, not tracebacks
        return _fail(f"unexpected {type(exc).__name__}: {exc}")


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`argv` parsed; for submit, what follows `--` goes to the script as it is."""
    script_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, script_args = argv[:at], argv[at + 1:]
    args = parser.parse_args(_arg_values_joined(argv))
    if script_args and getattr(args, "handler", None) is not cmd_submit:
        raise UsageError("only submit takes arguments after --", PROG)
    args.script_args = script_args
    return args


def _arg_values_joined(argv: list[str]) -> list[str]:
    """`--arg X` as `--arg=X`: the script's argument may start with a dash (`--arg
    --fast`), which argparse would take for an option of its own."""
    joined: list[str] = []
    values = iter(argv)
    for word in values:
        value = next(values, None) if word == "--arg" else None
        joined.append(word if value is None else f"--arg={value}")
    return joined


def build_parser() -> argparse.ArgumentParser:
    # --json is accepted before or after the subcommand; SUPPRESS keeps the subcommand's
    # default from overwriting a value given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = _Parser(
        prog=PROG,
        description="Submit Python jobs to the shared job service and collect their results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = command("submit", cmd_submit, "submit a script, or a folder with an entry script")
    p.add_argument("path", metavar="PATH", help="a .py script, or a folder to send as a whole")
    p.add_argument("--entry", metavar="E", help="what to run, relative to the folder: a .py "
                   "script runs with the worker's Python, anything else as a program (a "
                   "script with a #! line, a binary)")
    p.add_argument(
        "--arg",
        dest="args",
        action="append",
        default=[],
        metavar="A",
        help="argument for the script (repeat for several); or give them all after --: "
        "jobqueue submit run.py --cpus 2 -- -n 5 --fast",
    )
    p.add_argument("--cpus", type=arg_types.positive_int, metavar="N", help="CPUs for the job")
    p.add_argument(
        "--walltime",
        type=arg_types.duration,
        metavar="S",
        help="time limit in seconds (or 90m, 2h, 1d, HH:MM:SS)",
    )
    p.add_argument("--memory", type=arg_types.mebibytes, metavar="MiB",
                   help="memory limit in MiB (or 512M, 4G, 1T)")
    p.add_argument("--output-limit", type=arg_types.mebibytes, metavar="MiB",
                   help="most MiB of results kept (or 512M, 4G, 1T)")
    p.add_argument("--name", metavar="N", help="job name (default: the file or folder name)")
    p.add_argument(
        "--idempotency-key",
        metavar="K",
        help="submit at most one job for K, however often this is run (default: a new key)",
    )
    p.add_argument("--array", metavar="SPEC",
                   help="submit a job array: one task per index, as Slurm's --array: 0-99, "
                   "1,3,7-9, 0-20:5; %%N runs at most N at once (0-99%%10). Each task sees "
                   "JOBQUEUE_ARRAY_TASK_ID")
    p.add_argument("--args-from", metavar="FILE", type=Path,
                   help="one task per line of FILE, the line's shell-split words as its "
                   "arguments (after those of --arg; blank and # lines are skipped); without "
                   "--array the tasks are 0..n-1")
    p.add_argument("--after", metavar="ID[,ID]", action="append", default=[],
                   help="start only after these jobs (or every task of these arrays) "
                   "succeeded; cancelled if one ends otherwise. As Slurm's --dependency, "
                   "afterany:ID[:ID] (however they end) and afternotok:ID[:ID] (if they do "
                   "not succeed) too (repeatable)")
    p.add_argument("--env", dest="environment", metavar="NAME",
                   help="the software environment to run in, one the service offers "
                   "(`jobqueue workers` lists them; default: the service's)")
    p.add_argument("--export", metavar="NAME[=VALUE]", action="append", default=[],
                   type=arg_types.export,
                   help="an environment variable for the job; NAME alone passes on this "
                   "shell's value (repeatable)")
    p.add_argument("--inputs-from", metavar="ID[,ID]", action="append", default=[],
                   help="these jobs' results (an array: each task's) among the inputs, in a "
                   "folder ID/ (ARRAY_ID/INDEX/); waits for them to succeed unless --after "
                   "gives another condition (repeatable)")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish")
    p.add_argument("--timeout", type=arg_types.duration, metavar="S",
                   help="with --wait: give up after S")

    p = command("list", cmd_list, "list your jobs, newest first")
    p.add_argument("--state", choices=STATES, help="only jobs in this state")
    p.add_argument("--array", metavar="ID", help="only the tasks of this job array")
    p.add_argument("--name", metavar="TEXT", help="only jobs whose name holds TEXT (any case)")
    p.add_argument(
        "--all", action="store_true", help=f"all jobs (default: the {LIST_DEFAULT_LIMIT} newest)"
    )

    p = command("status", cmd_status,
                "show jobs or job arrays (an ID may be a unique start of one)")
    p.add_argument("ids", nargs="+", metavar="ID")

    p = command("wait", cmd_wait, "wait for jobs (or every task of arrays) to finish; exit 0 "
                "only if all succeeded")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--timeout", type=arg_types.duration, metavar="S",
                   help="give up after S seconds")

    p = command("log", cmd_log, "print a job's whole stdout (to stdout) and stderr (to stderr)")
    p.add_argument("id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow the job while it runs: print its stdout as it grows, until "
                   "the job ends (exit status as wait's)")
    p.add_argument("--stderr", action="store_true",
                   help="with -f: follow stderr instead (to stderr)")

    p = command("files", cmd_files, "list a job's files")
    p.add_argument("id", metavar="ID")

    p = command("fetch", cmd_fetch, "download a finished job's results and extract them (an "
                "array's: a sub-folder per task index)")
    p.add_argument("id", metavar="ID")
    p.add_argument("-o", "--output", metavar="DIR", help="destination folder (default: ./job-<ID>)")
    p.add_argument("--partial", action="store_true",
                   help="fetch a job that has not finished: what it has so far (its inputs)")
    p.add_argument("--no-inputs", dest="inputs", action="store_false",
                   help="only what the job wrote, not the files it was given")
    p.add_argument(
        "--file",
        dest="paths",
        action="append",
        metavar="PATH",
        help="download only this file of the job (repeatable)",
    )

    p = command("cancel", cmd_cancel, "cancel queued or running jobs (an array's ID: all its "
                "tasks), by ID or by --state/--name")
    _selection(p, ("queued", "running"))

    p = command("rerun", cmd_rerun, "run an array's failed, timed-out and lost tasks again, "
                "as a new array: each with its index, arguments and inputs")
    p.add_argument("array", metavar="ARRAY_ID", help="the array (a unique start of its ID)")
    p.add_argument("--state", dest="states", choices=sorted(TERMINAL_STATES), action="append",
                   help="rerun the tasks that ended so instead (repeatable)")

    p = command("hold", cmd_hold, "keep queued jobs from starting until released (as "
                "scontrol hold), by ID or by --name")
    _selection(p, ("queued",))
    p = command("release", cmd_release, "let held jobs start, by ID or by --name")
    _selection(p, ("queued",))
    p = command("requeue", cmd_requeue, "put running jobs back in the queue (as scontrol "
                "requeue): each stops and starts again, by ID or by --name")
    _selection(p, ("running",))
    p.add_argument("--hold", action="store_true", help="and hold them until released")

    p = command("delete", cmd_delete, "delete finished jobs and their files, by ID or filter")
    _selection(p, tuple(sorted(TERMINAL_STATES)))

    p = command("login", cmd_login, "check a token and keep it (0600) in the client config")
    p.add_argument("url", metavar="URL", help="the controller, e.g. https://jobs.example.org")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA to trust for it (default: the system's)")
    p.add_argument("--config", metavar="FILE",
                   help="where to write (default: $JOBQUEUE_CLIENT_CONFIG or "
                   "~/.config/jobqueue/client.toml)")

    cluster_commands.add_commands(command)
    token_commands.add_commands(command)
    p = command("completion", cmd_completion,
                "print the shell completion script for bash, zsh or fish")
    p.add_argument("shell", choices=completion.SHELLS)

    sub.add_parser("dev", help="local development helpers (see 'jobqueue dev --help')")
    return parser


def _selection(p: argparse.ArgumentParser, states: tuple[str, ...]) -> None:
    p.add_argument("ids", nargs="*", metavar="ID", help="jobs (a unique start of an ID will do)")
    p.add_argument("--state", choices=states, action="append",
                   help=f"every job of yours in this state (repeatable; {', '.join(states)})")
    p.add_argument("--name", metavar="GLOB", help="every job of yours whose name matches, "
                   "e.g. 'sweep-*' (with --state, both must match)")
    p.set_defaults(selectable=states)


# -- commands ---------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    array_args = _args_from(args.args_from) if args.args_from else None
    after = [entry for text in args.after for entry in arg_types.dependency_entries(text)]
    inputs_from = [i.strip() for text in args.inputs_from for i in text.split(",") if i.strip()]
    client = _client()
    job = client.submit_path(
        args.path,
        entry=args.entry,
        args=args.args + args.script_args,
        cpus=args.cpus,
        walltime=args.walltime,
        memory=args.memory,
        output_limit=args.output_limit,
        name=args.name,
        idempotency_key=args.idempotency_key,
        array=args.array,
        array_args=array_args,
        after=after,
        inputs_from=inputs_from,
        env=dict(args.export),
        environment=args.environment,
    )
    # An array's answer is {"array": summary, "jobs": ids}: its id stands for all its tasks.
    ident = job["array"]["id"] if "jobs" in job else job["id"]
    if not args.wait:
        if args.json:
            display.print_json(job)
        else:
            print(ident)
        return EXIT_OK
    if not args.json:
        print(ident, flush=True)
    if "jobs" in job:
        return progress.wait_for_array(client, ident, args.timeout, args.json)
    return progress.wait_and_report(client, ident, args.timeout, args.json)


def _args_from(path: Path) -> list[list[str]]:
    """Each task's arguments: the shell-split words of each line that has any."""
    tasks = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ClientError(f"{path}, line {number}: {exc}") from None
        if words:
            tasks.append(words)
    if not tasks:
        raise ClientError(f"{path} has no line with arguments: no task to submit")
    return tasks


def _job_or_array(client: Client, ident: str) -> tuple[str, dict[str, Any]]:
    """("job", the job) or, if no job has this ID, ("array", the array's summary)."""
    try:
        return "job", client.get(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
        # Beyond "no such job": why (too short, not a task index, no such task).
        why = exc.message.partition(": ")[2]
    try:
        return "array", client.array(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise ClientError(f"no job or array {ident}" + (f" ({why})" if why else "")) from None


def cmd_list(args: argparse.Namespace) -> int:
    limit = None if args.all else LIST_DEFAULT_LIMIT
    jobs = _client().list(state=args.state, limit=limit, array=args.array, name=args.name)
    if args.array:
        jobs.sort(key=lambda job: (job.get("array") or {}).get("index", 0))
    if args.json:
        display.print_json(jobs)
        return EXIT_OK
    rows = [
        (
            str(job.get("id", "")),
            str(job.get("name") or "") + display.task_suffix(job),
            str(job.get("state", "")),
            str(job.get("cpus", "")),
            display.local_time(job.get("created_at")),
            display.runtime(job),
            str(job.get("worker") or ""),
            display.reason(job),
        )
        for job in jobs
    ]
    display.print_table(("ID", "NAME", "STATE", "CPUS", "CREATED", "RUNTIME", "WORKER", "REASON"),
                 rows)
    if not args.all and len(jobs) == LIST_DEFAULT_LIMIT:
        print(f"(the {LIST_DEFAULT_LIMIT} newest jobs; --all shows every job)", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    client = _client()
    found = [_job_or_array(client, ident) for ident in args.ids]
    if args.json:
        shown = [value for _kind, value in found]
        display.print_json(shown[0] if len(shown) == 1 else shown)
        return EXIT_OK
    for n, (kind, value) in enumerate(found):
        if n:
            print()
        if kind == "array":
            display.print_array(value)
        else:
            display.print_status(value)
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    client = _client()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    codes = []
    for ident in args.ids:
        # To a tenth of a second: what is left of `--timeout 5` is said as 5, not 4.99999.
        left = None if deadline is None else max(1.0, round(deadline - time.monotonic(), 1))
        try:
            codes.append(progress.wait_and_report(client, ident, left, args.json))
        except ApiError as exc:  # no such job: the ID may be an array's
            if exc.status != 404:
                raise
            _job_or_array(client, ident)  # no such array either: say so
            codes.append(progress.wait_for_array(client, ident, left, args.json))
    return max(codes)


def cmd_log(args: argparse.Namespace) -> int:
    client = _client()
    if args.stderr and not args.follow:
        return _fail("log: --stderr goes with -f (without -f both logs are printed)",
                     EXIT_USAGE)
    if args.follow and args.json:
        return _fail("log: -f prints the log as it grows, not JSON", EXIT_USAGE)
    if args.follow:
        return _follow(client, args)
    if args.json:  # the end of each log, as the controller shows it
        display.print_json(client.log(args.id))
        return EXIT_OK
    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        stream.flush()
        client.write_log(args.id, name, stream.buffer)
        stream.buffer.flush()
    return EXIT_OK


def _follow(client: Client, args: argparse.Namespace) -> int:
    """`log -f`: one log as it grows, then the job's final state (on stderr), as `wait`."""
    name, stream = ("stderr", sys.stderr) if args.stderr else ("stdout", sys.stdout)
    stream.flush()
    following = client.follow_log(args.id, name)
    while True:
        try:
            chunk = next(following)
        except StopIteration as end:
            job = end.value
            break
        stream.buffer.write(chunk)
        stream.buffer.flush()
    print(f"job {job.get('id')} {job.get('state')}", file=sys.stderr)
    return job_exit_status(job)


def cmd_files(args: argparse.Namespace) -> int:
    files = _client().files(args.id)
    if args.json:
        display.print_json(files)
        return EXIT_OK
    display.print_table(("SIZE", "PATH"),
                        [(display.size(f.get("size")), str(f.get("path", ""))) for f in files])
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    client = _client()
    kind, found = _job_or_array(client, args.id)
    if kind == "array":
        return _fetch_array(client, args, found)
    state = found.get("state")
    if state not in TERMINAL_STATES and not args.partial:
        return _fail(f"job {args.id} is {state}: its results are not in yet (wait for it, or "
                     "fetch --partial for what there is)")
    dest = Path(args.output or f"job-{args.id}")
    saved = _fetch_one(client, args, args.id, dest)
    if args.json:
        display.print_json({"id": args.id, "files": saved} if args.paths else
                    {"id": args.id, "directory": str(dest)})
    else:
        print("\n".join(saved) if args.paths else dest)
    return EXIT_OK


def _fetch_array(client: Client, args: argparse.Namespace, array: dict[str, Any]) -> int:
    """Each task's results into `<dest>/<task index>/`."""
    tasks = client.array_tasks(array["id"])
    unfinished = [t for t in tasks if t.get("state") not in TERMINAL_STATES]
    if unfinished and not args.partial:
        return _fail(f"array {array['id']}: {len(unfinished)} of its {len(tasks)} tasks have "
                     "not finished (wait for it, or fetch --partial for what there is)")
    dest = Path(args.output or f"array-{array['id']}")
    folders = {}
    for task in tasks:
        folder = dest / str(task["array"]["index"])
        _fetch_one(client, args, task["id"], folder)
        folders[str(task["array"]["index"])] = str(folder)
    if args.json:
        display.print_json({"array": array["id"], "directories": folders})
    else:
        print(dest)
    return EXIT_OK


def _fetch_one(client: Client, args: argparse.Namespace, job_id: str, dest: Path) -> list[str]:
    """The job's results (or only --file's) into `dest`; the files saved, for --file."""
    if args.paths:
        made = not dest.exists()
        saved = []
        try:
            for path in args.paths:
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                saved.append(str(client.download_file(job_id, path, target)))
        except BaseException:
            if made:  # nothing half-fetched left behind
                shutil.rmtree(dest, ignore_errors=True)
            raise
        return saved
    client.download_results(job_id, dest, inputs=args.inputs)
    return []


def _selected(client: Client, args: argparse.Namespace) -> list[str]:
    """The IDs given, plus those of the caller's jobs that match --state and --name."""
    if not args.ids and not args.state and not args.name:
        raise ClientError("name the jobs: IDs, --state or --name")
    ids = list(args.ids)
    if args.state or args.name:
        states = set(args.state or args.selectable)
        ids += [job["id"] for job in client.iter_jobs()
                if job.get("state") in states
                and (args.name is None or fnmatch.fnmatchcase(str(job.get("name")), args.name))]
    return list(dict.fromkeys(ids))


def _each(args: argparse.Namespace, act: Callable[[Client, str], dict[str, Any]]) -> int:
    """`act` on every selected job; go on after a failure, exit 1 if any failed."""
    client = _client()
    code, done = EXIT_OK, []
    for job_id in _selected(client, args):
        try:
            outcome = act(client, job_id)
        except ClientError as exc:
            code = _fail(f"job {job_id}: {exc}")
            continue
        done.append(outcome)
        if not args.json:
            print(outcome["said"])
    if args.json:
        display.print_json([{k: v for k, v in o.items() if k != "said"} for o in done])
    return code


def cmd_cancel(args: argparse.Namespace) -> int:
    def cancel(client: Client, job_id: str) -> dict[str, Any]:
        try:
            job = client.cancel(job_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            try:
                array = client.cancel_array(job_id)
            except ApiError as again:
                if again.status != 404:
                    raise
                raise exc from None
            counts = array.get("counts", {})
            said = (f"array {array['id']}: {counts.get('cancelled', 0)} task(s) cancelled, "
                    f"{counts.get('running', 0)} running asked to stop")
            return array | {"said": said}
        said = (f"job {job['id']} cancelled" if job.get("state") == "cancelled" else
                f"job {job['id']} is {job.get('state')}; cancellation requested")
        return job | {"said": said}

    return _each(args, cancel)


def cmd_rerun(args: argparse.Namespace) -> int:
    made = _client().rerun_array(args.array, args.states)
    if args.json:
        display.print_json(made)
    else:
        array = made["array"]
        print(array["id"])
        print(f"array {array['id']}: {array['size']} task(s) of array {array['rerun_of']} "
              "again", file=sys.stderr)
    return EXIT_OK


def cmd_hold(args: argparse.Namespace) -> int:
    return _each(args, lambda client, job_id: (job := client.hold(job_id)) | {
        "said": f"job {job['id']} held"})


def cmd_release(args: argparse.Namespace) -> int:
    return _each(args, lambda client, job_id: (job := client.release(job_id)) | {
        "said": f"job {job['id']} released"})


def cmd_requeue(args: argparse.Namespace) -> int:
    held = " and held" if args.hold else ""
    return _each(args, lambda client, job_id: (job := client.requeue(job_id, args.hold)) | {
        "said": f"job {job['id']} requeued{held}"})


def cmd_delete(args: argparse.Namespace) -> int:
    def delete(client: Client, job_id: str) -> dict[str, Any]:
        client.delete(job_id)
        return {"id": job_id, "deleted": True, "said": f"job {job_id} deleted"}

    return _each(args, delete)


def cmd_login(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        token = getpass.getpass(f"token for {args.url}: ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        return _fail("no token given (type it, or pipe it in)")
    ca_bundle = str(Path(args.ca_bundle).resolve()) if args.ca_bundle else None
    with Client(args.url, token, ca_bundle) as client:
        me = client.me()  # a wrong URL, CA or token fails here, before anything is written
    path = Path(args.config) if args.config else config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_config(path, args.url, token, ca_bundle)
    if args.json:
        display.print_json(me | {"config": str(path)})
    else:
        expires = (me.get("token") or {}).get("expires_at")
        print(f"logged in to {args.url} as {me.get('name')} ({me.get('role')}); "
              f"token kept in {path}; "
              + (f"it expires {display.local_time(expires)}" if expires else
                 "it does not expire"))
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    spec = completion.describe(build_parser(), passthrough=("submit",))
    sys.stdout.write(completion.script(spec, args.shell))
    return EXIT_OK


# -- helpers ----------------------------------------------------------------------------


def _run_dev(rest: list[str]) -> int:
    # Imported here, not at the top: dev runs a controller, whose dependencies a
    # client-only install does not have.
    try:
        from jobqueue.dev import main as dev_main
    except ModuleNotFoundError as exc:
        if server_missing(exc):
            return _fail(needs_server("jobqueue dev"))
        if exc.name not in ("jobqueue.dev", "jobqueue"):
            raise
        return _fail("the 'dev' command is not available in this installation")
    result = dev_main(rest)
    return int(result or 0)


def _client() -> Client:
    return Client.from_env()


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code




if __name__ == "__main__":
    sys.exit(main())
