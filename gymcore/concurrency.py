"""``--parallel auto``: how many rollouts may be in flight, learned from the model's answers.

A rate limit is a number nobody tells you, and it moves. So the limit starts low and grows
while calls succeed and their latency holds; a 429 or 5xx cuts it multiplicatively, and a
``Retry-After`` also pauses new rollouts that long. It never exceeds ``--parallel-max``.

The shape is TCP's (slow start, then additive increase, multiplicative decrease), with one
change that matters for a hard cap: the limit at which the server last refused is
remembered, the limit climbs back to just below it in one round of calls, then probes past
it slowly. Plain AIMD would saw between 0.75x and 1x of the cap and lose an eighth of the
throughput; this sits at the cap and pays a refused call once every few rounds (the call is
retried under the retry policy, so no rollout fails for it).

Only calls that started after the last cut can cut again: the calls a too-high limit sent
together come back refused together, and they are one signal, not twenty.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from .errors import ModelError

#: Rollouts in flight when an adaptive run starts.
START = 4
#: The factor a refusal cuts the limit by.
BACKOFF = 0.75
#: Growth stops while the calls' latency (a moving average) is above this many times the
#: lowest seen: the server is queueing, so more in flight buys nothing.
LATENCY_SLACK = 2.0
#: Once back below the last refused limit, one step up per this many rounds of calls.
PROBE_ROUNDS = 4
#: The longest a ``Retry-After`` pauses new rollouts.
MAX_PAUSE = 60.0
#: ``settled()`` looks back at most this many seconds.
SETTLED_WINDOW = 60.0


def is_overload(error: ModelError) -> bool:
    """A 429 or a 5xx: the server asks for fewer calls at once."""
    status = error.status
    return status is not None and (status == 429 or 500 <= status <= 599)


class AdaptiveLimit:
    """A semaphore whose size follows the model server's answers (see the module)."""

    def __init__(self, maximum: int, start: int = START):
        self.maximum = max(1, maximum)
        self.limit = min(max(1, start), self.maximum)
        self.in_use = 0
        self.cuts = 0  # how often the limit was cut
        self.peak = self.limit
        self._waiters: deque[asyncio.Future] = deque()
        self._paused_until = 0.0
        self._ceiling: int | None = None  # the limit the server last refused at
        self._last_cut = 0.0  # monotonic time of the last cut
        self._credit = 0  # successes since the limit last changed
        self._latency: float | None = None  # moving average of successful calls' latency
        self._lowest: float | None = None
        self._samples = 0
        self._wake_handle: asyncio.TimerHandle | None = None
        started = time.monotonic()
        self.started = started
        #: (when, limit) at each change, back to SETTLED_WINDOW seconds ago
        self.history: deque[tuple[float, int]] = deque([(started, self.limit)])

    # --- the semaphore ------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait for a slot under the current limit (and past any ``Retry-After`` pause)."""
        if not self._waiters and self._free():
            self.in_use += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # the waker took the slot for us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # woken and cancelled in the same turn: give the slot back
            else:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _free(self) -> bool:
        return self.in_use < self.limit and time.monotonic() >= self._paused_until

    def _wake(self) -> None:
        while self._waiters and self._free():
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(None)
        pause = self._paused_until - time.monotonic()
        if self._waiters and pause > 0 and self._wake_handle is None:
            def wake() -> None:
                self._wake_handle = None
                self._wake()
            self._wake_handle = asyncio.get_running_loop().call_later(pause, wake)

    # --- what the calls say -------------------------------------------------------------

    def succeeded(self, latency: float) -> None:
        self._samples += 1
        self._latency = latency if self._latency is None else 0.9 * self._latency + 0.1 * latency
        if self._lowest is None or self._latency < self._lowest:
            self._lowest = self._latency
        if self.limit >= self.maximum:
            return
        if self._samples > 8 and self._latency > LATENCY_SLACK * self._lowest:  # type: ignore[operator]
            return  # the server is queueing: hold
        self._credit += 1
        ceiling = self._ceiling
        if ceiling is None or self.limit < ceiling - 1:
            step = self._credit >= 1  # slow start, or climbing back: double per round
        else:
            step = self._credit >= PROBE_ROUNDS * self.limit  # near the refusal: probe slowly
        if step:
            self._set(self.limit + 1)
            if ceiling is not None and self.limit > ceiling:
                self._ceiling = None  # the server takes more than before: grow freely again

    def refused(self, started_at: float, retry_after: float | None) -> None:
        """A call that started at ``started_at`` (monotonic) was answered 429 or 5xx."""
        now = time.monotonic()
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + min(retry_after, MAX_PAUSE))
        if started_at < self._last_cut:
            return  # sent under the limit already cut: the same signal again
        self._ceiling = self.limit
        self._last_cut = now
        self.cuts += 1
        self._set(max(1, int(self.limit * BACKOFF)))

    def _set(self, limit: int) -> None:
        self.limit = min(limit, self.maximum)
        self.peak = max(self.peak, self.limit)
        self._credit = 0
        now = time.monotonic()
        self.history.append((now, self.limit))
        if len(self.history) > 64 and self.history[1][0] < now - SETTLED_WINDOW:
            self.history.popleft()  # older than settled() looks: a long run keeps a bounded history
        self._wake()

    def settled(self) -> float:
        """The time-weighted mean limit over the second half of the run so far, or over its
        last SETTLED_WINDOW seconds when that is shorter."""
        now = time.monotonic()
        half = max(self.started + (now - self.started) / 2, now - SETTLED_WINDOW)
        total = weighted = 0.0
        points = [*self.history, (now, self.limit)]
        for (at, limit), (until, _next) in zip(points, points[1:]):
            begin = max(at, half)
            if until > begin:
                weighted += limit * (until - begin)
                total += until - begin
        return weighted / total if total else float(self.limit)

    def watch(self, backend: Any) -> Any:
        """``backend``, reporting each call's outcome here."""
        return _Observed(backend, self)


class _Observed:
    """A model backend whose calls' outcomes feed an :class:`AdaptiveLimit`."""

    def __init__(self, backend: Any, limit: AdaptiveLimit):
        self._backend, self._limit = backend, limit
        self.label = backend.label

    async def create_response(self, request: Any) -> Any:
        started = time.monotonic()
        try:
            response = await self._backend.create_response(request)
        except ModelError as exc:
            if is_overload(exc):
                self._limit.refused(started, exc.retry_after)
            raise
        self._limit.succeeded(time.monotonic() - started)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)
