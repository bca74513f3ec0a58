"""How a collection stops before its end: a signal, too many failures, an auth failure.

Stopping has two steps. First no new rollout starts, and those in flight get a grace
period to finish (and be written). When it runs out, or at a second Ctrl-C / SIGTERM, or at
once for an auth failure (every other call would fail the same way), the rollouts still in
flight are cancelled; they are in neither file, so ``--resume`` runs them again.

:class:`ProcessSignals` holds SIGINT and SIGTERM for the whole of a ``gym`` command, so it
exits 130 whatever it is doing when they come: loading plugins, building the environment,
running, or writing the summary. First signal: stop as gently as the phase allows; second:
stop now. During the run it hands the signals to the run's :class:`RunControl`.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import signal
import sys
import threading
from typing import Any, Awaitable, Callable, ClassVar, TypeVar

T = TypeVar("T")

DEFAULT_GRACE = 30.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunControl:
    """The stop flag of one run, its reason, and the tasks to cancel when grace runs out."""

    def __init__(self, grace: float = DEFAULT_GRACE, notify: Callable[[str], None] = print):
        self.grace = grace
        self.notify = notify
        self.reason: str | None = None  # why the run stopped early (None: it did not)
        self.status = "completed"  # or "interrupted" (a signal), "stopped" (failures)
        self.tasks: list[asyncio.Task] = []
        self.in_flight: Callable[[], int] = lambda: 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals: list[tuple[int, Any]] = []

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def stop(self, reason: str, *, status: str = "stopped", at_once: bool = False) -> None:
        """Start no new rollout; cancel those in flight now (``at_once``) or after grace."""
        if self.reason is None:
            self.reason, self.status = reason, status
            if not at_once:
                if self.grace <= 0:
                    at_once = True
                else:
                    self._timer = asyncio.get_running_loop().call_later(self.grace, self._grace_over)
        if at_once:
            self.cancel()

    def _grace_over(self) -> None:
        if self.in_flight():
            self.notify(f"gym: grace period of {self.grace:g}s over: cancelling {self.in_flight()} rollouts in flight")
        self.cancel()

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    # --- signals --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Catch SIGINT and SIGTERM: from the command's :class:`ProcessSignals` when there is
        one, else on the running loop (main thread only; elsewhere a no-op)."""
        if ProcessSignals.current is not None:
            ProcessSignals.current.attach(self)
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
                continue
            self._signals.append((sig, previous))
        self._loop = loop

    def remove_signal_handlers(self) -> None:
        if ProcessSignals.current is not None:
            ProcessSignals.current.detach(self)
        if self._loop is not None:
            for sig, previous in self._signals:
                self._loop.remove_signal_handler(sig)
                if previous is not None:  # the caller's own handler, not asyncio's default
                    signal.signal(sig, previous)
        self._signals.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.stopping:
            self.notify(f"gym: {name} again: cancelling {self.in_flight()} rollouts in flight now")
            self.cancel()
            return
        self.notify(f"gym: {name}: starting no new rollouts; waiting up to {self.grace:g}s for the "
                    f"{self.in_flight()} in flight (Ctrl-C again to stop at once)")
        self.stop(f"interrupted by {name}", status="interrupted")


# --- the whole command ------------------------------------------------------------------------


class Interrupted(BaseException):
    """Stop now: a signal before the run started, or a second one. Not an ``Exception``, so
    no ``except Exception`` on the way (a plugin loader, a hook) takes it for an error."""


