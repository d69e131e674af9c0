"""`python -m jobqueue.check_config controller|worker FILE`: the file read as the
service reads it at start-up (unknown keys, values of the wrong kind, bad values, the
queue backend's own table), without starting anything. Exit 0 if the service would
accept it, else 1 with one line naming what is wrong. The roles' `validate:` for
controller.toml and worker.toml, so a deploy fails before it writes a bad file."""

from __future__ import annotations

import sys
import tomllib

from jobqueue.config import ConfigError, load_settings


def check(kind: str, path: str) -> None:
    """Raise ConfigError (or the TOML parser's error) if the service would refuse it."""
    with open(path, "rb") as fh:  # the loader takes a missing file for an empty one
        tomllib.load(fh)
    if kind == "controller":
        from jobqueue.controller.settings import ENV_PREFIX, ControllerSettings
        from jobqueue.queue import backend_class

        settings = load_settings(ControllerSettings, path, ENV_PREFIX, environ={})
        backend_class(settings.queue_backend, settings)
    elif kind == "worker":
        from jobqueue.worker.settings import ENV_PREFIX, WorkerSettings

        load_settings(WorkerSettings, path, ENV_PREFIX, environ={})
    else:
        raise ValueError(f"unknown kind of file {kind!r} (controller or worker)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m jobqueue.check_config controller|worker FILE", file=sys.stderr)
        return 2
    kind, path = args
    try:
        check(kind, path)
    except (ConfigError, tomllib.TOMLDecodeError, OSError, ValueError) as exc:
        message = str(exc)
        print(message if path in message else f"{path}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
