"""Property-based tests of the Responses <-> Chat Completions conversion: a valid episode
survives the trip to chat messages and back; a chat completion survives the trip to a
Responses output (which the openai SDK's model accepts) and back; anything malformed is a
ModelError, never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from gym_openai_model.chat import chat_to_response, input_to_messages, request_to_chat
from gymcore.errors import ModelError
from gymcore.replies import carries_error, reply_failure

text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
arguments = st.dictionaries(text, st.integers() | text, max_size=2).map(json.dumps)

message_items = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "developer", "system"]),
    "content": text | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text"]),
                                                      "text": text}), min_size=1, max_size=3),
}, optional={"type": st.just("message")})
call_items = st.fixed_dictionaries({"type": st.just("function_call"), "call_id": ids, "name": ids,
                                    "arguments": arguments})
output_items = st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": ids, "output": text})
reasoning_items = st.fixed_dictionaries({"type": st.just("reasoning"), "id": ids, "summary": st.just([])})
episodes = st.lists(message_items | call_items | output_items | reasoning_items, max_size=10)

ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def normalize(items: list[dict[str, Any]]) -> list[tuple]:
    """What of an episode a chat model can see, item by item."""
    out = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            content = item["content"]
            if not isinstance(content, str):
                content = "".join(part["text"] for part in content)
            out.append(("message", ROLES[item["role"]], content))
        elif kind == "function_call":
            out.append(("call", item["call_id"], item["name"], item["arguments"]))
        elif kind == "function_call_output":
            out.append(("output", item["call_id"], item["output"]))
    return out


def messages_to_items(messages: list[dict[str, Any]]) -> list[tuple]:
    """The inverse direction, written independently of the code under test."""
    out = []
    for message in messages:
        if message["role"] == "tool":
            out.append(("output", message["tool_call_id"], message["content"]))
            continue
        if message.get("content") is not None:
            out.append(("message", message["role"], message["content"]))
        for call in message.get("tool_calls") or []:
            out.append(("call", call["id"], call["function"]["name"], call["function"]["arguments"]))
    return out


@settings(max_examples=300, deadline=None)
@given(episodes, st.none() | text)
def test_episode_round_trips_through_chat_messages(items, instructions):
    request = {"input": items, **({"instructions": instructions} if instructions else {})}
    messages = input_to_messages(request)
    back = messages_to_items(messages)
    if instructions:
        assert back[0] == ("message", "system", instructions)
        back = back[1:]
    assert back == normalize(items)
    # every tool call is answered under the same id it was made with, as chat templates need
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in messages)


usage = st.fixed_dictionaries({"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6)},
                              optional={"prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 100)}),
                                        "completion_tokens_details": st.fixed_dictionaries(
                                            {"reasoning_tokens": st.integers(0, 100)})})
tool_calls = st.lists(st.fixed_dictionaries({"id": ids, "type": st.just("function"),
                                             "function": st.fixed_dictionaries({"name": ids, "arguments": arguments})}),
                      max_size=3, unique_by=lambda c: c["id"])
chat_messages = st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none() | text},
                                      optional={"tool_calls": tool_calls, "reasoning_content": text})
completions = st.fixed_dictionaries({
    "id": ids, "object": st.just("chat.completion"), "created": st.integers(0, 2**31), "model": ids,
    "choices": st.tuples(st.fixed_dictionaries({"index": st.just(0), "message": chat_messages,
                                                "finish_reason": st.sampled_from(["stop", "length", "tool_calls", "error", "abort"])})
                         ).map(list),
}, optional={"usage": usage})


@settings(max_examples=300, deadline=None)
@given(completions)
def test_chat_completion_round_trips_through_a_response(chat):
    response = chat_to_response(chat, {"temperature": 0.5})
    parsed = Response.model_validate(response)  # the SDK's own model accepts it
    message = chat["choices"][0]["message"]
    status = {"length": "incomplete", "error": "failed", "abort": "cancelled"}
    assert parsed.status == status.get(chat["choices"][0]["finish_reason"], "completed")
    assert (parsed.error is not None) == (parsed.status == "failed")
    assert parsed.usage.input_tokens == chat.get("usage", {}).get("prompt_tokens", 0)
    assert parsed.usage.total_tokens == sum(chat.get("usage", {}).get(k, 0) for k in ("prompt_tokens", "completion_tokens"))
    # and back into chat, as the next request's history: the same assistant turn
    messages = input_to_messages({"input": [{"role": "user", "content": "q"}, *response["output"]]})
    if not message.get("content") and not message.get("tool_calls"):
        assert messages == [{"role": "user", "content": "q"}]
        return
    expected = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        expected["tool_calls"] = message["tool_calls"]
    assert messages[1:] == [expected]


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["choices", "message", "content", "tool_calls", "function", "name",
                                         "arguments", "id", "usage", "prompt_tokens", "reasoning_content",
                                         "finish_reason", "refusal", "type", "role", "text", "output",
                                         "call_id", "input", "tools", "reasoning", "instructions", "error",
                                         "code", "message"]),
                        inner, max_size=4), max_leaves=15)


@settings(max_examples=400, deadline=None)
@given(junk | completions.flatmap(lambda c: st.just(c) | junk.map(lambda j: {**c, "choices": [j]})
                                  | junk.map(lambda j: {**c, "error": j})))
def test_malformed_completions_are_model_errors(chat):
    try:
        response = chat_to_response(chat, {})
    except ModelError as exc:
        assert exc.kind == "protocol" and str(exc).startswith("cannot convert")
        return
    Response.model_validate(response)  # what is accepted is a valid response


@settings(max_examples=400, deadline=None)
@given(junk, junk, junk)
def test_malformed_requests_are_model_errors(items, tools, reasoning):
    for request in ({"input": items}, {"input": "hi", "tools": tools, "reasoning": reasoning, "text": items}):
        try:
            body = request_to_chat(request, "m")
        except ModelError as exc:
            assert exc.kind == "protocol"
            continue
        json.dumps(body)  # what is accepted is a sendable body


errors = (st.fixed_dictionaries({}, optional={"code": st.none() | st.integers() | text | st.just("invalid_prompt"),
                                              "type": st.none() | text, "message": st.none() | text | st.integers()})
          | text | st.integers() | st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(completions, errors, st.sampled_from(["body", "choice"]))
def test_chat_errors_become_failed_responses_and_model_failures(chat, error, where):
    if where == "body":
        chat = {"error": error}  # a 200 whose body is only an error, as proxies send
        if not carries_error(error):  # "error": null, {} or nulls says nothing: no choices, no answer
            with pytest.raises(ModelError, match="no choices"):
                chat_to_response(chat, {})
            return
    else:
        chat["choices"][0].update(finish_reason="error", error=error)  # as OpenRouter sends
    response = chat_to_response(chat, {})
    parsed = Response.model_validate(response)
    assert parsed.status == "failed" and parsed.error is not None
    failure = reply_failure(response, "openai-chat:m")
    assert failure is not None and failure.kind == "failed"
    assert failure.retryable is (False if isinstance(error, dict) and error.get("code") == "invalid_prompt" else None)
