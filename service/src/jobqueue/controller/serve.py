"""Serve the controller without Apache, for development, demos and tests:
`python -m jobqueue.controller.serve --port 8080`. Production runs it under mod_wsgi.

SIGTERM or SIGINT stops it promptly: it stops accepting, answers waiting claims at
once (204), gives requests in flight a few seconds to finish, then exits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from werkzeug.serving import make_server
from werkzeug.wsgi import ClosingIterator

from jobqueue.config import load_or_report
from jobqueue.controller import settings as settings_module
from jobqueue.controller.app import create_app
from jobqueue.controller.db import make_engine, migrate


DRAIN_SECONDS = 10.0


class InFlight:
    """WSGI middleware that counts requests being answered, so a stop can wait for them."""

    def __init__(self, app) -> None:
        self.app = app
        self.count = 0
        self._cond = threading.Condition()

    def _leave(self) -> None:
        with self._cond:
            self.count -= 1
            self._cond.notify_all()

    def __call__(self, environ, start_response):
        with self._cond:
            self.count += 1
        try:
            return ClosingIterator(self.app(environ, start_response), self._leave)
        except BaseException:
            self._leave()
            raise

    def drain(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count == 0, timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobqueue.controller.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", help="settings file (default: $JOBQUEUE_CONFIG)")
    parser.add_argument("--migrate", action="store_true", help="upgrade the schema first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    settings = load_or_report(settings_module.load, args.config, "jobqueue")
    if settings is None:
        return 2
    if args.migrate:
        engine = make_engine(settings.database_url)
        migrate(engine)
        engine.dispose()
    app = create_app(settings)
    requests = InFlight(app)
    server = make_server(args.host, args.port, requests, threaded=True)
    stopping = threading.Event()

    def stop(*_args) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever() to return: not from this thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"controller listening on http://{args.host}:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.socket.close()  # refuse new connections at once: clients retry elsewhere or later
    app.extensions["jobqueue"].backend.close()  # waiting claims answer 204 now
    if not requests.drain(DRAIN_SECONDS):
        logging.warning("stopping with %d request(s) unanswered", requests.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
