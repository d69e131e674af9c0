"""The client's own logic: configuration, packing, upload encoding, safe extraction and the CLI.

Talking to a real controller is covered by the end-to-end tests.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tarfile
import threading
import types
from pathlib import Path
from typing import Any

import pytest
import requests

from jobqueue.client import arg_types, cli, display, exit_status
from jobqueue.client.api import Client, _api_error
from jobqueue.client.config import load_config, write_config
from jobqueue.client.errors import (
    ApiError,
    ClientError,
    ConfigError,
    TransportError,
    WaitTimeout,
)
from jobqueue.archive import UnsafeArchive, safe_extract
from jobqueue.multipart import MultipartBody
from jobqueue.client.packing import check_relpath, pack_path

CLIENT_ENV = ("JOBQUEUE_URL", "JOBQUEUE_TOKEN", "JOBQUEUE_CA_BUNDLE", "JOBQUEUE_CLIENT_CONFIG")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    # Never pick up the real user's ~/.config/jobqueue/client.toml.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


# -- configuration ----------------------------------------------------------------------


def _write_config(path: Path, **values: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def test_config_from_the_default_file(tmp_path: Path) -> None:
    (tmp_path / "xdg" / "jobqueue").mkdir(parents=True)
    (tmp_path / "xdg" / "jobqueue" / "ca.pem").write_text("not really a CA")
    _write_config(
        tmp_path / "xdg" / "jobqueue" / "client.toml",
        url="https://jobs.example.org",
        token="file-token",
        ca_bundle="ca.pem",
    )
    config = load_config()
    assert config.url == "https://jobs.example.org"
    assert config.token == "file-token"
    # A relative CA path is relative to the config file.
    assert config.ca_bundle == str(tmp_path / "xdg" / "jobqueue" / "ca.pem")


def test_environment_wins_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_config(tmp_path / "c.toml", url="https://from-file", token="file-token")
    monkeypatch.setenv("JOBQUEUE_CLIENT_CONFIG", str(path))
    monkeypatch.setenv("JOBQUEUE_TOKEN", "env-token")
    config = load_config()
    assert config.url == "https://from-file"
    assert config.token == "env-token"
    assert config.ca_bundle is None

    monkeypatch.setenv("JOBQUEUE_URL", "http://from-env:8080")
    assert load_config().url == "http://from-env:8080"


def test_environment_alone_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_URL", "http://localhost:8080")
    config = load_config()
    assert (config.url, config.token, config.ca_bundle) == ("http://localhost:8080", None, None)


def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no controller URL"):
        load_config()

    monkeypatch.setenv("JOBQUEUE_CLIENT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_config()

    bad = tmp_path / "bad.toml"
    bad.write_text("url = \n")
    monkeypatch.setenv("JOBQUEUE_CLIENT_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config()

    typo = _write_config(tmp_path / "typo.toml", url="http://x", tokn="t")
    monkeypatch.setenv("JOBQUEUE_CLIENT_CONFIG", str(typo))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config()

    monkeypatch.setenv("JOBQUEUE_CLIENT_CONFIG", str(tmp_path / "typo.toml"))
    _write_config(typo, url="http://x", ca_bundle="nowhere.pem")
    with pytest.raises(ConfigError, match="CA bundle"):
        load_config()


def test_client_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("JOBQUEUE_URL", "https://jobs.example.org/api/v1/")
    monkeypatch.setenv("JOBQUEUE_TOKEN", "secret")
    monkeypatch.setenv("JOBQUEUE_CA_BUNDLE", str(ca))
    client = Client.from_env()
    assert client.url == "https://jobs.example.org"
    assert client.api == "https://jobs.example.org/api/v1"
    assert client.session.headers["Authorization"] == "Bearer secret"
    assert client.session.verify == str(ca)

    with pytest.raises(ConfigError):
        Client("jobs.example.org", "t")


# -- packing a script or a folder -------------------------------------------------------


def _make_project(root: Path, scripts: tuple[str, ...] = ("main.py",)) -> Path:
    for name in scripts:
        (root / name).write_text("print('hi')\n")
    (root / "lib").mkdir()
    (root / "lib" / "helpers.py").write_text("X = 1\n")
    (root / "data").mkdir()
    (root / "data" / "input.csv").write_text("a,b\n1,2\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (root / "lib" / "helpers.cpython-311.pyc").write_bytes(b"\0")
    return root


def test_pack_folder_with_one_script(tmp_path: Path) -> None:
    root = _make_project(tmp_path)
    files, entry = pack_path(root)
    assert entry == "main.py"
    assert sorted(files) == ["data/input.csv", "lib/helpers.py", "main.py"]
    assert files["data/input.csv"] == root / "data" / "input.csv"


def test_pack_folder_needs_entry_when_ambiguous(tmp_path: Path) -> None:
    root = _make_project(tmp_path, scripts=("a.py", "b.py"))
    with pytest.raises(ClientError, match=r"2 \.py files.*--entry"):
        pack_path(root)
    files, entry = pack_path(root, entry="b.py")
    assert entry == "b.py" and "a.py" in files
    # An entry may live in a sub-folder.
    assert pack_path(root, entry="lib/helpers.py")[1] == "lib/helpers.py"
    with pytest.raises(ClientError, match="not a file"):
        pack_path(root, entry="c.py")
    with pytest.raises(ClientError, match="stay inside"):
        pack_path(root, entry="../a.py")


def test_pack_folder_without_scripts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ClientError, match="no .py file"):
        pack_path(tmp_path)


def test_pack_single_script(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text("print(1)\n")
    assert pack_path(script) == ({"run.py": script}, "run.py")
    with pytest.raises(ClientError, match="does not match"):
        pack_path(script, entry="other.py")
    with pytest.raises(ClientError, match="does not exist"):
        pack_path(tmp_path / "missing.py")


def test_pack_follows_file_links_but_not_folder_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shared.txt").write_text("shared")
    root = tmp_path / "job"
    root.mkdir()
    (root / "main.py").write_text("")
    (root / "shared.txt").symlink_to(outside / "shared.txt")
    (root / "loop").symlink_to(root, target_is_directory=True)
    files, _ = pack_path(root)
    assert sorted(files) == ["main.py", "shared.txt"]


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "."])
def test_relpath_checks(bad: str) -> None:
    with pytest.raises(ClientError):
        check_relpath(bad)


def test_relpath_normalises_harmless_forms() -> None:
    assert check_relpath("a/b.txt") == "a/b.txt"
    assert check_relpath("./a/./b.txt") == "a/b.txt"
    assert check_relpath("a//b") == "a/b"


# -- upload encoding --------------------------------------------------------------------


def test_multipart_body_is_what_the_server_parses(tmp_path: Path) -> None:
    from werkzeug.formparser import parse_form_data
    from werkzeug.test import EnvironBuilder

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    body = MultipartBody()
    spec = {"entry": "main.py", "args": ["-v", "ä"]}
    body.add_field("spec", json.dumps(spec), content_type="application/json")
    body.add_file("files", "main.py", b"print('hi')\n")
    body.add_file("files", 'data/odd "name" é.bin', big)

    chunks = []
    while chunk := body.read(65536):
        chunks.append(chunk)
    raw = b"".join(chunks)
    assert len(raw) == len(body)

    environ = EnvironBuilder(
        method="POST", data=raw, headers={"Content-Type": body.content_type}
    ).get_environ()
    _, form, files = parse_form_data(environ)
    assert json.loads(form["spec"]) == spec
    parts = {f.filename: f.read() for f in files.getlist("files")}
    assert parts == {"main.py": b"print('hi')\n", 'data/odd "name" é.bin': big.read_bytes()}


def test_submit_refuses_escaping_paths_before_sending() -> None:
    client = Client("http://127.0.0.1:1", "t")
    with pytest.raises(ClientError, match="stay inside"):
        client.submit({"../evil.py": b""}, {"entry": "../evil.py"})


# -- safe extraction --------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, str, Any]]) -> Path:
    """members: (kind, name, data-or-link-target); kind is file, dir, sym, hard or fifo."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tar.addfile(info)
    return path


