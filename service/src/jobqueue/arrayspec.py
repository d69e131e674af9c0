"""Job array ranges in Slurm's `--array` syntax: `0-99`, `1,3,7-9`, `0-20:5`, `0-99%10`.

A range is a comma-separated list of indices and `first-last[:step]` runs, optionally
followed by `%N`: at most N tasks of the array run at once. Indices are whole numbers
from 0 to `max_size - 1` (as Slurm's MaxArraySize), each given once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TEXT = 10_000  # characters of a range: far more than any real one needs
PART = re.compile(r"(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?")


class BadArray(ValueError):
    """An array range that does not parse or is out of bounds; the message says why."""


@dataclass(frozen=True)
class ArrayRange:
    indices: tuple[int, ...]
    max_running: int | None = None

    @property
    def size(self) -> int:
        return len(self.indices)


def parse_array(text: str, max_size: int) -> ArrayRange:
    """The indices (in the order given) and the %N limit of `text`."""
    if not isinstance(text, str) or not text.strip():
        raise BadArray("must be a range such as '0-99', '1,3,7-9', '0-20:5' or '0-99%10'")
    if len(text) > MAX_TEXT:
        raise BadArray(f"a range may be at most {MAX_TEXT} characters long")
    body, percent, limit_text = text.strip().partition("%")
    max_running = None
    if percent:
        if not limit_text.isdigit() or len(limit_text) > 9 or int(limit_text) < 1:
            raise BadArray(f"the limit after '%' must be a whole number of at least 1, "
                           f"got {limit_text!r}")
        max_running = int(limit_text)
    indices: list[int] = []
    seen: set[int] = set()
    for part in body.split(","):
        match = PART.fullmatch(part.strip())
        if match is None:
            raise BadArray(f"{part.strip()!r} is not an index, 'first-last' or "
                           "'first-last:step'")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last < first:
            raise BadArray(f"{part.strip()!r} ends before it starts")
        if step < 1:
            raise BadArray(f"{part.strip()!r}: the step must be at least 1")
        if last >= max_size:
            raise BadArray(f"indices must be below {max_size} (the largest array), "
                           f"got {last}")
        # Bounded by max_size above: at most max_size indices are ever listed.
        for index in range(first, last + 1, step):
            if index in seen:
                raise BadArray(f"index {index} is given twice")
            seen.add(index)
            indices.append(index)
            if len(indices) > max_size:
                raise BadArray(f"an array may have at most {max_size} tasks")
    return ArrayRange(tuple(indices), max_running)
