"""One rollout's model calls as training rows: ``input_ids``, ``loss_mask``, ``logprobs``.

Built only from the token ids the server returned (``--return-tokens``), never from text:
a row is the first call's prompt ids, then per call the part of its prompt ids that is new
(tool output, the next user turn, the chat template's glue: ``loss_mask`` 0) and its
generation ids (``loss_mask`` 1, with their logprobs). ``logprobs`` holds 0.0 where
``loss_mask`` is 0, as TRL's async rollout worker does (``TrainingSequence.old_log_probs``,
"generator logprobs, 0.0 where mask is 0", ``trl/experimental/async_grpo/async_rollout_worker.py``,
TRL 1.10.0.dev0 at f2cd577): every position has a float a trainer can put in a tensor, and
the mask says which ones are real.

**Drift**: a call's prompt ids do not start with the previous call's prompt + generation ids
(the chat template re-rendered an earlier turn, dropped its reasoning, or the history was
cut). The row cannot go on without splicing tokens the model never saw. ``on_drift``:

* ``"strict"``: raise :class:`DriftError` naming the call and the first differing position;
* ``"fork"``: start a new row at that call, its whole prompt as context. Each row is then
  exactly what the server saw and generated. TRL's async worker forks the same way (there a
  drift inside the last answer smaller than ``fork_threshold_tokens`` is first "realigned",
  masking the drifted trained tokens to context; we never rewrite tokens, so any drift forks).
"""

from __future__ import annotations

from typing import Any, Literal

from ..tokens import GENERATION_IDS, GENERATION_LOGPROBS, PROMPT_IDS

DriftMode = Literal["fork", "strict"]


class DriftError(ValueError):
    """A call's prompt ids do not extend the previous call's prompt + generation ids."""

    def __init__(self, call: int, position: int, where: str):
        self.call, self.position = call, position
        super().__init__(f"{where}: model call {call}'s prompt_token_ids differ from the previous call's "
                         f"prompt + generation at token {position} (drift; on_drift='fork' starts a new row there)")


def _line_of(rollout: Any) -> dict[str, Any]:
    """An output line from a line dict or a :class:`gymcore.data.Rollout`."""
    if isinstance(rollout, dict):
        return rollout
    from ..data import converter

    return converter.unstructure(rollout)


def _where(line: dict[str, Any]) -> str:
    return f"rollout (task_index {line.get('task_index')}, rollout_index {line.get('rollout_index')})"


def model_calls(rollout: Any) -> list[tuple[list[int], list[int], list[float]]]:
    """``(prompt ids, generation ids, logprobs)`` of each model call of a scored rollout, in
    order; ``ValueError`` for a failure (never training data) or a rollout without tokens."""
    line = _line_of(rollout)
    where = _where(line)
    if line.get("error") is not None or line.get("reward") is None:
        raise ValueError(f"{where} failed (error set or no reward): a failure is never training data")
    output = (line.get("response") or {}).get("output") or []
    calls = []
    for i, item in enumerate(output):
        if not isinstance(item, dict) or GENERATION_IDS not in item:
            continue
        prompt, generation, logprobs = item.get(PROMPT_IDS), item[GENERATION_IDS], item.get(GENERATION_LOGPROBS)
        if not (isinstance(prompt, list) and isinstance(generation, list) and isinstance(logprobs, list)):
            raise ValueError(f"{where}: output[{i}] has incomplete token fields")
        if len(generation) != len(logprobs):
            raise ValueError(f"{where}: output[{i}] has {len(generation)} generation_token_ids but "
                             f"{len(logprobs)} generation_log_probs")
        calls.append((prompt, generation, logprobs))
    if not calls:
        raise ValueError(f"{where} carries no token ids: collect it with --return-tokens (openai-chat: on vLLM)")
    return calls


def _first_difference(held: list[int], prompt: list[int]) -> int:
    limit = min(len(held), len(prompt))
    for i in range(limit):
        if held[i] != prompt[i]:
            return i
    return limit


def to_sequences(rollout: Any, on_drift: DriftMode = "fork") -> list[dict[str, Any]]:
    """Training rows of one rollout (an output line dict, or a :class:`gymcore.data.Rollout`):
    each ``{"input_ids", "loss_mask", "logprobs", "reward", "task_index", "rollout_index",
    "calls"}``, ``calls`` being the indices of the model calls it holds. One row unless a
    call drifts and ``on_drift`` is ``"fork"``."""
    if on_drift not in ("fork", "strict"):
        raise ValueError(f"on_drift must be 'fork' or 'strict', got {on_drift!r}")
    line = _line_of(rollout)
    calls = model_calls(line)
    rows: list[dict[str, Any]] = []
    ids: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    members: list[int] = []
    for index, (prompt, generation, values) in enumerate(calls):
        extends = bool(ids) and len(prompt) >= len(ids) and prompt[:len(ids)] == ids
        if ids and not extends:
            if on_drift == "strict":
                raise DriftError(index, _first_difference(ids, prompt), _where(line))
            rows.append({"input_ids": ids, "loss_mask": mask, "logprobs": logprobs, "calls": members})
            ids, mask, logprobs, members = [], [], [], []
        new = prompt[len(ids):]
        ids.extend(new)
        mask.extend([0] * len(new))
        logprobs.extend([0.0] * len(new))
        ids.extend(generation)
        mask.extend([1] * len(generation))
        logprobs.extend(float(v) for v in values)
        members.append(index)
    rows.append({"input_ids": ids, "loss_mask": mask, "logprobs": logprobs, "calls": members})
    for row in rows:
        row.update(reward=line.get("reward"), task_index=line.get("task_index"),
                   rollout_index=line.get("rollout_index"))
    return rows
