"""Replicas of one model behind several base URLs: which one a call goes to.

A rollout picks the replica with the fewest calls in flight on its first call (ties in
turn) and stays on it for all its calls, so the replica that saw its prefix can reuse its
cache; the choice is kept in the rollout's :mod:`gymcore.affinity` scope. A replica that
refuses a connection is passed over for :data:`DOWN_FOR_S` seconds; a rollout pinned to it
moves to another one (nothing of that call was sent).
"""

from __future__ import annotations

import itertools
import time

from gymcore.affinity import current_rollout

#: How long a replica that refused a connection is passed over.
DOWN_FOR_S = 5.0


def split_base_urls(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"http://a/v1,http://b/v1"`` (commas or spaces) or a list -> the base URLs, without a trailing ``/``."""
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    urls = [url.rstrip("/") for url in parts if url.strip()]
    return list(dict.fromkeys(urls))  # the same replica named twice is one replica


class Replica:
    __slots__ = ("url", "in_flight", "calls", "down_until")

    def __init__(self, url: str):
        self.url = url
        self.in_flight = 0
        self.calls = 0
        self.down_until = 0.0


class Replicas:
    """The replicas of one backend, with their load."""

    def __init__(self, urls: list[str]):
        self.replicas = [Replica(url) for url in urls]
        self._turn = itertools.count()

    def pick(self, tried: set[int] = frozenset()) -> Replica:
        """The running rollout's replica if it has one and it is up, else the least loaded
        one that is up and not in ``tried`` (the soonest back if every one is down)."""
        affinity = current_rollout()
        now = time.monotonic()
        pinned = affinity.choices.get(id(self)) if affinity is not None else None
        if pinned is not None and pinned.down_until <= now and id(pinned) not in tried:
            return pinned
        n = len(self.replicas)
        start = next(self._turn) % n
        best = None
        for i in range(n):
            replica = self.replicas[(start + i) % n]
            if id(replica) in tried or replica.down_until > now:
                continue
            if best is None or replica.in_flight < best.in_flight:
                best = replica
        if best is None:
            untried = [r for r in self.replicas if id(r) not in tried] or self.replicas
            best = min(untried, key=lambda r: r.down_until)
        if affinity is not None:
            affinity.choices[id(self)] = best
        return best

    @staticmethod
    def refused(replica: Replica) -> None:
        replica.down_until = time.monotonic() + DOWN_FOR_S
