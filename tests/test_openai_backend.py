"""gym-openai-model against the fake server, checked with the real ``openai`` SDK: what we
send is what the SDK sends, and what we return validates as the SDK's models."""

from __future__ import annotations

import asyncio
import json

import pytest
from openai import AsyncOpenAI, AuthenticationError
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from gym_openai_model.chat import chat_to_response, input_to_messages, request_to_chat
from gym_openai_model.client import OpenAIBackend
from gymcore.errors import ModelError

from .conftest import SECRET_KEY

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
EPISODE = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "weather in Paris?"},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
     "arguments": '{"city": "Paris"}', "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature_c": 12}'},
]


def backend(url: str, mode: str = "openai", **kw) -> OpenAIBackend:
    return OpenAIBackend("gpt-fake", mode=mode, api_key=SECRET_KEY, base_url=url, **kw)


def sdk(url: str, **kw) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=SECRET_KEY, base_url=url, max_retries=0, **kw)


def test_responses_mode_matches_the_sdk(fake_openai):
    request = {"input": EPISODE[:2], "tools": TOOLS, "temperature": 0.3}

    async def go():
        ours = backend(fake_openai.url, organization="org-1", project="proj-1")
        try:
            mine = await ours.create_response(request)
        finally:
            await ours.aclose()
        client = sdk(fake_openai.url, organization="org-1", project="proj-1")
        theirs = await client.responses.create(model="gpt-fake", **request)
        await client.close()
        return mine, theirs

    mine, theirs = asyncio.run(go())
    parsed = Response.model_validate(mine)
    assert parsed.output[0].type == "function_call" and parsed.output[0].name == "get_weather"
    assert theirs.output[0].type == "function_call"
    ours_req, sdk_req = fake_openai.requests
    assert ours_req["body"] == sdk_req["body"]  # the same body on the wire
    ours_h = {k.lower(): v for k, v in ours_req["headers"].items()}
    sdk_h = {k.lower(): v for k, v in sdk_req["headers"].items()}
    for header in ("authorization", "openai-organization", "openai-project", "content-type"):
        assert ours_h[header] == sdk_h[header], header


def test_chat_mode_sends_what_the_sdk_would_send(fake_openai):
    """Our Responses->Chat conversion of a tool-using episode equals the SDK's own chat body
    for the same conversation, and the converted answer validates as a Response."""
    request = {"input": EPISODE, "tools": TOOLS, "temperature": 0.2, "max_output_tokens": 64}

    async def go():
        ours = backend(fake_openai.url, mode="openai-chat")
        try:
            mine = await ours.create_response(request)
        finally:
            await ours.aclose()
        client = sdk(fake_openai.url)
        theirs = await client.chat.completions.create(
            model="gpt-fake", temperature=0.2, max_tokens=64,
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 12}'},
            ],
            tools=[{"type": "function", "function": {k: TOOLS[0][k] for k in ("name", "description", "parameters")}}],
        )
        await client.close()
        return mine, theirs

    mine, theirs = asyncio.run(go())
    ours_req, sdk_req = fake_openai.requests
    assert ours_req["path"] == sdk_req["path"] == "/v1/chat/completions"
    assert ours_req["body"] == sdk_req["body"]
    parsed = Response.model_validate(mine)
    assert parsed.output[0].type == "message"
    assert parsed.output[0].content[0].text == theirs.choices[0].message.content
    assert parsed.usage.input_tokens == theirs.usage.prompt_tokens
    assert parsed.usage.output_tokens == theirs.usage.completion_tokens


def test_chat_conversion_of_reasoning_tool_calls_and_length():
    chat = ChatCompletion.model_validate({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "length", "logprobs": None, "message": {
            "role": "assistant", "content": "partial", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                  "prompt_tokens_details": {"cached_tokens": 2},
                  "completion_tokens_details": {"reasoning_tokens": 1}},
    }).model_dump(exclude_none=True)
    chat["choices"][0]["message"]["reasoning_content"] = "thinking..."  # vLLM's extra field
    out = chat_to_response(chat, {"tools": TOOLS})
    parsed = Response.model_validate(out)
    assert [item.type for item in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.output[0].content[0].text == "thinking..."
    assert parsed.output[2].call_id == "t1"
    assert parsed.status == "incomplete" and parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.usage.input_tokens_details.cached_tokens == 2
    assert parsed.usage.output_tokens_details.reasoning_tokens == 1
    # and back: the episode with that output becomes chat messages again
    messages = input_to_messages({"input": [{"role": "user", "content": "q"}, *out["output"]]})
    assert messages[1] == {"role": "assistant", "content": "partial", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def test_request_to_chat_maps_options():
    body = request_to_chat({
        "instructions": "sys", "input": "hi", "tool_choice": {"type": "function", "name": "f"},
        "reasoning": {"effort": "low"}, "top_p": 0.5,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}},
    }, "m")
    assert body["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["reasoning_effort"] == "low" and body["top_p"] == 0.5
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}


