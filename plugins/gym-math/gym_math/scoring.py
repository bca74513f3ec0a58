"""Answer checking with math-verify, in worker processes.

math-verify bounds its parsing and comparison with ``signal.alarm``, which works only in a
process's main thread; gymcore runs plain ``def`` hooks in threads. So the check runs in a
small pool of *spawned* worker processes (never forked from the collector's threads), where
it is the main thread, and a pathological answer cannot stall the collector's event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

#: seconds math-verify may spend parsing or comparing one answer (its own alarm-based bound)
TIMEOUT_S = 5

_pool: ProcessPoolExecutor | None = None


def _check(gold: str, text: str, timeout_s: int) -> tuple[bool, bool, str]:
    """``(correct, parsed, the answer as parsed)``; runs in a worker's main thread."""
    from math_verify import parse, verify

    expected = parse(gold, parsing_timeout=timeout_s) or parse(f"${gold}$", parsing_timeout=timeout_s)
    if not expected:
        raise ValueError(f"the row's expected answer {gold!r} does not parse")
    answer = parse(text, parsing_timeout=timeout_s)
    if not answer:
        return False, False, ""
    return bool(verify(expected, answer, timeout_seconds=timeout_s)), True, str(answer[-1])[:200]


def pool() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        import multiprocessing

        _pool = ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                    mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
    return _pool


async def check(gold: Any, text: str) -> tuple[bool, bool, str]:
    """Is ``text``'s final answer equal to ``gold``? See :func:`_check`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool(), _check, str(gold), text, TIMEOUT_S)
