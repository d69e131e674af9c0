"""Wheels of distributions already installed here, so a test can fill a fresh virtualenv
with `pip install --no-index` without reaching a package index or building anything."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# Written by the installer, not part of the wheel.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> list[metadata.Distribution]:
    """The installed distributions that `requirements` (Requires-Dist lines) need, with
    their own dependencies, as pip would pick them for `extras` of the first level."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
            continue
        key = _normalise(req.name)
        if key in found:
            continue
        dist = metadata.distribution(req.name)
        found[key] = dist
        todo += [(Requirement(r), tuple(req.extras)) for r in dist.requires or []]
    return list(found.values())


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel in `dest` of the installed `dist`, with the files its RECORD lists."""
    files = [f for f in dist.files or [] if not str(f).startswith("..")
             and "__pycache__" not in f.parts]
    info_dir = next(f.parts[0] for f in files if f.name == "METADATA"
                    and f.parts[0].endswith(".dist-info"))
    wheel_info = (dist.read_text("WHEEL") or "").splitlines()
    tags = [line.split(":", 1)[1].strip() for line in wheel_info if line.startswith("Tag:")]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = dest / f"{name}-{dist.version}-{tags[0]}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for f in files:
            if f.parts[0] == info_dir and f.name in _INSTALL_ONLY:
                continue
            data = Path(str(f.locate())).read_bytes()
            wheel.writestr(str(f), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            writer.writerow([str(f), f"sha256={digest.decode()}", len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        wheel.writestr(f"{info_dir}/RECORD", record.getvalue())
    return path
