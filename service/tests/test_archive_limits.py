"""Hostile archives: every cap applies to a member's header before its data is read,
so a small archive that describes a huge one is refused after reading a small part of
it. Each case counts the bytes the extraction took from the archive, and what it wrote.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile

import pytest
from conftest import tar_bytes

from jobqueue.archive import MAX_DEPTH, ArchiveTooLarge, UnsafeArchive, safe_extract

MIB = 1 << 20


class Counting(io.RawIOBase):
    """An archive's bytes, counting how many were read."""

    def __init__(self, data: bytes):
        self.data, self.read_bytes = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data[self.read_bytes:self.read_bytes + len(buffer)]
        buffer[:len(chunk)] = chunk
        self.read_bytes += len(chunk)
        return len(chunk)


def gzip_of_repeats(block: bytes, count: int, tail: bytes = b"") -> bytes:
    """gzip of `block` `count` times (then `tail`): one gzip member of 1 MiB of blocks,
    repeated (gzip readers read concatenated members as one stream)."""
    per_chunk = max(1, (1 << 20) // len(block))
    whole, rest = divmod(count, per_chunk)
    return gzip.compress(block * per_chunk) * whole + gzip.compress(block * rest + tail)


def header(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    return info.tobuf(format=tarfile.GNU_FORMAT)


def files_written(root) -> int:
    return sum(1 for p in root.rglob("*") if not p.is_dir()) if root.exists() else 0


def test_a_million_entries_are_refused_at_the_cap_after_a_small_part(tmp_path):
    """2 MiB of gzip describing a million entries: refused at entry 10,001,
    having read a few % of the archive (the whole list used to be read first)."""
    bomb = gzip_of_repeats(header("a"), 1_000_000)
    assert len(bomb) < 4 * MIB
    source = Counting(bomb)
    with pytest.raises(UnsafeArchive, match="more than 10000 entries"):
        safe_extract(source, tmp_path / "out", 1 << 30, 10_000)
    assert source.read_bytes < len(bomb) // 20, (source.read_bytes, len(bomb))


def test_a_member_declaring_4_gib_is_refused_before_its_data(tmp_path):
    bomb = gzip_of_repeats(header("big", 4 << 30), 1, tail=b"\0" * 4096)
    source = Counting(bomb)
    with pytest.raises(ArchiveTooLarge, match="exceeds 1048576 bytes"):
        safe_extract(source, tmp_path / "out", MIB, 10)
    assert files_written(tmp_path / "out") == 0


def test_a_header_that_expands_without_end_stops_at_the_stream_budget(tmp_path):
    """A pax header of 64 MiB (a few KiB of gzip) holds no file data, so only the
    bound on the decompressed stream stops it: at about what the caps allow."""
    info = tarfile.TarInfo("f")
    info.pax_headers = {"comment": "x" * (64 * MIB)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    source = Counting(buf.getvalue())
    with pytest.raises(ArchiveTooLarge, match="expands past"):
        safe_extract(source, tmp_path / "out", MIB, 10)
    assert source.read_bytes < len(buf.getvalue())


def test_paths_deeper_than_the_cap_are_refused(tmp_path):
    deep = "/".join(["d"] * MAX_DEPTH) + "/f"
    with pytest.raises(UnsafeArchive, match="too deep"):
        safe_extract(io.BytesIO(tar_bytes({deep: b"x"})), tmp_path / "out", MIB, 10)
    fine = "/".join(["d"] * (MAX_DEPTH - 1)) + "/f"
    assert safe_extract(io.BytesIO(tar_bytes({fine: b"x"})), tmp_path / "ok", MIB, 10) == [fine]
    assert (tmp_path / "ok" / fine).read_bytes() == b"x"
    assert files_written(tmp_path / "out") == 0


def test_a_hard_link_to_a_symbolic_link_is_refused_not_a_crash(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, link in (("s", tarfile.SYMTYPE, "data"), ("h", tarfile.LNKTYPE, "s")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info)
    with pytest.raises(UnsafeArchive, match="hard link to 's', which is not a file before"):
        safe_extract(io.BytesIO(buf.getvalue()), tmp_path / "out", MIB, 10)


def test_a_hard_link_to_an_earlier_file_is_kept(tmp_path):
    archive = (header("a", 3) + b"abc".ljust(512, b"\0") + header("b", kind=tarfile.LNKTYPE,
                                                                  link="a") + b"\0" * 1024)
    assert safe_extract(io.BytesIO(archive), tmp_path / "out", MIB, 10) == ["a", "b"]
    assert (tmp_path / "out" / "b").read_bytes() == b"abc"


def test_reading_stops_at_the_clock(tmp_path):
    with pytest.raises(UnsafeArchive, match="too long"):
        safe_extract(io.BytesIO(tar_bytes({"a": b"x" * MIB})), tmp_path / "out", 2 * MIB, 10,
                     seconds=0)


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress, lambda data: data],
                         ids=["bzip2", "xz", "plain"])
def test_other_compressions_still_extract(tmp_path, compress):
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        info = tarfile.TarInfo("dir/a.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    assert safe_extract(io.BytesIO(compress(plain.getvalue())), tmp_path / "out", MIB, 10) \
        == ["dir/a.txt"]
    assert (tmp_path / "out" / "dir" / "a.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("data", [tar_bytes({"a": os.urandom(5000)})[:2000], b"\x1f\x8bnot gzip",
                                  b"BZhnot bzip2", b"not a tar at all" * 40])
def test_broken_archives_are_unsafe_archive_errors(tmp_path, data):
    with pytest.raises(UnsafeArchive):
        safe_extract(io.BytesIO(data), tmp_path / "out", MIB, 10)


def test_hostile_archives_through_the_api_are_4xx_and_leave_nothing(stack):
    bombs = {
        "entries": gzip_of_repeats(header("a"), 200_000),
        "declared": gzip_of_repeats(header("big", 4 << 30), 1, tail=b"\0" * 4096),
        "deep": tar_bytes({"/".join(["d"] * 100) + "/f": b"x"}),
        "hardlink": header("s", kind=tarfile.SYMTYPE, link="x")
        + header("h", kind=tarfile.LNKTYPE, link="s") + b"\0" * 1024,
    }
    for name, bomb in bombs.items():
        response = stack.submit(archive=bomb)
        assert response.status_code in (400, 413), (name, response.status_code)
        assert response.get_json()["error"] in ("bad_request", "too_large"), name
    assert stack.jobs() == []
    assert list(stack.files.root.iterdir()) == []


def test_a_hostile_result_archive_is_a_4xx_and_the_job_can_still_finish(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    hostile = (header("s", kind=tarfile.SYMTYPE, link="x")
               + header("h", kind=tarfile.LNKTYPE, link="s") + b"\0" * 1024)
    refused = stack.upload(job, lease, results=hostile)
    assert refused.status_code == 400 and "hard link" in refused.get_json()["message"]
    assert stack.upload(job, lease, results=tar_bytes({"out.txt": b"ok"})).status_code == 200
    assert stack.job(job)["state"] == "succeeded"
