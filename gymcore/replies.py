"""What a model's reply says about itself, whatever backend sent it.

An HTTP 200 is not always an answer. Two things a reply can say that the agent loop must
not take as a turn of the episode:

* **It failed**: ``status`` ``failed`` or ``cancelled``, or an ``error`` object. That is a
  model failure (class ``model:failed`` / ``model:cancelled``), raised inside the retry loop
  so it is retried like a 5xx, except when the error's code names a fault of the request
  (``invalid_prompt``, a bad image), which the same request would meet again. It is never
  verified, so never written as a reward.
* **It was cut off**: a function call whose arguments do not parse, in a reply that used all
  of the request's ``max_output_tokens``. Some servers (llama.cpp) report such a reply as
  ``completed``; run, the cut-off call (arguments ``"{"``) goes back into the next request
  and can make the server fail every time after. It is marked ``incomplete`` (the reply and
  the call), so the loop stops without running it and the rollout is verified as an
  incomplete reply, like any other reply cut off by the limit.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

from .backends import ModelBackend
from .errors import ModelError

#: ``error.code`` values of the Responses API that name a fault of the request itself
#: (``openai.types.responses.ResponseError``): another try gets the same answer.
REQUEST_FAULTS = frozenset({
    "invalid_prompt", "data_residency_mismatch", "bio_policy", "misalignment_policy_violation",
    "invalid_image", "invalid_image_format", "invalid_base64_image", "invalid_image_url",
    "image_too_large", "image_too_small", "image_parse_error", "image_content_policy_violation",
    "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type", "empty_image_file",
    "failed_to_download_image", "image_file_not_found",
})
#: Every ``error.code`` the Responses API defines (openai 3.57, ``ResponseError``).
RESPONSE_ERROR_CODES = REQUEST_FAULTS | {"server_error", "rate_limit_exceeded", "vector_store_timeout"}
FAILED_STATUSES = ("failed", "cancelled")


def carries_error(error: Any) -> bool:
    """Whether an ``error`` field reports something: ``null``, ``{}``, ``""`` or an object of
    nulls (which some servers send beside a good answer) do not."""
    if isinstance(error, dict):
        return any(value is not None and value != "" for value in error.values())
    if isinstance(error, str):
        return bool(error.strip())
    return bool(error)


def _describe(error: Any) -> tuple[Any, str]:
    """``(code, message)`` of an ``error`` value of any shape (a server's reply is untrusted)."""
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message")
        return (code if isinstance(code, (str, int)) else None), (message if isinstance(message, str) else "")
    if isinstance(error, str):
        return None, error
    return None, "" if error in (None, True) else repr(error)


def reply_failure(reply: dict[str, Any], label: str) -> ModelError | None:
    """The :class:`ModelError` a failed, cancelled or erroneous reply stands for, else None."""
    status, error = reply.get("status"), reply.get("error")
    if status not in FAILED_STATUSES and not carries_error(error):
        return None
    code, text = _describe(error)
    what = ("the model's response was cancelled" if status == "cancelled" else
            "the model's response failed" if status == "failed" else "the model's response carries an error")
    detail = ": ".join(str(part) for part in (code, text[:500]) if part)
    return ModelError(f"{label}: {what}" + (f" ({detail})" if detail else ""),
                      kind="cancelled" if status == "cancelled" else "failed",
                      retryable=False if code in REQUEST_FAULTS else None)


def checked(model: ModelBackend) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """``model.create_response`` raising the failure a reply stands for, so that
    :func:`gymcore.retry.call_with_retries` retries it like any other model error."""
    async def create_response(request: dict[str, Any]) -> dict[str, Any]:
        reply = await model.create_response(request)
        failure = reply_failure(reply, model.label)
        if failure is not None:
            raise failure
        return reply
    return create_response


def _parses(arguments: Any) -> bool:
    """Whether a call's arguments parse as the environment parses them (empty is ``{}``)."""
    if not isinstance(arguments, str) or not arguments.strip():
        return True
    try:
        orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return False
    return True


def mark_cut_off(reply: dict[str, Any], request: dict[str, Any]) -> None:
    """Mark, in place, the function calls of ``reply`` cut off by the output-token limit
    ``incomplete``, and the reply with them unless it says so already."""
    output = reply.get("output")
    if not isinstance(output, list):
        return
    incomplete = reply.get("status") == "incomplete"
    if not incomplete:
        limit = request.get("max_output_tokens") or reply.get("max_output_tokens")
        usage = reply.get("usage")
        used = usage.get("output_tokens") if isinstance(usage, dict) else None
        if type(limit) is not int or type(used) is not int or used < limit:
            return
    cut = [item for item in output if isinstance(item, dict)
           and item.get("type") == "function_call" and not _parses(item.get("arguments"))]
    for item in cut:
        item["status"] = "incomplete"
    if cut and not incomplete:
        reply["status"] = "incomplete"
        reply["incomplete_details"] = {"reason": "max_output_tokens"}
