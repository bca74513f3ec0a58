"""Is the model there at all? A run none of whose model calls has succeeded stops at once, as
it does for a refused API key, when a rollout fails because the endpoint is not there: a
refused or lost connection, a call with no answer in time, a 404 or 405 (a wrong base URL,
most often one without ``/v1``). Without this, every rollout would go through its retries
first: 10,000 rollouts, an hour, and only a failures file to show for it.

Once any model call of the run has answered, the same errors are failures of their rollouts
and the run goes on (a server that restarts mid-run comes back; ``--max-failures`` bounds
the rest). "Answered" is known call by call for a backend in this process (:meth:`watch`),
and from finished rollouts (one with a model turn, or scored) for a ``gym serve`` runner.
"""

from __future__ import annotations

from typing import Any

from .data import Rollout
from .metrics import failure_class, sample_message

#: HTTP statuses that say the URL is wrong rather than the request.
WRONG_URL_STATUSES = frozenset({404, 405})


def unreachable_hint(error: dict[str, Any]) -> str | None:
    """The likely fix when ``error`` says the model endpoint is not there; ``None`` when it
    says something else (a bad request, an overloaded server, a plugin)."""
    if error.get("type") != "model":
        return None
    kind = error.get("kind")
    if kind == "connection":
        return "is the model server up yet (start it first and wait until it answers), and is the base URL right?"
    if kind == "timeout":
        return ("is the model server stuck or overloaded? Each call may take --model-timeout seconds; "
                "raise it if the model's replies are slow")
    if kind == "http" and error.get("status") in WRONG_URL_STATUSES:
        return ("does the base URL end in /v1 (e.g. http://localhost:8000/v1), and does the server offer this "
                "model and API?")
    return None


class ModelReach:
    """Whether any model call of this run has answered, and the stop reason when a failed
    rollout says the model is not there before one has."""

    def __init__(self) -> None:
        self.answered = False

    def watch(self, backend: Any) -> Any:
        """``backend``, noting here when one of its calls succeeds."""
        return _Watched(backend, self)

    def stop_reason(self, rollout: Rollout) -> str | None:
        """Why the run should stop now, or ``None``. Call it for every finished rollout."""
        error = rollout.error
        if error is None or rollout.turns:
            self.answered = True
        if self.answered or error is None:
            return None
        hint = unreachable_hint(error)
        if hint is None:
            return None
        message = sample_message(error.get("message"))  # names the URL; untrusted text on one line
        return f"no model call has succeeded ({failure_class(error)}: {message}); {hint}"


class _Watched:
    """A model backend whose successful calls are noted in a :class:`ModelReach`."""

    def __init__(self, backend: Any, reach: ModelReach):
        self._backend, self._reach = backend, reach
        self.label = backend.label

    async def create_response(self, request: Any) -> Any:
        response = await self._backend.create_response(request)
        self._reach.answered = True
        return response

    def __getattr__(self, name: str) -> Any:  # aclose, is_replay, a backend's own attributes
        return getattr(self._backend, name)
