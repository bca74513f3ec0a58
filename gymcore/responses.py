"""Small builders for Responses-API bodies, so every backend returns the same full shape
(one that ``openai.types.responses.Response`` validates), and readers of an episode's
``output`` items for ``verify`` implementations."""

from __future__ import annotations

import time
from typing import Any


def usage(input_tokens: int = 0, output_tokens: int = 0, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def response(
    *,
    id: str,
    model: str,
    output: list[dict[str, Any]],
    request: dict[str, Any] | None = None,
    status: str = "completed",
    usage_: dict[str, Any] | None = None,
    created_at: float | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses-API response body; echoes the request's sampling fields as OpenAI does."""
    request = request or {}
    return {
        "id": id,
        "object": "response",
        "created_at": int(created_at if created_at is not None else time.time()),
        "model": model,
        "status": status,
        "output": output,
        "usage": usage_ or usage(),
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.get("instructions"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "max_output_tokens": request.get("max_output_tokens"),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
    }


def message_text(item: dict[str, Any]) -> str:
    """The text of a message item: its string ``content`` or its text parts, joined."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def final_text(output: list[dict[str, Any]]) -> str:
    """The text of the episode's last assistant message ('' if there is none): the final
    answer that ``verify`` usually judges."""
    for item in reversed(output):
        if item.get("type", "message") == "message" and item.get("role") == "assistant":
            return message_text(item)
    return ""
