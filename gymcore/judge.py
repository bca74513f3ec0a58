"""A judge model for ``verify``: ``gym collect --judge-model BACKEND:NAME``.

Many environments score with a model ("LLM as judge"). The judge is a model backend like
the policy's, built from the same plugins, called through the same retry policy; a
rollout's ``verify`` reaches it as ``session.judge`` (``None`` when no judge is configured):

* ``await session.judge.create_response(request)`` from an ``async def`` hook,
  ``session.judge.create_response_sync(request)`` from a plain ``def`` one (it runs in a
  worker thread), both taking and returning Responses-API dicts;
* ``await session.judge.ask(text)`` / ``ask_sync(text)``: the text of the answer to one
  user message.

A judge call that still fails after the retries raises :class:`JudgeError`, and the
rollout fails with class ``judge:<status or kind>``, whatever ``verify`` does with the
exception: a judge that did not answer never becomes a reward. Judge tokens are summed per
rollout into the output line's ``judge_usage`` and apart from the policy's in the summary.

When a rollout ends (given up by ``--timeout`` or a signal included), its judge is closed:
a ``def`` hook still waiting in ``*_sync`` gets ``CancelledError`` at once (the call is
cancelled, so its thread is freed and the judge spends nothing more on it), and any later
``*_sync`` call is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine

from .errors import GymError, ModelError
from .responses import final_text
from .retry import RetryPolicy, call_with_retries


class JudgeError(GymError):
    """The judge model failed after its retries; the rollout fails (class ``judge:...``)."""

    def __init__(self, cause: ModelError):
        self.kind, self.status, self.attempts = cause.kind, cause.status, cause.attempts
        super().__init__(f"the judge model failed: {cause}")

    def as_error(self) -> dict[str, Any]:
        """The rollout's ``error`` record."""
        return {"type": "judge", "kind": self.kind, "status": self.status, "message": str(self),
                "attempts": self.attempts}


class Judge:
    """The run's judge backend; :meth:`for_rollout` gives each rollout its own view."""

    def __init__(self, backend: Any, retry: RetryPolicy):
        self.backend, self.retry = backend, retry
        self.label: str = backend.label

    def for_rollout(self) -> "RolloutJudge":
        return RolloutJudge(self, asyncio.get_running_loop())

    async def aclose(self) -> None:
        await self.backend.aclose()


class RolloutJudge:
    """``session.judge``: the judge as one rollout sees it, counting that rollout's usage
    and remembering a failure even if ``verify`` swallowed the exception."""

    def __init__(self, judge: Judge, loop: asyncio.AbstractEventLoop):
        self._judge, self._loop = judge, loop
        self.label = judge.label
        self.calls = 0
        self.usage: dict[str, Any] = {}
        self.error: JudgeError | None = None
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future] = set()  # calls of def hooks in threads
        self._closed = False

    async def create_response(self, request: dict[str, Any]) -> dict[str, Any]:
        from .agent import add_usage

        try:
            response = await call_with_retries(self._judge.backend.create_response, request, self._judge.retry)
        except ModelError as exc:
            self.error = JudgeError(exc)
            raise self.error from None
        self.calls += 1
        add_usage(self.usage, response.get("usage"))
        return response

    def create_response_sync(self, request: dict[str, Any]) -> dict[str, Any]:
        """For a plain ``def`` hook, which gymcore runs in a worker thread: the call runs on
        the event loop and this thread waits for it."""
        if _on_loop(self._loop):
            raise RuntimeError("create_response_sync would block the event loop: await create_response instead")
        return self._wait(self.create_response(request))

    async def ask(self, text: str, **params: Any) -> str:
        """The judge's answer text to one user message (``params``: e.g. ``temperature``)."""
        response = await self.create_response({"input": [{"role": "user", "content": text}], **params})
        return final_text(response.get("output") or [])

    def ask_sync(self, text: str, **params: Any) -> str:
        if _on_loop(self._loop):
            raise RuntimeError("ask_sync would block the event loop: await ask instead")
        return self._wait(self.ask(text, **params))

    def _wait(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Run ``call`` on the rollout's loop and wait for it in this (hook) thread."""
        with self._lock:
            if self._closed:
                call.close()
                raise concurrent.futures.CancelledError("the rollout has ended (given up?): its judge takes no calls")
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
            self._waiting.add(future)
        try:
            return future.result()
        finally:
            with self._lock:
                self._waiting.discard(future)

    def close(self) -> None:
        """The rollout has ended: cancel the calls ``def`` hooks still wait for, refuse more."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, set()
        for future in waiting:
            future.cancel()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
