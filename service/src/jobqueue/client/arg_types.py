"""The `jobqueue` command's argument values: sizes, durations, counts, NAME=VALUE and
dependency lists, each refused with a message argparse shows."""

from __future__ import annotations

import argparse
import os
import re

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {"m": 1, "g": 1024, "t": 1024 * 1024}  # in MiB


def mebibytes(text: str) -> int:
    """MiB from ``512``, ``512M``, ``4G``, ``1.5G`` or ``1T`` (binary units, as Slurm's
    ``--mem``); an optional ``B`` or ``iB`` after the unit."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mgt]?)(?:i?b)?", text.strip().lower())
    if not match or (not match.group(2) and "." in match.group(1)):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (use MiB, or 512M, 4G, 1T)")
    mebibytes = int(float(match.group(1)) * _SIZES[match.group(2) or "m"])
    if mebibytes < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 MiB")
    return mebibytes


def duration(text: str) -> int:
    """Seconds from ``3600``, ``90m``, ``2h``, ``1d`` or ``[HH:]MM:SS``."""
    value = text.strip().lower()
    match = re.fullmatch(r"(\d+)([smhd]?)", value)
    if match:
        seconds = int(match.group(1)) * _UNITS.get(match.group(2) or "s", 1)
    elif re.fullmatch(r"\d+(:\d{1,2}){1,2}", value):
        seconds = 0
        for part in value.split(":"):
            seconds = seconds * 60 + int(part)
    else:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (use seconds, 90m, 2h, 1d or HH:MM:SS)"
        )
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least one second")
    return seconds


def export(item: str) -> tuple[str, str]:
    """--export NAME=VALUE, or NAME for this shell's value (as Slurm's --export)."""
    name, equals, value = item.partition("=")
    if equals:
        return name, value
    if name not in os.environ:
        raise argparse.ArgumentTypeError(f"{name!r} has no value here: give NAME=VALUE")
    return name, os.environ[name]


def dependency_entries(text: str) -> list[str]:
    """--after's value as the API's entries: "afterany:A:B,C" is afterany:A, afterany:B
    and C (afterok), as Slurm's --dependency reads it."""
    entries = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        condition, colon, ids = item.partition(":")
        if colon and condition.startswith("after"):
            entries += [f"{condition}:{i}" for i in ids.split(":")]
        else:
            entries.append(item)
    return entries
