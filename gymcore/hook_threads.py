"""The threads plain ``def`` hooks run in: a pool of its own per environment, sized to the
work, that a hook which never returns cannot starve and cannot keep the process alive.

asyncio's default pool (``asyncio.to_thread``) has ``min(32, cores + 4)`` threads shared by
everything: on 2 cores, 6 blocked tool calls stalled every rollout, their ``teardown_session``
queued behind them, and ``asyncio.run`` waited forever for the stuck threads at exit. Here:

* up to ``size`` calls run at once (a collection passes ``--parallel``, bounded by
  :data:`MAX_THREADS`); more wait, cancellably, for a slot. Threads start when needed and
  end after :data:`IDLE_SECONDS` unused, so the pool costs nothing when hooks are async.
* a call whose caller stops waiting (``--timeout``, Ctrl-C, a closed connection) gives its
  slot back at once; its thread runs on, is counted in :meth:`HookThreads.stuck` until it
  returns, and its result is dropped.
* threads are daemons: the process exits when the run is done, stuck threads or not.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import Counter
from typing import Any, Callable

#: At most this many ``def`` hook calls at once per environment, whatever ``--parallel`` is:
#: a thread each (blocking work beyond that belongs in ``async def`` hooks).
MAX_THREADS = 256
#: An unused thread ends after this long.
IDLE_SECONDS = 10.0


class _Call:
    __slots__ = ("fn", "kwargs", "label", "loop", "future", "abandoned")

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any], label: str,
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.fn, self.kwargs, self.label, self.loop, self.future = fn, kwargs, label, loop, future
        self.abandoned = False


def _deliver(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class HookThreads:
    """Runs blocking hook calls for coroutines on one event loop; see the module docstring."""

    def __init__(self, size: int = MAX_THREADS, *, name: str = "gym-hook"):
        self.size = max(1, min(size, MAX_THREADS))
        self.name = name
        self._slots: asyncio.Semaphore | None = None
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a call, not yet claimed by one
        self._threads = 0
        self._running: set[_Call] = set()

    async def run(self, label: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn(**kwargs)`` in a thread of the pool; ``label`` (``plugin.hook``) names it in
        :meth:`stuck`. Cancelling the caller returns at once; the thread runs on."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            loop = asyncio.get_running_loop()
            call = _Call(fn, kwargs, label, loop, loop.create_future())
            self._submit(call)
            try:
                return await call.future
            except asyncio.CancelledError:
                with self._lock:
                    call.abandoned = call in self._running  # queued calls are dropped unrun
                raise

    def stuck(self) -> Counter[str]:
        """Calls still running in a thread that nobody waits for any more, by ``plugin.hook``."""
        with self._lock:
            return Counter(call.label for call in self._running if call.abandoned)

    # --- threads ---------------------------------------------------------------------------

    def _submit(self, call: _Call) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._queue.put(call)
                return
            self._threads += 1
        try:
            threading.Thread(target=self._work, args=(call,), name=f"{self.name}-{self._threads}",
                             daemon=True).start()
        except RuntimeError as exc:  # the system refused another thread
            with self._lock:
                self._threads -= 1
            call.future.set_exception(exc)

    def _work(self, call: _Call | None) -> None:
        while True:
            if call is None:
                try:
                    call = self._queue.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    with self._lock:
                        if not self._queue.empty():  # claimed just now: take it
                            continue
                        self._idle -= 1
                        self._threads -= 1
                    return
            self._run(call)
            call = None
            with self._lock:
                self._idle += 1

    def _run(self, call: _Call) -> None:
        with self._lock:
            if call.future.cancelled():  # given up before it started: never run it
                return
            self._running.add(call)
        result, error = None, None
        try:
            result = call.fn(**call.kwargs)
        except BaseException as exc:  # handed to the caller, as asyncio.to_thread does
            error = exc
        finally:
            with self._lock:
                self._running.discard(call)
        try:
            call.loop.call_soon_threadsafe(_deliver, call.future, result, error)
        except RuntimeError:  # the loop is closed: the run ended while this call was stuck
            pass


def stuck_summary(stuck: dict[str, int]) -> dict[str, Any]:
    """The run summary's word on calls that never returned (their threads are left behind
    so the process can exit): ``hook_calls_stuck`` and a note; nothing when there are none."""
    if not stuck:
        return {}
    count = sum(stuck.values())
    where = ", ".join(f"{label} x{n}" for label, n in sorted(stuck.items()))
    return {"hook_calls_stuck": count,
            "hook_calls_stuck_note": f"{count} plain def hook calls ({where}) had not returned when the run "
                                     "ended; their rollouts were given up (--timeout, a signal) and their "
                                     "threads left behind; the process exits anyway"}
