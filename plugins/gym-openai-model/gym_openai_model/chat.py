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
maps to ``input_tokens``/``output_tokens`` with cached and reasoning token details. A 200
that is no answer keeps saying so: an ``error`` object (at the top, as proxies send, or in
the choice, as OpenRouter does) or ``finish_reason == "error"`` makes the response
``failed`` with that error, ``finish_reason == "abort"`` makes it ``cancelled``; gymcore
files both as model failures (:mod:`gymcore.replies`), never as an answer.

Token ids (``--return-tokens``): the request asks the server for them the way vLLM does
(see :func:`token_request_fields`); the reply's ids and logprobs go on the last output
item under NeMo Gym's names (:mod:`gymcore.tokens`), and come back on that assistant
message in the next request. A reply without them raises ``ModelError`` kind ``no_tokens``.

Both directions take shapes that may be malformed (a server's answer is untrusted): anything
that cannot be converted raises :class:`ModelError` (kind ``protocol``) naming the field,
never a stray ``AttributeError``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gymcore import responses
from gymcore.errors import ModelError
from gymcore.replies import RESPONSE_ERROR_CODES, carries_error
from gymcore.tokens import GENERATION_IDS, GENERATION_LOGPROBS, PROMPT_IDS, TOKEN_FIELDS, no_tokens

_SAMPLING = ("temperature", "top_p", "parallel_tool_calls", "seed", "stop", "user", "logprobs",
             "top_logprobs", "frequency_penalty", "presence_penalty", "n", "logit_bias", "service_tier")
_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def _malformed(where: str, expected: str, value: Any) -> ModelError:
    return ModelError(f"cannot convert {where}: expected {expected}, got {type(value).__name__}", kind="protocol")


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(where, "an object", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(where, "a list", value)
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(where, "a string", value)
    return value


def _content_to_chat(content: Any, where: str = "content") -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(_list(content, where)):
        part = _dict(part, f"{where}[{i}]")
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


def _carry_tokens(item: dict[str, Any], message: dict[str, Any]) -> None:
    """Put the token fields an output item of an earlier call carries on its assistant message."""
    for name in TOKEN_FIELDS:
        if name in item:
            message[name] = item[name]


def input_to_messages(request: dict[str, Any], tokens: bool = False) -> list[dict[str, Any]]:
    """The chat ``messages`` for a Responses request's ``instructions`` + ``input``; with
    ``tokens``, an assistant message carries the token fields of the items it is made of."""
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": _text(request["instructions"], "instructions")})
    items = request.get("input") or []
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for i, item in enumerate(_list(items, "input")):
        item = _dict(item, f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(_text(item.get("role", "user"), f"input[{i}].role"), "user")
            messages.append({"role": role, "content": _content_to_chat(item.get("content"), f"input[{i}].content")})
            if tokens and role == "assistant":
                _carry_tokens(item, messages[-1])
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
            if tokens:
                _carry_tokens(item, messages[-1])
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = _content_to_chat(output, f"input[{i}].output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
        # reasoning and other item types carry nothing a chat template takes
    return messages


def _tool_to_chat(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function":
        return tool
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def token_request_fields(request: dict[str, Any]) -> dict[str, Any]:
    """What a chat request adds to get token ids and logprobs back, as vLLM (>= 0.10.2)
    defines them in ``vllm/entrypoints/openai/protocol.py`` (v0.10.2; in later releases
    ``vllm/entrypoints/openai/chat_completion/protocol.py``): ``ChatCompletionRequest.
    return_token_ids`` puts ``prompt_token_ids`` on the ``ChatCompletionResponse`` and
    ``token_ids`` on each ``ChatCompletionResponseChoice``; ``logprobs`` fills
    ``choice.logprobs.content[].logprob`` (``return_token_ids``: vllm-project/vllm PR #22587,
    merged August 2025, first released in v0.10.2; PR #28256, November 2025, fixed
    ``token_ids`` missing with a reasoning parser: such an older server answers without
    them, which is ``model:no_tokens``). ``top_logprobs`` 0 (not null: vLLM takes null as
    "no logprobs", as NeMo Gym's ``responses_api_models/vllm_model/app.py`` notes). ``n`` is
    1: one choice, one token stream."""
    top = request.get("top_logprobs")
    return {"n": 1, "logprobs": True, "top_logprobs": top if isinstance(top, int) else 0, "return_token_ids": True}


def request_to_chat(request: dict[str, Any], model: str, tokens: bool = False) -> dict[str, Any]:
    """A Chat Completions body equivalent to a Responses request; with ``tokens``, one that
    asks for token ids and logprobs and hands back earlier calls' tokens."""
    body: dict[str, Any] = {"model": model, "messages": input_to_messages(request, tokens)}
    for key in _SAMPLING:
        if request.get(key) is not None:
            body[key] = request[key]
    if request.get("max_output_tokens") is not None:
        body["max_tokens"] = request["max_output_tokens"]
    if request.get("tools"):
        body["tools"] = [_tool_to_chat(_dict(t, f"tools[{i}]")) for i, t in enumerate(_list(request["tools"], "tools"))]
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        body["tool_choice"] = choice
    effort = _dict(request.get("reasoning") or {}, "reasoning").get("effort")
    if effort:
        body["reasoning_effort"] = effort
    fmt = _dict(request.get("text") or {}, "text").get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    if tokens:
        body.update(token_request_fields(request))
    return body


def _tokens(usage: dict[str, Any], key: str, where: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise _malformed(f"{where}.{key}", "a token count", value)
    return value


def chat_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt = _dict(usage.get("prompt_tokens_details") or {}, "usage.prompt_tokens_details")
    completion = _dict(usage.get("completion_tokens_details") or {}, "usage.completion_tokens_details")
    return responses.usage(
        input_tokens=_tokens(usage, "prompt_tokens", "usage"),
        output_tokens=_tokens(usage, "completion_tokens", "usage"),
        cached=_tokens(prompt, "cached_tokens", "usage.prompt_tokens_details"),
        reasoning=_tokens(completion, "reasoning_tokens", "usage.completion_tokens_details"),
    )


#: ``finish_reason`` values that end a choice without an answer, and the Responses
#: ``status`` they become. vLLM sends both (``vllm/v1/engine/__init__.py``,
#: ``FINISH_REASON_STRINGS``: "abort - aborted by client", which includes the engine
#: pausing with mode "abort" for a weight update, and "error - retryable request-level
#: internal error (e.g. KV load failure)", added by vllm-project/vllm PR #26813, merged
#: late October 2025, so in releases from v0.11.1; its non-streaming handlers turn "error"
#: into a 500, yet it reaches clients through streams and proxies). OpenRouter sends
#: "error" with an ``error`` object in the choice.
FAILED_FINISH = {"error": "failed", "abort": "cancelled"}


def _chat_error(error: Any, finish_reason: Any) -> dict[str, Any]:
    """A Responses ``error`` for a chat error of any shape: a code the Responses API knows
    (else ``server_error``, the server's own code kept in the message) and a message."""
    if not carries_error(error):
        return {"code": "server_error", "message": f"finish_reason {finish_reason!r}"}
    if not isinstance(error, dict):
        return {"code": "server_error", "message": str(error)[:500]}
    code = error.get("code") or error.get("type")
    message = str(error.get("message") or "")[:500]
    if isinstance(code, str) and code in RESPONSE_ERROR_CODES:
        return {"code": code, "message": message}
    if code is not None:
        message = f"{str(code)[:100]}: {message}" if message else str(code)[:100]
    return {"code": "server_error", "message": message}


def _reply_tokens(chat: dict[str, Any], choice: dict[str, Any], label: str) -> dict[str, list[Any]]:
    """The NeMo Gym token fields of a vLLM reply, or ``model:no_tokens``. Containers and
    lengths are checked, not every element (as NeMo Gym's vLLM adapter does: a 30k-token
    prompt per call is not scanned twice)."""
    prompt = chat.get("prompt_token_ids")
    generation = choice.get("token_ids")
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    absent = [name for name, value in (("prompt_token_ids", prompt), ("choices[0].token_ids", generation),
                                       ("choices[0].logprobs.content", content)) if not isinstance(value, list)]
    if absent:
        raise no_tokens(label, f"the server's reply has no {', '.join(absent)} (is it vLLM >= 0.10.2?)")
    if not prompt or not generation:
        raise no_tokens(label, "the server's reply has empty token ids")
    if len(content) != len(generation):
        raise no_tokens(label, f"the server's reply has {len(generation)} token_ids but {len(content)} logprobs")
    try:
        values = [entry["logprob"] for entry in content]
    except (TypeError, KeyError):
        raise no_tokens(label, "a choices[0].logprobs.content entry has no logprob") from None
    return {PROMPT_IDS: prompt, GENERATION_IDS: generation, GENERATION_LOGPROBS: values}


def chat_to_response(chat: Any, request: dict[str, Any], tokens: bool = False, label: str = "") -> dict[str, Any]:
    """A Responses response body equivalent to a chat completion; :class:`ModelError` if
    ``chat`` is not one. With ``tokens``, its last output item carries the call's token ids
    and logprobs (an empty assistant message if the model generated no text, so that the
    generated tokens, an end-of-turn token at least, are recorded)."""
    chat = _dict(chat, "the chat completion")
    if carries_error(chat.get("error")):  # a 200 whose body is an error: a failed response, no output
        return responses.response(id=f"resp_{chat.get('id') or 'chatcmpl'}", model=str(chat.get("model") or ""),
                                  output=[], request=request, status="failed",
                                  error=_chat_error(chat["error"], None))
    choices = _list(chat.get("choices"), "choices")
    if not choices:
        raise ModelError("cannot convert the chat completion: it has no choices", kind="protocol")
    choice = _dict(choices[0], "choices[0]")
    message = _dict(choice.get("message") or {}, "choices[0].message")
    chat_id = chat.get("id") or "chatcmpl"
    if not isinstance(chat_id, str):
        raise _malformed("id", "a string", chat_id)
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        output.append({"type": "reasoning", "id": f"rs_{chat_id}", "summary": [],
                       "content": [{"type": "reasoning_text", "text": _text(reasoning, "message.reasoning_content")}]})
    content = _text(message.get("content"), "message.content")
    refusal = _text(message.get("refusal"), "message.refusal")
    if content:
        output.append({"type": "message", "id": f"msg_{chat_id}", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": content, "annotations": []}]})
    elif refusal:
        output.append({"type": "message", "id": f"msg_{chat_id}", "role": "assistant", "status": "completed",
                       "content": [{"type": "refusal", "refusal": refusal}]})
    for i, call in enumerate(_list(message.get("tool_calls"), "message.tool_calls")):
        where = f"message.tool_calls[{i}]"
        call = _dict(call, where)
        function = _dict(call.get("function"), f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str):
            raise _malformed(f"{where}.function.name", "a string", name)
        arguments = function.get("arguments")
        call_id = call.get("id") or f"call_{i}"
        output.append({"type": "function_call", "id": f"fc_{chat_id}_{i}", "call_id": _text(call_id, f"{where}.id"),
                       "name": name, "arguments": arguments if isinstance(arguments, str) else
                       orjson.dumps(arguments or {}).decode(), "status": "completed"})
    finish = choice.get("finish_reason")
    incomplete = finish == "length"
    failed = FAILED_FINISH.get(finish) if isinstance(finish, str) else None
    if carries_error(choice.get("error")):
        failed = "failed"
    status = failed or ("incomplete" if incomplete else "completed")
    if tokens and not failed:
        fields = _reply_tokens(chat, choice, label or str(chat.get("model") or "model"))
        if not output:
            output.append({"type": "message", "id": f"msg_{chat_id}", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": "", "annotations": []}]})
        output[-1].update(fields)
    usage = chat.get("usage")
    created = chat.get("created")
    model = chat.get("model") or request.get("model") or ""
    return responses.response(
        id=f"resp_{chat_id}", model=_text(model, "model"), output=output,
        request=request, status=status,
        usage_=chat_usage(_dict(usage, "usage") if usage is not None else None),
        created_at=created if isinstance(created, (int, float)) and not isinstance(created, bool) else None,
        incomplete_reason="max_output_tokens" if incomplete else None,
        error=_chat_error(choice.get("error"), finish) if status == "failed" else None,
    )