def test_extracts_a_normal_archive(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "r.tar.gz",
        [
            ("dir", "out", None),
            ("file", "out/result.txt", "42"),
            ("file", "deep/er/x.txt", "x"),
            ("sym", "latest", "out/result.txt"),
            ("sym", "out/up", "../deep"),
            ("hard", "copy.txt", "out/result.txt"),
        ],
    )
    dest = tmp_path / "dest"
    names = safe_extract(archive, dest)
    assert set(names) == {"out", "out/result.txt", "deep/er/x.txt", "latest", "out/up", "copy.txt"}
    assert (dest / "out" / "result.txt").read_text() == "42"
    assert (dest / "latest").read_text() == "42"
    assert (dest / "out" / "up" / "er" / "x.txt").read_text() == "x"
    assert (dest / "copy.txt").read_text() == "42"


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("file", "../escape.txt", "x")], "'..'"),
        ([("file", "ok/../../escape.txt", "x")], "'..'"),
        ([("file", "/tmp/escape.txt", "x")], "absolute"),
        ([("sym", "link", "/etc/passwd")], "absolute"),
        ([("sym", "sub/link", "../../escape")], "outside"),
        ([("hard", "hl", "../escape.txt")], "outside"),
        ([("fifo", "pipe", None)], "special"),
    ],
)
def test_refuses_unsafe_members(
    tmp_path: Path, members: list[tuple[str, str, Any]], reason: str
) -> None:
    # A harmless member first: nothing at all may be extracted from a refused archive.
    archive = _tar(tmp_path / "r.tar.gz", [("file", "first.txt", "x"), *members])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=reason):
        safe_extract(archive, dest)
    assert not (dest / "first.txt").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_refuses_links_that_only_escape_together(tmp_path: Path) -> None:
    # Each link alone stays inside; together "a" resolves to the parent of the destination.
    archive = _tar(
        tmp_path / "r.tar.gz",
        [("sym", "a", "b/.."), ("sym", "b", "."), ("file", "keep.txt", "x")],
    )
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match="outside"):
        safe_extract(archive, dest)
    assert not (dest / "a").is_symlink()


