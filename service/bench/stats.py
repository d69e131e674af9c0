"""What the benchmarks share: how they read a percentile off their samples."""

from __future__ import annotations


def percentile(values: list[float], p: float) -> float:
    """The sample at rank p % (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
