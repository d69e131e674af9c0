"""Evaluate a function over many inputs on all CPUs a job was given.

    from jobqueue import mapper
    results = mapper.map(lambda x: x * x, range(1000))

Worker processes are forked, so ``f`` may be a lambda or a closure: the function and the
inputs are inherited by the children and only indices and results cross process boundaries.
"""

from jobqueue.mapper.core import MapError, cpus, map

__all__ = ["MapError", "cpus", "map"]