def test_never_writes_through_a_link_from_the_archive(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # "d" would be a link to "." and "x" to "..": a file "d/x/owned" must not be created via
    # them. Links are created after files, so "d/x/owned" becomes a real folder in dest.
    archive = _tar(
        tmp_path / "r.tar.gz",
        [("sym", "d", "."), ("file", "d/x/owned", "x")],
    )
    dest = tmp_path / "dest"
    safe_extract(archive, dest)
    assert not (outside / "owned").exists()
    assert not (tmp_path / "owned").exists()
    for path in dest.rglob("*"):
        assert os.path.realpath(path).startswith(str(dest.resolve()))


def test_does_not_follow_existing_links_in_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside, target_is_directory=True)
    archive = _tar(tmp_path / "r.tar.gz", [("file", "out/owned.txt", "x")])
    with pytest.raises(UnsafeArchive, match="outside"):
        safe_extract(archive, dest)
    assert not (outside / "owned.txt").exists()


def test_strips_special_permission_bits(tmp_path: Path) -> None:
    path = tmp_path / "r.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("tool")
        info.size = 2
        info.mode = 0o6777
        tar.addfile(info, io.BytesIO(b"#!"))
    safe_extract(path, tmp_path / "dest")
    assert (tmp_path / "dest" / "tool").stat().st_mode & 0o7777 == 0o755


def test_not_a_tar_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not a tar file")
    with pytest.raises(UnsafeArchive, match="not a readable tar"):
        safe_extract(junk, tmp_path / "dest")


# -- errors and waiting -----------------------------------------------------------------


def _response(status: int, body: bytes, content_type: str = "application/json") -> Any:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response._content_consumed = True
    response.headers["Content-Type"] = content_type
    response.reason = "Reason"
    return response


def test_api_error_from_json_body() -> None:
    error = _api_error(_response(404, b'{"error": "not_found", "message": "no job 7"}'))
    assert (error.status, error.error, error.message) == (404, "not_found", "no job 7")
    assert "no job 7" in str(error)


def test_api_error_from_non_json_body() -> None:
    error = _api_error(_response(502, b"<html> Bad   gateway </html>", "text/html"))
    assert error.status == 502 and error.error == "http_502"
    assert error.message == "<html> Bad gateway </html>"


class _ScriptedClient(Client):
    """A client whose GET /jobs/{id} answers come from a list, to test wait() alone."""

    def __init__(self, states: list[str]) -> None:
        super().__init__("http://127.0.0.1:1", "t")
        self.states = states

    def get(self, job_id: Any) -> dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"id": job_id, "state": state}


