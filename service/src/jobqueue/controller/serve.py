"""Serve the controller without Apache, for development, demos and tests:
`python -m jobqueue.controller.serve --port 8080`. Production runs it under mod_wsgi."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from werkzeug.serving import make_server

from jobqueue.config import ConfigError
from jobqueue.controller import settings as settings_module
from jobqueue.controller.app import create_app
from jobqueue.controller.db import make_engine, migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobqueue.controller.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", help="settings file (default: $JOBQUEUE_CONFIG)")
    parser.add_argument("--migrate", action="store_true", help="upgrade the schema first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        settings = settings_module.load(args.config)
    except ConfigError as exc:
        print(f"jobqueue: error: {exc}", file=sys.stderr)
        return 2
    if args.migrate:
        engine = make_engine(settings.database_url)
        migrate(engine)
        engine.dispose()
    server = make_server(args.host, args.port, create_app(settings), threaded=True)
    # shutdown() waits for serve_forever() to return, so it cannot run in this thread.
    signal.signal(signal.SIGTERM,
                  lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"controller listening on http://{args.host}:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
