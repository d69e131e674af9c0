"""A multipart/form-data request body that streams files from disk instead of loading them.

requests builds multipart bodies in memory; a job's inputs (the client's submit) and its
results (the worker's upload) may each be up to a GiB, so the body is produced piece by
piece here. Its length is known in advance, so it is sent with Content-Length (no
chunked encoding, which some WSGI servers refuse).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

Source = bytes | Path


class MultipartBody:
    """File-like body: ``read(n)`` returns the next bytes, ``len()`` the total size."""

    def __init__(self) -> None:
        self.boundary = "jobqueue-" + secrets.token_hex(16)
        self._parts: list[tuple[bytes, Source, int]] = []
        self._iter: Iterator[bytes] | None = None
        self._pending = b""

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def add_field(self, name: str, value: str, content_type: str = "text/plain") -> None:
        data = value.encode("utf-8")
        head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(name)}"\r\n'
            f"Content-Type: {content_type}; charset=utf-8\r\n\r\n"
        ).encode()
        self._parts.append((head, data, len(data)))

    def add_file(self, name: str, filename: str, source: Source) -> None:
        size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
        head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(name)}"; '
            f'filename="{_quote(filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._parts.append((head, source, size))

    def __len__(self) -> int:
        tail = len(f"--{self.boundary}--\r\n")
        return sum(len(head) + size + 2 for head, _, size in self._parts) + tail

    def read(self, size: int = -1) -> bytes:
        if self._iter is None:
            self._iter = self._chunks()
        out = [self._pending]
        have = len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._iter, None)
            if chunk is None:
                break
            out.append(chunk)
            have += len(chunk)
        data = b"".join(out)
        if size < 0:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]

    def _chunks(self) -> Iterator[bytes]:
        for head, source, size in self._parts:
            yield head
            if isinstance(source, bytes):
                yield source
            else:
                with open(source, "rb") as fh:
                    yield from _read_exactly(fh, size, source)
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()


def _read_exactly(fh: BinaryIO, size: int, path: Path) -> Iterator[bytes]:
    # Content-Length was promised up front: a file that changes size mid-upload must fail loudly.
    left = size
    while left > 0:
        chunk = fh.read(min(left, 1024 * 1024))
        if not chunk:
            raise OSError(f"{path} shrank while it was being uploaded")
        left -= len(chunk)
        yield chunk


def _quote(value: str) -> str:
    # The HTML5 form encoding that werkzeug understands: escape quotes and line breaks only.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
