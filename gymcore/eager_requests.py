"""Each HTTP request leaves the moment it is made, on Python 3.11 as on 3.12+.

aiohttp writes a request's body from a task of its own. On Python 3.12+ it starts that task
eagerly, so the request goes out at once. On 3.11 the task waits for the next turn of the
event loop, so every request made in one turn goes out together in the next. Against a model
server of steady latency, rollouts whose answers came together then ask together again, and
again: each call waits behind the rest of its bunch. At 100 ms and 64 in flight that cost
about 0.03 of the model-bound limit (``bench/run.py``; the README's performance section).

:func:`requests_sent_at_once` gives a 3.11 event loop, for a ``with`` block, a task factory
that runs the first step of aiohttp's body writer at once, as 3.12's eager tasks do, and makes
every other task exactly as asyncio would. One difference remains: during that first step
``asyncio.current_task()`` is the caller's task, which aiohttp's writer does not look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
from typing import Any, Coroutine, Iterator

#: The coroutine aiohttp's ``ClientRequest.send`` hands to ``asyncio.create_task``.
BODY_WRITER = "ClientRequest.write_bytes"


@contextlib.contextmanager
def requests_sent_at_once(loop: asyncio.AbstractEventLoop | None = None) -> Iterator[bool]:
    """For the ``with`` block, make ``loop`` (the running one by default) send aiohttp
    requests at once; yield whether this block installed the task factory that does it.

    Python 3.12+ needs nothing. A loop that already has a task factory (someone else's, or
    this one from an enclosing block) is left alone, and so is the loop after the block."""
    loop = loop or asyncio.get_running_loop()
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        yield False
        return
    loop.set_task_factory(_task_factory)
    try:
        yield True
    finally:
        if loop.get_task_factory() is _task_factory:
            loop.set_task_factory(None)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                  **kwargs: Any) -> asyncio.Future:
    if getattr(coro, "__qualname__", None) != BODY_WRITER:
        return asyncio.Task(coro, loop=loop, **kwargs)
    context = kwargs.pop("context", None) or contextvars.copy_context()
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration as done:  # the usual case: the body fit in the socket's buffer
        future = loop.create_future()
        future.set_result(done.value)
        return future
    except BaseException as exc:  # kept for whoever awaits it, as an eager task keeps it
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return asyncio.Task(_go_on(coro, waiting_on), loop=loop, context=context, **kwargs)


async def _go_on(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Run ``coro`` on from where its eager first step stopped: wait for what it waits for,
    then resume it, until it returns. It reads the outcome of what it awaited itself."""
    while True:
        cancelled: BaseException | None = None
        try:
            if waiting_on is None:  # a bare yield (asyncio.sleep(0)): one turn of the loop
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False  # taken over, as a Task takes it
                await waiting_on
        except asyncio.CancelledError as exc:
            if waiting_on is None or not waiting_on.cancelled():
                cancelled = exc  # this task was cancelled, not the future: tell the coroutine
        except BaseException:
            pass  # the future failed: the coroutine raises it when resumed
        try:
            waiting_on = coro.throw(cancelled) if cancelled is not None else coro.send(None)
        except StopIteration as done:
            return done.value
