"""How a collection stops before its end: a signal, too many failures, an auth failure.

Stopping has two steps. First no new rollout starts, and those in flight get a grace
period to finish (and be written). When it runs out, or at a second Ctrl-C / SIGTERM, or at
once for an auth failure (every other call would fail the same way), the rollouts still in
flight are cancelled; they are in neither file, so ``--resume`` runs them again.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Callable

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
        self._signals: list[int] = []

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
        """Catch SIGINT and SIGTERM on the running loop (main thread only; elsewhere a no-op)."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
                continue
            self._signals.append(sig)
        self._loop = loop

    def remove_signal_handlers(self) -> None:
        if self._loop is not None:
            for sig in self._signals:
                self._loop.remove_signal_handler(sig)
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