@pytest.mark.parametrize("status, kind", [(401, "auth"), (429, "http"), (500, "http"), (400, "http")])
def test_error_bodies_become_model_errors_like_the_sdk(fake_openai, status, kind):
    fake_openai.faults = [{"status": status, "message": "Incorrect API key provided", "type": "invalid_request_error",
                           "retry_after": 2}] * 2

    async def go():
        ours = backend(fake_openai.url)
        try:
            with pytest.raises(ModelError) as info:
                await ours.create_response({"input": "hi"})
        finally:
            await ours.aclose()
        client = sdk(fake_openai.url)
        try:
            await client.responses.create(model="gpt-fake", input="hi")
        except Exception as exc:  # the SDK's own exception, for comparison
            sdk_exc = exc
        await client.close()
        return info.value, sdk_exc

    ours, theirs = asyncio.run(go())
    assert ours.status == status == theirs.status_code and ours.kind == kind
    assert ours.retry_after == 2.0
    assert "Incorrect API key provided" in str(ours) and "Incorrect API key provided" in str(theirs)
    assert isinstance(theirs, AuthenticationError) == (kind == "auth")
    assert SECRET_KEY not in str(ours) and SECRET_KEY not in repr(backend(fake_openai.url))


def test_connection_and_protocol_errors(fake_openai):
    fake_openai.faults = [{"malformed": True}, {"reset": True}]

    async def go():
        ours = backend(fake_openai.url)
        errors = []
        for _ in range(2):
            try:
                await ours.create_response({"input": "hi"})
            except ModelError as exc:
                errors.append(exc)
        await ours.aclose()
        closed = backend("http://127.0.0.1:9/v1")  # nothing listens on the discard port
        try:
            await closed.create_response({"input": "hi"})
        except ModelError as exc:
            errors.append(exc)
        await closed.aclose()
        return errors

    malformed, reset, refused = asyncio.run(go())
    assert malformed.kind == "protocol" and "not JSON" in str(malformed)
    assert reset.kind == "connection"
    assert refused.kind == "connection" and "cannot reach http://127.0.0.1:9/v1/responses" in str(refused)


def test_json_bodies_round_trip_unicode(fake_openai):
    async def go():
        ours = backend(fake_openai.url)
        try:
            return await ours.create_response({"input": "Wetter in São Paulo? ☔"})
        finally:
            await ours.aclose()

    out = asyncio.run(go())
    assert json.loads(out["output"][0]["arguments"]) == {"city": "São Paulo"}
    assert fake_openai.requests[0]["body"]["input"] == "Wetter in São Paulo? ☔"


def test_retry_after_as_seconds_or_an_http_date(fake_openai):
    """RFC 9110 lets Retry-After be a date (gateways and proxies send one): it is honoured as
    the seconds until then; a date past is 0; a value that is neither is ignored (jitter)."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    past = format_datetime(datetime.now(timezone.utc) - timedelta(hours=1), usegmt=True)
    fake_openai.faults = [{"status": 429, "retry_after": value} for value in (soon, past, "soon-ish", "1.5")]

    async def go():
        ours = backend(fake_openai.url)
        waits = []
        try:
            for _ in range(4):
                with pytest.raises(ModelError) as info:
                    await ours.create_response({"input": "hi"})
                waits.append(info.value.retry_after)
        finally:
            await ours.aclose()
        return waits

    soon_s, past_s, garbage, seconds = asyncio.run(go())
    assert 25 < soon_s <= 30 and past_s == 0.0 and garbage is None and seconds == 1.5


def test_a_wrong_base_url_is_named_in_the_error(fake_openai):
    async def go():
        ours = backend(fake_openai.url + "/v1")  # the /v1 given twice: a real 404 from the server
        try:
            with pytest.raises(ModelError) as info:
                await ours.create_response({"input": "hi"})
        finally:
            await ours.aclose()
        return info.value

    error = asyncio.run(go())
    assert error.status == 404 and error.kind == "http"
    assert f"from POST {fake_openai.url}/v1/responses (is the base URL right?" in str(error)
