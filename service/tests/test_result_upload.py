"""The worker's result upload streams the files from disk: a job's results may be as
large as its output limit, and the worker (or a Slurm job's share of a node) must not
hold them in memory."""

from __future__ import annotations

import json
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from werkzeug.formparser import parse_form_data

from jobqueue.worker.controller_api import ControllerApi

RESULTS_BYTES = 64 << 20


def size(upload) -> int:
    return sum(len(chunk) for chunk in iter(lambda: upload.read(1 << 20), b""))


class FormReader(BaseHTTPRequestHandler):
    """Parses each POST as the controller's form parser does and keeps what it got."""

    received: dict = {}

    def do_POST(self):
        environ = {"REQUEST_METHOD": "POST", "wsgi.input": self.rfile,
                   "CONTENT_TYPE": self.headers["Content-Type"],
                   "CONTENT_LENGTH": self.headers["Content-Length"]}
        _, form, files = parse_form_data(environ)
        FormReader.received = {"status": json.loads(form["status"]),
                               "sizes": {name: size(f) for name, f in files.items()},
                               "chunked": self.headers.get("Transfer-Encoding")}
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def test_results_are_streamed_not_loaded(tmp_path):
    results = tmp_path / "results.tar.gz"
    with open(results, "wb") as fh:
        fh.truncate(RESULTS_BYTES)
    (tmp_path / "stdout").write_bytes(b"out\n")
    (tmp_path / "stderr").write_bytes(b"")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FormReader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = ControllerApi(f"http://127.0.0.1:{server.server_port}", "token")
        tracemalloc.start()
        api.upload_result("j1", "lease", "succeeded", 0, "done", results,
                          tmp_path / "stdout", tmp_path / "stderr")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        server.shutdown()
    received = FormReader.received
    assert received["status"]["lease"] == "lease" and received["status"]["state"] == "succeeded"
    assert received["sizes"] == {"stdout": 4, "stderr": 0, "results": RESULTS_BYTES}
    assert received["chunked"] is None  # a Content-Length, which every WSGI server takes
    # The server's parse is traced too (it spools files to disk past 500 KiB).
    assert peak < RESULTS_BYTES // 8, f"the upload held {peak} bytes at its peak"