def test_wait_reports_updates_until_terminal() -> None:
    seen: list[str] = []
    client = _ScriptedClient(["queued", "queued", "running", "failed"])
    job = client.wait(5, on_update=lambda j: seen.append(j["state"]), interval=0.001)
    assert job["state"] == "failed"
    assert seen == ["queued", "queued", "running", "failed"]


def test_wait_times_out() -> None:
    client = _ScriptedClient(["running"])
    with pytest.raises(WaitTimeout) as caught:
        client.wait(5, timeout=0.05, interval=0.01)
    assert caught.value.job["state"] == "running"
    assert isinstance(caught.value, TimeoutError)


class _KeepAliveThenDrop:
    """An HTTP server that answers the first request on each connection, keeps the
    connection open, and closes it without a word when the next request comes on it:
    the race of a server's keep-alive timeout against a client reusing the connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            if b"\r\n\r\n" not in conn.recv(65536):
                return
            self.answered += 1
            body = json.dumps({"id": "7", "state": "running"}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            conn.recv(65536)  # the next request on this connection: dropped


def test_a_read_on_a_kept_alive_connection_the_server_dropped_is_sent_again() -> None:
    server = _KeepAliveThenDrop()
    client = Client(server.url, "t")
    for _ in range(3):
        assert client.get(7)["state"] == "running"
    assert server.answered == 3


def test_a_submit_without_a_key_is_never_sent_twice() -> None:
    server = _KeepAliveThenDrop()
    client = Client(server.url, "t")
    client.get(7)
    with pytest.raises(TransportError):  # it may have reached the controller
        client._request("POST", "/jobs", expect=(201,), data=b"x")
    assert server.answered == 1


def test_list_follows_cursors_and_respects_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {
        None: {"jobs": [{"id": 5}, {"id": 4}], "next": "c1"},
        "c1": {"jobs": [{"id": 3}, {"id": 2}], "next": "c2"},
        "c2": {"jobs": [{"id": 1}], "next": None},
    }
    asked: list[dict[str, Any]] = []

    def fake_json(method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append(dict(params))
        return pages[params.get("cursor")]

    client = Client("http://127.0.0.1:1", "t")
    monkeypatch.setattr(client, "_json", fake_json)
    assert [j["id"] for j in client.list(state="queued")] == [5, 4, 3, 2, 1]
    assert all(p["state"] == "queued" for p in asked)
    asked.clear()
    assert [j["id"] for j in client.list(limit=3)] == [5, 4, 3]
    assert [p["limit"] for p in asked] == [3, 1]


# -- the command line -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jobqueue: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit"], "required: PATH"),
        (["submit", "x.py", "--cpus", "0"], "--cpus"),
        (["submit", "x.py", "--walltime", "soon"], "not a duration"),
        (["list", "--state", "sleeping"], "invalid choice"),
        (["status"], "required: ID"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert expected in _one_error_line(captured.err)
    assert captured.out == ""


def test_missing_configuration_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == cli.EXIT_ERROR
    assert "no controller URL" in _one_error_line(capsys.readouterr().err)


def test_unreachable_controller_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBQUEUE_URL", f"http://127.0.0.1:{_free_port()}")
    assert cli.main(["status", "1"]) == cli.EXIT_ERROR
    assert "cannot reach" in _one_error_line(capsys.readouterr().err)


def test_ambiguous_folder_is_reported_before_any_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBQUEUE_URL", f"http://127.0.0.1:{_free_port()}")
    root = tmp_path / "proj"
    root.mkdir()
    _make_project(root, scripts=("a.py", "b.py"))
    assert cli.main(["submit", str(root)]) == cli.EXIT_ERROR
    assert "choose one with --entry" in _one_error_line(capsys.readouterr().err)


def test_api_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBQUEUE_URL", "http://127.0.0.1:1")

    def refuse(self: Client, job_id: Any) -> None:
        raise ApiError(409, "conflict", f"job {job_id} is still running")

    monkeypatch.setattr(Client, "delete", refuse)
    assert cli.main(["delete", "7"]) == cli.EXIT_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert "job 7 is still running" in line and "409" in line


def test_unexpected_errors_do_not_print_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBQUEUE_URL", "http://127.0.0.1:1")

    def broken(self: Client, job_id: Any) -> None:
        raise RuntimeError("something odd")

    monkeypatch.setattr(Client, "get", broken)
    assert cli.main(["status", "1"]) == cli.EXIT_ERROR
    assert "something odd" in _one_error_line(capsys.readouterr().err)


def test_json_flag_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--json", "list"]).json is True
    assert parser.parse_args(["list", "--json"]).json is True
    assert parser.parse_args(["list"]).json is False


def test_submit_arguments() -> None:
    args = cli.build_parser().parse_args(
        ["submit", "proj", "--entry", "run.py", "--arg", "a", "--arg=-v", "--walltime", "1:30:00"]
        + ["--cpus", "4", "--memory", "2048", "--output-limit", "10", "--name", "n", "--wait"]
    )
    assert args.args == ["a", "-v"]
    assert (args.entry, args.cpus, args.walltime, args.memory) == ("run.py", 4, 5400, 2048)
    assert (args.output_limit, args.name, args.wait) == (10, "n", True)


@pytest.mark.parametrize("given, mebibytes", [
    ("2048", 2048), ("512M", 512), ("4G", 4096), ("4g", 4096), ("1.5G", 1536), ("4GiB", 4096),
    ("1T", 1 << 20), ("64MB", 64)])
def test_sizes_take_units_as_durations_do(given: str, mebibytes: int) -> None:
    args = cli.build_parser().parse_args(["submit", "run.py", "--memory", given,
                                          "--output-limit", given])
    assert args.memory == args.output_limit == mebibytes


@pytest.mark.parametrize("given", ["0", "0.5M", "1.5", "4X", "G", "-1G", ""])
def test_a_size_that_is_not_one_is_refused_saying_what_is_expected(given: str) -> None:
    with pytest.raises(cli.UsageError, match="size|at least 1 MiB"):
        cli.build_parser().parse_args(["submit", "run.py", f"--memory={given}"])


def test_an_arg_may_start_with_a_dash() -> None:
    args = cli.parse_command_line(
        cli.build_parser(), ["submit", "run.py", "--arg", "--common", "--arg", "-n", "--arg",
                             "5", "--cpus", "2"])
    assert args.args == ["--common", "-n", "5"] and args.cpus == 2


def test_script_arguments_after_a_double_dash() -> None:
    args = cli.parse_command_line(
        cli.build_parser(),
        ["submit", "run.py", "--cpus", "2", "--arg", "first", "--", "-n", "5", "--", "x"])
    assert args.args + args.script_args == ["first", "-n", "5", "--", "x"]
    assert args.cpus == 2 and args.path == "run.py"
    with pytest.raises(cli.UsageError, match="only submit"):
        cli.parse_command_line(cli.build_parser(), ["list", "--", "x"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from jobqueue import __version__

    assert cli.main(["--version"]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == f"jobqueue {__version__}"


def test_times_are_shown_in_the_local_zone_with_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time_module.tzset()
    try:
        assert display.local_time("2026-01-02T03:04:05+00:00") == "2026-01-02 08:34:05 IST"
        assert display.local_time(None) == ""
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()


def test_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """`jobqueue list | head -1`: the reader leaves; no error, no traceback."""
    import subprocess

    env = dict(os.environ, JOBQUEUE_URL="http://127.0.0.1:1", JOBQUEUE_TOKEN="t")
    code = ("import sys\nfrom jobqueue.client import cli\n"
            "cli.cmd_list = lambda args: [print('x' * 100) for _ in range(100000)] and 0\n"
            "sys.exit(cli.main(['list']))\n")
    result = subprocess.run(f"{sys.executable} -c \"$CODE\" | head -c 10 >/dev/null",
                            shell=True, env=env | {"CODE": code}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("1:05", 65)]
)
def test_durations(text: str, seconds: int) -> None:
    assert arg_types.duration(text) == seconds


def test_wait_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("JOBQUEUE_URL", "http://127.0.0.1:1")
    final = {"state": "succeeded"}

    def fake_wait(self: Client, job_id: Any, timeout: Any = None, on_update: Any = None):
        for state in ("queued", "running", final["state"]):
            on_update({"id": job_id, "state": state, "worker": "node1", "exit_code": 0})
        return {"id": job_id, "state": final["state"]}

    monkeypatch.setattr(Client, "wait", fake_wait)
    assert cli.main(["wait", "3"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.out.strip() == "job 3 succeeded"
    progress = captured.err.strip().splitlines()
    assert [line.split("] ", 1)[1] for line in progress] == [
        "job 3: queued",
        "job 3: running (on node1)",
        "job 3: succeeded (exit code 0)",
    ]
    assert "\r" not in captured.err  # no spinner when stderr is not a terminal

    final["state"] = "failed"
    assert cli.main(["wait", "3"]) == cli.EXIT_JOB_NOT_SUCCEEDED


@pytest.mark.parametrize("state, exit_code, status", [
    ("succeeded", 0, 0), ("failed", 7, 7), ("failed", -9, 137), ("failed", 300, 255),
    ("failed", None, cli.EXIT_JOB_NOT_SUCCEEDED), ("lost", None, cli.EXIT_JOB_NOT_SUCCEEDED),
    ("timed_out", -15, cli.EXIT_JOB_TIMED_OUT), ("cancelled", None, cli.EXIT_JOB_CANCELLED)])
def test_the_exit_status_says_how_the_job_ended(state: str, exit_code, status: int) -> None:
    assert exit_status.job_exit_status({"state": state, "exit_code": exit_code}) == status


def test_wait_timeout_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBQUEUE_URL", "http://127.0.0.1:1")

    def times_out(self: Client, job_id: Any, timeout: Any = None, on_update: Any = None):
        raise WaitTimeout({"id": job_id, "state": "running"}, timeout)

    monkeypatch.setattr(Client, "wait", times_out)
    assert cli.main(["wait", "3", "--timeout", "5"]) == cli.EXIT_WAIT_TIMEOUT
    assert "still running after 5 seconds" in _one_error_line(capsys.readouterr().err)


def test_dev_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[list[str]] = []
    fake = types.ModuleType("jobqueue.dev")
    fake.main = lambda argv: received.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jobqueue.dev", fake)
    assert cli.main(["dev", "up", "--workers", "2", "--json"]) == 7
    assert received == [["up", "--workers", "2", "--json"]]


# -- retries through an outage ------------------------------------------------------------


class _FlakyController:
    """Stands in for Client._send: fails the first tries as scripted, then answers 201."""

    def __init__(self, failures: list[Any]) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        data = kwargs.get("data")
        body = data.read() if hasattr(data, "read") else b""
        self.calls.append({"method": method, "headers": dict(kwargs["headers"]), "body": body})
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return _response(201, b'{"id": "j1", "state": "queued"}')


def _unavailable() -> requests.Response:
    response = _response(503, b'{"error": "unavailable", "message": "database down"}')
    response.headers["Retry-After"] = "0"
    return response


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("jobqueue.client.api.time.sleep", slept.append)
    return slept


def test_submit_retries_lost_connections_and_503_with_one_key(
    monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    client = Client("http://127.0.0.1:1", "t")
    flaky = _FlakyController([TransportError("connection reset"), _unavailable()])
    monkeypatch.setattr(client, "_send", flaky)
    assert client.submit({"main.py": b"print(1)\n"}, {"entry": "main.py"})["id"] == "j1"
    assert len(flaky.calls) == 3 and len(no_sleep) == 2
    keys = {call["headers"]["Idempotency-Key"] for call in flaky.calls}
    assert len(keys) == 1 and len(keys.pop()) >= 16
    # Every try sends the whole body again.
    assert flaky.calls[0]["body"].count(b"print(1)") == 1
    assert {len(call["body"]) for call in flaky.calls} == {len(flaky.calls[0]["body"])}


def test_submit_keeps_a_given_key_and_the_cli_passes_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_sleep: list[float]
) -> None:
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    monkeypatch.setenv("JOBQUEUE_URL", "http://127.0.0.1:1")
    flaky = _FlakyController([])
    monkeypatch.setattr(Client, "_send", lambda self, *a, **kw: flaky(*a, **kw))
    assert cli.main(["submit", str(script), "--idempotency-key", "nightly-42"]) == cli.EXIT_OK
    assert flaky.calls[0]["headers"]["Idempotency-Key"] == "nightly-42"
    assert cli.main(["submit", str(script)]) == cli.EXIT_OK
    assert flaky.calls[1]["headers"]["Idempotency-Key"] not in ("", "nightly-42")


def test_retries_stop_after_the_budget(
    monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    client = Client("http://127.0.0.1:1", "t", retry_seconds=0)
    monkeypatch.setattr(client, "_send", _FlakyController([TransportError("refused")]))
    with pytest.raises(TransportError):
        client.submit({"main.py": b""}, {"entry": "main.py"})
    monkeypatch.setattr(client, "_send", _FlakyController([_unavailable()]))
    with pytest.raises(ApiError) as raised:
        client.get("j1")
    assert raised.value.status == 503 and no_sleep == []


def test_reads_retry_503_but_not_a_refused_connection(
    monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    client = Client("http://127.0.0.1:1", "t")
    flaky = _FlakyController([_unavailable(), _unavailable()])
    monkeypatch.setattr(client, "_send", flaky)
    client._request("GET", "/jobs/j1", expect=(201,))
    assert len(flaky.calls) == 3
    monkeypatch.setattr(client, "_send", _FlakyController([TransportError("refused")]))
    with pytest.raises(TransportError):
        client.get("j1")


def test_a_cancel_retries_503_but_not_other_server_errors(
    monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    client = Client("http://127.0.0.1:1", "t")
    flaky = _FlakyController([_unavailable(), _response(502, b"bad gateway", "text/html")])
    monkeypatch.setattr(client, "_send", flaky)
    with pytest.raises(ApiError) as raised:
        client.cancel("j1")
    assert raised.value.status == 502 and len(flaky.calls) == 2


class _Clock:
    """time.monotonic and time.sleep for polling: sleeping moves the clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        monkeypatch.setattr("jobqueue.client.polling.time.monotonic", lambda: self.now)
        monkeypatch.setattr("jobqueue.client.polling.time.sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_wait_rides_out_the_controller_away_for_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart, a reboot of the controller's host: refused connections and 5xx
    answers for ten minutes do not end an overnight wait."""
    clock = _Clock(monkeypatch)
    client = Client("http://127.0.0.1:1", "t", retry_seconds=0)
    answers: list[Any] = [{"id": "j1", "state": "running"}]
    answers += [TransportError("refused")] * 100 + [ApiError(502, "bad_gateway", "proxy")] * 50
    answers += [{"id": "j1", "state": "succeeded"}]

    def get(job_id: str) -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(client, "get", get)
    assert client.wait("j1")["state"] == "succeeded"
    assert 600 < clock.now < 900 and answers == []


def test_a_wait_ends_on_an_outage_past_its_bound_or_on_a_4xx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock(monkeypatch)
    client = Client("http://127.0.0.1:1", "t", retry_seconds=0)
    monkeypatch.setattr(client, "get", lambda job_id: (_ for _ in ()).throw(
        TransportError("refused")))
    with pytest.raises(TransportError):
        client.wait("j1")
    assert clock.now > 900
    monkeypatch.setattr(client, "get", lambda job_id: (_ for _ in ()).throw(
        ApiError(404, "not_found", "no such job")))
    with pytest.raises(ApiError):
        client.wait("j1")


@pytest.mark.parametrize("given, entries", [
    ("3fa9,81bd", ["3fa9", "81bd"]),
    ("afterany:3fa9:81bd,c0de", ["afterany:3fa9", "afterany:81bd", "c0de"]),
    ("afternotok:3fa9, afterok:81bd", ["afternotok:3fa9", "afterok:81bd"]),
])
def test_after_reads_as_slurms_dependency(given: str, entries: list[str]) -> None:
    assert arg_types.dependency_entries(given) == entries


@pytest.mark.parametrize("value", ["plain", 'a "quoted" \\ path', "tab\tnew\nline\x01\x7f",
                                   "ünïcode 😀"])
def test_a_written_client_file_reads_back_whatever_its_values_hold(tmp_path, value):
    path, ca_bundle = tmp_path / "client.toml", tmp_path / value
    ca_bundle.write_text("a CA\n")  # the client checks that its CA bundle is there
    write_config(path, "https://jobs.example.org", value, str(ca_bundle))
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_config({"JOBQUEUE_CLIENT_CONFIG": str(path)})
    assert (loaded.url, loaded.token, loaded.ca_bundle) == (
        "https://jobs.example.org", value, str(ca_bundle))
