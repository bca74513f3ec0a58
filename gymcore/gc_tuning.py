"""The cyclic garbage collector's thresholds while a collection runs.

Thousands of rollouts in flight keep their state (tasks, frames, requests, sessions) alive
through many young-generation collections, so it is promoted to the oldest generation, and
CPython then runs a full collection of that whole heap each time it grows by a quarter: at
5,000 in flight against a 2 s model, 5.6 of the collector's 16.4 s of CPU went to the
collector of garbage (``bench/scale.py``). A young generation of 50,000 allocations instead
of 700 takes that to about 1 s; the middle and old thresholds stay CPython's, so cycles
are still freed, a little later (peak RSS within 15%)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

#: Allocations between young-generation collections during a run (CPython's default: 700).
YOUNG_GENERATION = 50_000


@contextmanager
def wide_young_generation() -> Iterator[None]:
    """Run the body with a young generation of :data:`YOUNG_GENERATION`, then give the
    process back its own thresholds (a library caller's are its own)."""
    before = gc.get_threshold()
    if before[0]:  # 0: automatic collection is off, and stays off
        gc.set_threshold(max(before[0], YOUNG_GENERATION), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
