"""The ``replay`` model backend: answers with the model turns of a recorded rollouts file.

Offline and deterministic: demos and tests run a whole environment (its tools and
``verify`` for real) with no API key. It is gymcore's own plugin, registered through the
``gym.models`` entry point like any other.

``--model replay`` replays the environment's bundled ``example_rollouts`` file;
``--model replay:PATH`` replays the file at PATH.

Matching is stateless: a request's ``input`` starts with a recorded rollout's original
input; the items after it are the episode so far, so their count says which model turn
comes next (all consecutive non-tool-output items of the recorded episode).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson

from . import hookimpl, responses
from .errors import GymError, ModelError

_ids = itertools.count(1)


def _key(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(items, option=orjson.OPT_SORT_KEYS)


class ReplayBackend:
    """Replays recorded episodes; see the module docstring."""

    is_replay = True

    def __init__(self, path: Path):
        self.path = path
        self.label = f"replay:{path.name}"
        self._episodes: dict[bytes, list[dict[str, Any]]] = {}
        try:
            fp = open(path, "rb")
        except OSError as exc:
            raise GymError(f"replay: cannot open {path}: {exc.strerror}") from None
        with fp:
            for line_no, raw in enumerate(fp, start=1):
                if not raw.strip():
                    continue
                try:
                    row = orjson.loads(raw)
                    value = row["responses_create_params"]["input"]
                    output = row["response"]["output"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise GymError(f"{path}:{line_no}: not a recorded rollout ({type(exc).__name__}: {exc})") from None
                items = [{"role": "user", "content": value}] if isinstance(value, str) else value
                # The first recording of an input wins: replay is deterministic.
                self._episodes.setdefault(_key(items), output)
        self._n_items: dict[bytes, int] = {k: len(orjson.loads(k)) for k in self._episodes}

    async def create_response(self, request: dict[str, Any]) -> dict[str, Any]:
        items = request.get("input") or []
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        episode, start = self._find(items)
        turn = []
        for item in episode[start:]:
            if item.get("type") == "function_call_output":
                if turn:
                    break
                continue
            turn.append(item)
        if not turn:
            raise ModelError(f"replay: the recording in {self.path} has no model turn at item {start}",
                             kind="protocol")
        return responses.response(id=f"resp_replay_{next(_ids)}", model=self.label, output=turn,
                                  request=request, created_at=0)

    def _find(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        # Try the longest possible original-input prefix first (usually the whole prompt).
        for n in sorted(set(self._n_items.values()), reverse=True):
            if n <= len(items):
                episode = self._episodes.get(_key(items[:n]))
                if episode is not None and self._n_items[_key(items[:n])] == n:
                    return episode, len(items) - n
        raise ModelError(f"replay: no recorded rollout in {self.path} starts with this input", kind="protocol")

    async def aclose(self) -> None:
        return None


def _factory(name: str, context: Any) -> ReplayBackend:
    if name:
        return ReplayBackend(Path(name))
    env = getattr(context, "environment", None)
    if env is None:
        raise GymError("replay: give a file (--model replay:PATH) or an agent that bundles example rollouts")
    path = env.example_rollouts_path
    if path is None:
        raise GymError(f"replay: agent {env.name!r} bundles no example rollouts; use --model replay:PATH")
    return ReplayBackend(Path(path))


@hookimpl
def register_models(register):
    register("replay", _factory, "REPLAY of recorded model turns (offline; no real model is called)")
