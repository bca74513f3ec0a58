"""Exact token ids per model call (``--return-tokens``), under NeMo Gym's names.

A trainer cannot learn from text re-tokenized after the fact; it needs, per model call, the
token ids the server saw and produced and their logprobs. A backend asked for them puts
three fields on the **last output item of each model call**, as NeMo Gym does
(``nemo_gym/openai_utils.py``, ``TokenIDLogProbMixin``; ``nemo_gym/responses_converter.py``
puts them on ``response_output[-1]``, NVIDIA-NeMo/Gym at 07d6b0d, Aug 2026):

* ``prompt_token_ids``: the whole prompt of that call, as the server tokenized it;
* ``generation_token_ids``: what the model generated;
* ``generation_log_probs``: one logprob per generated token.

The item goes back, fields and all, in the next request's input; a Chat Completions backend
puts them on that assistant message (NeMo Gym's documented contract, which lets a patched
server splice the exact earlier tokens instead of re-tokenizing).

A call asked for tokens that came back without them, or with a logprob that is not a finite
number, is a failure (class ``model:no_tokens``), never a turn with empty, zero-filled or
null-holed arrays: fabricated tokens must never reach training.
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable

from .errors import ModelError

PROMPT_IDS = "prompt_token_ids"
GENERATION_IDS = "generation_token_ids"
GENERATION_LOGPROBS = "generation_log_probs"
#: the fields on the last output item of each model call
TOKEN_FIELDS = (PROMPT_IDS, GENERATION_IDS, GENERATION_LOGPROBS)


def no_tokens(label: str, detail: str) -> ModelError:
    """The failure of a call asked for tokens that came back without them. Not retried: a
    server that does not return tokens will not start on a second try."""
    return ModelError(f"{label}: asked for token ids (--return-tokens) but {detail}", kind="no_tokens",
                      retryable=False)


def call_tokens(item: Any) -> tuple[list[int], list[int], list[float]] | None:
    """``(prompt ids, generation ids, logprobs)`` an output item carries, else ``None``."""
    if not isinstance(item, dict) or GENERATION_IDS not in item:
        return None
    return item.get(PROMPT_IDS), item.get(GENERATION_IDS), item.get(GENERATION_LOGPROBS)


def missing(reply: dict[str, Any]) -> str | None:
    """What is wrong with the tokens of ``reply`` (a Responses body), or ``None`` if its last
    output item carries all three fields, well-formed."""
    output = reply.get("output")
    if not isinstance(output, list) or not output:
        return "the reply has no output item to carry them"
    last = output[-1]
    if not isinstance(last, dict):
        return "the reply's last output item is not an object"
    absent = [name for name in TOKEN_FIELDS if not isinstance(last.get(name), list)]
    if absent:
        return f"the reply's last output item has no {', '.join(absent)}"
    if not last[PROMPT_IDS] or not last[GENERATION_IDS]:
        return "the reply's token lists are empty"
    if len(last[GENERATION_IDS]) != len(last[GENERATION_LOGPROBS]):
        return (f"{len(last[GENERATION_IDS])} generation_token_ids but "
                f"{len(last[GENERATION_LOGPROBS])} generation_log_probs")
    try:  # one pass in C: a null or a string raises, a NaN or an infinity makes the sum one
        total = sum(last[GENERATION_LOGPROBS])
    except TypeError:
        return "the reply's generation_log_probs hold a value that is not a number"
    if not math.isfinite(total):
        return "the reply's generation_log_probs hold a value that is not a finite number"
    return None


def requiring_tokens(create_response: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                     label: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """``create_response`` raising ``model:no_tokens`` for a reply without tokens, whatever
    the backend (one that ignores ``ModelContext.return_tokens`` included). Failed replies
    are raised before, as what they are."""
    async def call(request: dict[str, Any]) -> dict[str, Any]:
        reply = await create_response(request)
        problem = missing(reply)
        if problem is not None:
            raise no_tokens(label, problem)
        return reply
    return call


def is_monotonic(items: list[dict[str, Any]]) -> bool | None:
    """Whether every call's prompt ids start with the previous call's prompt + generation
    ids (one token stream a trainer can use as is); ``None`` if no item carries tokens."""
    seen: tuple[list[int], list[int]] | None = None
    for item in items:
        tokens = call_tokens(item)
        if tokens is None:
            continue
        prompt, generation, _ = tokens
        if seen is not None:
            before, generated = seen
            start, end = len(before), len(before) + len(generated)
            if prompt[:start] != before or prompt[start:end] != generated:
                return False
        seen = prompt, generation
    return None if seen is None else True
