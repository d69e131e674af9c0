"""What the `server` extra brings, and a one-line message where it is missing.

A plain `pip install jobqueue` is the client, the CLI, the mapper and the worker daemon
(they need only requests). The controller, `jobqueue dev` and `jobqueue-admin` import
the server's dependencies; without them they say how to install them, not a traceback.
"""

from __future__ import annotations

import sys

# Top-level modules of the `server` extra in pyproject.toml (werkzeug comes with flask).
SERVER_MODULES = frozenset(
    {"flask", "werkzeug", "sqlalchemy", "alembic", "psycopg", "prometheus_client"}
)
SERVER_INSTALL = "pip install 'jobqueue[server]'"


def server_missing(exc: ImportError) -> bool:
    """Whether `exc` is a dependency of the server extra that is not installed."""
    name = getattr(exc, "name", None) or ""
    return isinstance(exc, ModuleNotFoundError) and name.partition(".")[0] in SERVER_MODULES


def needs_server(command: str) -> str:
    return f"{command} needs the server: {SERVER_INSTALL}"


def admin_main() -> int:
    """`jobqueue-admin`. Its module imports SQLAlchemy at the top, so it is imported here,
    where a client-only install can still be told what it lacks."""
    try:
        from jobqueue.controller.admin import main
    except ModuleNotFoundError as exc:
        if not server_missing(exc):
            raise
        print(f"jobqueue-admin: error: {needs_server('jobqueue-admin')}", file=sys.stderr)
        return 1
    return main()
