"""Responses API <-> Chat Completions, for servers that only speak the latter.

Request: ``instructions`` and ``developer`` messages become ``system`` messages (chat
templates of open models rarely know ``developer``); content parts map to chat parts;
consecutive ``function_call`` items join one assistant message's ``tool_calls``;
``function_call_output`` becomes a ``tool`` message; ``reasoning`` items of earlier turns
are dropped (chat templates strip earlier reasoning anyway); ``max_output_tokens`` becomes
``max_tokens``, the spelling every compatible server accepts.

Response: ``reasoning_content`` (vLLM, SGLang) or ``reasoning`` (Ollama) becomes a
``reasoning`` item, the message an ``output_text`` message, each tool call a
``function_call``; ``finish_reason == "length"`` makes the response ``incomplete``; usage
maps to ``input_tokens``/``output_tokens`` with cached and reasoning token details.
"""

from __future__ import annotations

from typing import Any

import orjson

from gymcore import responses

_SAMPLING = ("temperature", "top_p", "parallel_tool_calls", "seed", "stop", "user", "logprobs",
             "top_logprobs", "frequency_penalty", "presence_penalty", "n", "logit_bias", "service_tier")
_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def _content_to_chat(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("url")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_to_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat ``messages`` for a Responses request's ``instructions`` + ``input``."""
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
    items = request.get("input") or []
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(item.get("role", "user"), "user")
            messages.append({"role": role, "content": _content_to_chat(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_call_id" not in last:
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = _content_to_chat(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
        # reasoning and other item types carry nothing a chat template takes
    return messages


def _tool_to_chat(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function":
        return tool
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def request_to_chat(request: dict[str, Any], model: str) -> dict[str, Any]:
    """A Chat Completions body equivalent to a Responses request."""
    body: dict[str, Any] = {"model": model, "messages": input_to_messages(request)}
    for key in _SAMPLING:
        if request.get(key) is not None:
            body[key] = request[key]
    if request.get("max_output_tokens") is not None:
        body["max_tokens"] = request["max_output_tokens"]
    if request.get("tools"):
        body["tools"] = [_tool_to_chat(t) for t in request["tools"]]
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        body["tool_choice"] = choice
    effort = (request.get("reasoning") or {}).get("effort")
    if effort:
        body["reasoning_effort"] = effort
    fmt = (request.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    return body


def chat_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    return responses.usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached=(usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def chat_to_response(chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A Responses response body equivalent to a chat completion."""
    choice = chat["choices"][0]
    message = choice.get("message") or {}
    chat_id = chat.get("id") or "chatcmpl"
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        output.append({"type": "reasoning", "id": f"rs_{chat_id}", "summary": [],
                       "content": [{"type": "reasoning_text", "text": reasoning}]})
    content = message.get("content")
    if content:
        output.append({"type": "message", "id": f"msg_{chat_id}", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": content, "annotations": []}]})
    elif message.get("refusal"):
        output.append({"type": "message", "id": f"msg_{chat_id}", "role": "assistant", "status": "completed",
                       "content": [{"type": "refusal", "refusal": message["refusal"]}]})
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        arguments = function.get("arguments")
        output.append({"type": "function_call", "id": f"fc_{chat_id}_{i}", "call_id": call.get("id") or f"call_{i}",
                       "name": function["name"], "arguments": arguments if isinstance(arguments, str) else
                       orjson.dumps(arguments or {}).decode(), "status": "completed"})
    incomplete = choice.get("finish_reason") == "length"
    return responses.response(
        id=f"resp_{chat_id}", model=chat.get("model") or request.get("model") or "", output=output,
        request=request, status="incomplete" if incomplete else "completed", usage_=chat_usage(chat.get("usage")),
        created_at=chat.get("created"), incomplete_reason="max_output_tokens" if incomplete else None,
    )