def _exit_130(signum: int, frame: Any) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ProcessSignals:
    """SIGINT and SIGTERM from the start of a command to its end; the command exits 130.

    * ``start``, before the event loop runs (plugins loading): stop at once, nothing started;
    * ``loop``, in the loop before the run proper (the environment being built, the input
      checked): stop when the loop next gets control, before any rollout starts;
    * ``run``: the run's :class:`RunControl` decides (grace, then cancel);
    * ``end``, after the run (the summary being written): finish it, then exit 130;
    * a second signal outside the run, or a third during it (a hook that blocks the event
      loop keeps the run's own handling from running), stops now: :class:`Interrupted` is
      raised where the program is, so ``finally`` blocks close the files;
    * one more after that (the blocking goes on) ends the process on the spot, as ``kill -9``
      would: each output line is flushed as it is written, so ``--resume`` continues.
    """

    current: ClassVar["ProcessSignals | None"] = None

    def __init__(self, notify: Callable[[str], None] = _say):
        self.notify = notify
        self.received: list[str] = []
        self.phase = "start"
        self.first_in: str | None = None  # the phase the first signal came in
        self.control: RunControl | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task | None = None
        self._previous: dict[int, Any] = {}
        self._raised = False

    def install(self) -> "ProcessSignals":
        if threading.current_thread() is threading.main_thread():  # signals reach only that one
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        ProcessSignals.current = self
        return self

    def uninstall(self) -> None:
        """Give the signals back. Where they had Python's defaults (the ``gym`` process), a
        signal from now until the process is gone exits 130 at once, and from interpreter
        shutdown on is ignored: the command is done and its files are closed, but a
        ``KeyboardInterrupt`` during shutdown, or Python's own default handlers restored at
        its very end, would exit 1 or -2 instead."""
        for sig, previous in self._previous.items():
            if previous in (signal.default_int_handler, signal.SIG_DFL):
                signal.signal(sig, _exit_130)
                atexit.register(signal.signal, sig, signal.SIG_IGN)
            else:
                signal.signal(sig, previous)
        self._previous.clear()
        if ProcessSignals.current is self:
            ProcessSignals.current = None

    async def main(self, work: Awaitable[T]) -> T:
        """Await ``work`` as the command's main task (``asyncio.run(signals.main(...))``)."""
        self._loop, self._main, self.phase = asyncio.get_running_loop(), asyncio.current_task(), "loop"
        try:
            return await work
        finally:
            self._main, self.phase = None, "end"

    def attach(self, control: RunControl) -> None:
        self._loop, self.control, self.phase = asyncio.get_running_loop(), control, "run"

    def detach(self, control: RunControl) -> None:
        if self.control is control:
            self.control, self.phase = None, "end"

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        self.first_in = self.first_in or self.phase
        if self.phase == "run" and len(self.received) < 3:
            self._loop.call_soon_threadsafe(self.control._on_signal, signum)  # type: ignore[union-attr]
            return
        if self._raised:  # stopping now did not end it (a hook blocks, again): as kill -9 would
            self.notify(f"gym: {name} again: exiting at once; every line written so far is kept")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        if len(self.received) > 1 or self.phase == "start":
            if len(self.received) > 1:
                self.notify(f"gym: {name} again: stopping now")
            self._raised = True
            raise Interrupted(name)
        if self.phase == "loop":  # gym collect: before the run proper; gym verify: all along
            self.notify(f"gym: {name}: stopping (again to stop at once)")
            self._loop.call_soon_threadsafe(self._stop_start_up, signum)  # type: ignore[union-attr]
            return
        self.notify(f"gym: {name}: finishing the summary, then stopping (again to stop at once)")

    def _stop_start_up(self, signum: int) -> None:
        if self.control is not None:  # the run began meanwhile: no rollout has run yet
            self.control._on_signal(signum)
        elif self._main is not None:
            self._main.cancel()


def exits_130_on_signals(command: Callable[..., T]) -> Callable[..., T]:
    """Run a click command under :class:`ProcessSignals`: after any SIGINT or SIGTERM it
    exits 130, whatever it was doing."""
    import click

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        signals = ProcessSignals().install()
        try:
            result = command(*args, **kwargs)
        except (Interrupted, asyncio.CancelledError):
            if not signals.received:
                raise
            if len(signals.received) == 1:
                where = " before the run started" if signals.first_in == "start" else ""
                signals.notify(f"gym: {signals.received[0]}: stopped{where}")
            raise click.exceptions.Exit(130) from None
        except click.exceptions.Exit as exc:
            if signals.received and exc.exit_code != 130:
                signals.notify(f"gym: {signals.received[0]} came as the run ended: exit status 130, not "
                               f"{exc.exit_code}")
                raise click.exceptions.Exit(130) from None
            raise
        finally:
            signals.uninstall()
        if signals.received:
            signals.notify(f"gym: {signals.received[0]} came as the run ended: nothing was cut")
            raise click.exceptions.Exit(130)
        return result

    return wrapper
