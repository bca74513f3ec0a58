"""Which rollout a model call belongs to, for backends that keep a rollout on one replica.

A backend sees only requests. :func:`run_rollout` opens a fresh :class:`RolloutAffinity` at
its start (a context variable, so it follows the rollout's awaits and nothing else); a
backend spreading calls over replicas of one model records its choice there on the first
call and reads it back on the next ones, so every call of a rollout reaches the replica
that already holds its prefix in cache. The choice goes away with the rollout: no table to
clean up.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any


class RolloutAffinity:
    """Per-rollout choices of backends, keyed by whatever the backend likes (its own id)."""

    __slots__ = ("choices",)

    def __init__(self) -> None:
        self.choices: dict[Any, Any] = {}


_CURRENT: ContextVar[RolloutAffinity | None] = ContextVar("gym_rollout_affinity", default=None)


def start_rollout() -> RolloutAffinity:
    """Called at the start of each rollout: later model calls in this task see a fresh scope."""
    affinity = RolloutAffinity()
    _CURRENT.set(affinity)
    return affinity


def current_rollout() -> RolloutAffinity | None:
    """The running rollout's scope; ``None`` outside a rollout (a bare backend call)."""
    return _CURRENT.get()
