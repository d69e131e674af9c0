"""`jobqueue-admin`: schema migrations, users and tokens, straight on the database.

Output is made for scripts (the deploy's configure step): JSON or a bare token on
stdout, one clear line on stderr and a non-zero exit on error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from jobqueue.config import ConfigError
from jobqueue.controller import settings as settings_module
from jobqueue.controller.tokens import (
    describe,
    digest,
    get_or_create_user,
    issue_token,
    user_for_token,
    user_named,
)
from jobqueue.controller.db import make_engine, make_session_factory, migrate
from jobqueue.models import ROLES, Token, User, utcnow


class AdminError(Exception):
    pass


def _user(session, name: str) -> User:
    user = user_named(session, name)
    if user is None:
        raise AdminError(f"no user named {name!r}")
    return user


def cmd_migrate(args, engine, sessions) -> int:
    before, after = migrate(engine)
    print(json.dumps({"changed": before != after, "from": before, "to": after}))
    return 0


def _ensure_user(session, name: str, role: str) -> bool:
    """Create the user unless it exists with that role; True when created."""
    user, created = get_or_create_user(session, name, role)
    if not created and user.role != role:
        raise AdminError(f"user {name!r} exists with role {user.role!r}, not {role!r}")
    return created


def cmd_create_user(args, engine, sessions) -> int:
    with sessions.begin() as session:
        created = _ensure_user(session, args.name, args.role)
    print(json.dumps({"user": args.name, "role": args.role, "created": created}))
    return 0


def _name_and_role(text: str) -> tuple[str, str]:
    name, sep, role = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:ROLE")
    if role not in ROLES:
        raise argparse.ArgumentTypeError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return name, role


def cmd_create_users(args, engine, sessions) -> int:
    """Several users in one run and one transaction: the deploy's users step
    costs one start of this program instead of one per user."""
    with sessions.begin() as session:
        created = [name for name, role in args.users if _ensure_user(session, name, role)]
    print(json.dumps({"users": [name for name, _ in args.users], "created": created}))
    return 0


def cmd_issue_token(args, engine, sessions) -> int:
    """A token for each user named, one a line in their order, in one transaction."""
    with sessions.begin() as session:
        tokens = []
        for name in args.names:
            if args.create is not None:  # one run instead of create-user, then issue-token
                _ensure_user(session, name, args.create)
            tokens.append(issue_token(session, _user(session, name), args.label, args.days))
    print("\n".join(tokens))
    return 0


def cmd_check_token(args, engine, sessions) -> int:
    token = sys.stdin.readline().strip()
    with sessions() as session:
        user = user_for_token(session, token) if token else None
        valid = user is not None and user.name == args.name
    print(json.dumps({"user": args.name, "valid": valid}))
    return 0 if valid else 1


def cmd_revoke_tokens(args, engine, sessions) -> int:
    with sessions.begin() as session:
        user = _user(session, args.name)
        live = select(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))
        if args.keep_stdin:  # the token a rotation just handed out: it must stay usable
            kept = sys.stdin.readline().strip()
            if user_for_token(session, kept) is not user:
                raise AdminError(f"the token on stdin is not a live token of {args.name}: "
                                 "nothing revoked")
            live = live.where(Token.digest != digest(kept))
        tokens = session.scalars(live).all()
        for token in tokens:
            token.revoked_at = utcnow()
    print(json.dumps({"user": args.name, "revoked": len(tokens)}))
    return 0


def cmd_list_tokens(args, engine, sessions) -> int:
    with sessions() as session:
        user = _user(session, args.name)
        rows = [describe(t) for t in sorted(user.tokens, key=lambda t: t.id)]
    print(json.dumps(rows, indent=2))
    return 0


def cmd_revoke_token(args, engine, sessions) -> int:
    with sessions.begin() as session:
        token = session.get(Token, args.id)
        if token is None:
            raise AdminError(f"no token {args.id} (list-tokens NAME shows a user's)")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        print(json.dumps({"user": token.user.name, "revoked": args.id}))
    return 0


def cmd_list_users(args, engine, sessions) -> int:
    with sessions() as session:
        users = session.scalars(select(User).order_by(User.name)).all()
        now = utcnow()
        rows = [{"user": u.name, "role": u.role,
                 "tokens": sum(t.revoked_at is None and (t.expires_at is None or t.expires_at > now)
                               for t in u.tokens)} for u in users]
    print(json.dumps(rows, indent=2))
    return 0


def _paths(settings) -> dict:
    return {"user": getpass.getuser(), "data_dir": settings.data_dir,
            "database": make_url(settings.database_url).get_backend_name()}


def cmd_paths(args, engine, sessions) -> int:
    print(json.dumps(_paths(args.settings)))
    return 0


# The commands below import what only they use: every deploy step that issues a token
# starts this program, and these modules bring Flask and the Prometheus client (seconds
# of start-up on a slow host).


def cmd_status(args, engine, sessions) -> int:
    from jobqueue.controller import metrics, workers

    with sessions() as session:
        print(json.dumps(_paths(args.settings) | {
            "jobs": metrics.jobs_by_state(session), "workers": workers.overview(session)},
            indent=2))
    return 0


def cmd_workers(args, engine, sessions) -> int:
    from jobqueue.controller import workers

    with sessions() as session:
        print(json.dumps(workers.overview(session), indent=2))
    return 0


def cmd_drain(args, engine, sessions) -> int:
    from jobqueue.controller import workers

    with sessions.begin() as session:
        if workers.set_drained(session, args.name, args.command == "drain") is None:
            raise AdminError(f"no worker named {args.name!r} has claimed a job yet")
    if args.command == "resume" and args.settings.waiting_room_dir:
        from jobqueue.controller.wait_tickets import RoomClient

        RoomClient(args.settings.waiting_room_dir).wake_worker(args.name)
    # Waiting here, in one process, spares a caller who polls a Python start per look
    # (seconds on a small controller).
    deadline = time.monotonic() + args.wait
    while True:
        with sessions() as session:
            found = workers.overview(session, args.name)[0]
        if not found["running"] or time.monotonic() >= deadline:
            break
        time.sleep(1)
    print(json.dumps(found))
    return 0


def cmd_backup(args, engine, sessions) -> int:
    from jobqueue.controller import backup

    dest = Path(args.dest) if args.dest else Path(args.settings.data_dir) / "backups" / \
        utcnow().strftime("%Y%m%dT%H%M%SZ")
    with sessions() as session:
        try:
            made = backup.backup(args.settings.database_url, Path(args.settings.data_dir),
                                 session, dest)
        except backup.BackupError as exc:
            raise AdminError(str(exc)) from None
    print(json.dumps({"backup": str(dest)} | made))
    return 0


def cmd_restore(args, engine, sessions) -> int:
    from jobqueue.controller import backup

    engine.dispose()  # no connection of ours on the database it replaces
    try:
        restored = backup.restore(args.settings.database_url, Path(args.settings.data_dir),
                                  Path(args.source))
    except backup.BackupError as exc:
        raise AdminError(str(exc)) from None
    print(json.dumps({"restored": args.source} | restored))
    return 0


def cmd_scheduler(args, engine, sessions) -> int:
    from jobqueue.controller import scheduler

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return scheduler.run(args.settings, engine, args.interval)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobqueue-admin", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="controller settings file (default: $JOBQUEUE_CONFIG "
                   f"or {settings_module.DEFAULT_PATH})")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate)
    s = sub.add_parser("create-user", help="create a user (an existing one is left as is)")
    s.add_argument("name")
    s.add_argument("--role", choices=ROLES, default="user")
    s.set_defaults(func=cmd_create_user)
    s = sub.add_parser("create-users", help="create several users (existing ones are left as is)")
    s.add_argument("users", nargs="+", type=_name_and_role, metavar="NAME:ROLE")
    s.set_defaults(func=cmd_create_users)
    s = sub.add_parser("issue-token", help="print a new token for a user (for each user "
                       "named, one a line), once")
    s.add_argument("names", nargs="+", metavar="NAME")
    s.add_argument("--label", default="")
    s.add_argument("--days", type=int, metavar="N",
                   help="the token expires after N days (default: when revoked)")
    s.add_argument("--create", choices=ROLES, metavar="ROLE",
                   help="create each user with this role first, unless it exists with it")
    s.set_defaults(func=cmd_issue_token)
    s = sub.add_parser("check-token", help="exit 0 if the token on stdin is a live token of NAME")
    s.add_argument("name")
    s.set_defaults(func=cmd_check_token)
    s = sub.add_parser("revoke-tokens", help="revoke all of a user's tokens")
    s.add_argument("name")
    s.add_argument("--keep-stdin", action="store_true",
                   help="all but the token on stdin (a live one of NAME), for a rotation")
    s.set_defaults(func=cmd_revoke_tokens)
    s = sub.add_parser("list-tokens", help="a user's tokens: id, label, created, expires, "
                       "revoked")
    s.add_argument("name")
    s.set_defaults(func=cmd_list_tokens)
    s = sub.add_parser("revoke-token", help="revoke one token, by the id list-tokens shows")
    s.add_argument("id", type=int)
    s.set_defaults(func=cmd_revoke_token)
    sub.add_parser("list-users", help="users, roles and live token counts").set_defaults(
        func=cmd_list_users)
    sub.add_parser("paths", help="who runs the controller, its data directory and kind of "
                   "database (needs no schema)").set_defaults(func=cmd_paths)
    sub.add_parser("status", help="this controller: its user, data directory and database, "
                   "jobs per state, workers").set_defaults(func=cmd_status)
    sub.add_parser("workers", help="workers as their last claims described them: CPUs, "
                   "jobs, memory, job slots set aside, when seen; drained; jobs running"
                   ).set_defaults(func=cmd_workers)
    for name, what in (("drain", "take no new job (running ones go on)"),
                       ("resume", "take jobs again after a drain")):
        s = sub.add_parser(name, help=f"a worker (dispatcher queue): {what}")
        s.add_argument("name", help="the worker's name (its token's user)")
        s.set_defaults(func=cmd_drain, wait=0.0)
        if name == "drain":
            s.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="then wait up to this long for its running jobs to end "
                                "(the printed `running` counts those that did not)")
    s = sub.add_parser("backup", help="the database and the job storage, with a manifest of "
                       "checksums, into a new directory")
    s.add_argument("dest", nargs="?", help="default: <data_dir>/backups/<UTC time>")
    s.set_defaults(func=cmd_backup)
    s = sub.add_parser("restore", help="replace the database and the job storage with a "
                       "backup (stop the service first)")
    s.add_argument("source", help="a directory `backup` made")
    s.set_defaults(func=cmd_restore)
    s = sub.add_parser("scheduler", help="run the batch scheduler backend's reconcile loop "
                       "(queue_backend = \"slurm\")")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    s.set_defaults(func=cmd_scheduler)
    return p


def _settings(config: str | None) -> settings_module.ControllerSettings:
    """The controller's settings, if there are any: with none, the defaults would make a
    new, empty database under /var/lib, which is never what the caller meant."""
    path = config or os.environ.get("JOBQUEUE_CONFIG", settings_module.DEFAULT_PATH)
    given = [f"JOBQUEUE_{key}" for key in ("DATABASE_URL", "DATA_DIR")
             if f"JOBQUEUE_{key}" in os.environ]
    if not Path(path).is_file() and not given:
        raise AdminError(f"no settings: {path} does not exist and neither JOBQUEUE_DATABASE_URL "
                         "nor JOBQUEUE_DATA_DIR is set (give --config FILE)")
    return settings_module.load(config)


def _require_schema(url: str) -> None:
    """Commands other than migrate need the database to exist with its schema."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).is_file():
        raise AdminError(f"no database at {parsed.database}: run `jobqueue-admin migrate` first")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = _settings(args.config)
        needs_schema = args.func not in (cmd_migrate, cmd_paths, cmd_restore)
        if needs_schema:
            _require_schema(settings.database_url)
        engine = make_engine(settings.database_url)
        if needs_schema and not inspect(engine).has_table("users"):
            raise AdminError("the database has no schema yet: run `jobqueue-admin migrate` first")
        args.settings = settings
        code = args.func(args, engine, make_session_factory(engine))
        engine.dispose()
        return code
    except (AdminError, ConfigError, ValueError) as exc:
        print(f"jobqueue-admin: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # database unreachable, permissions, ...
        print(f"jobqueue-admin: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
