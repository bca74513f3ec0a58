"""The retry policy, alone and around real HTTP calls to the fake server: what is retried,
what fails at once, and that the waits between attempts follow the policy."""

from __future__ import annotations

import asyncio

import pytest

from gym_openai_model.client import OpenAIBackend
from gymcore.errors import ModelError
from gymcore.retry import RetryPolicy, call_with_retries

from .conftest import SECRET_KEY


@pytest.mark.parametrize("status, kind, retried", [
    (408, "http", True), (409, "http", True), (429, "http", True), (500, "http", True), (502, "http", True),
    (503, "http", True), (599, "http", True), (None, "connection", True), (None, "timeout", True),
    (400, "http", False), (404, "http", False), (422, "http", False), (401, "auth", False), (403, "auth", False),
    (200, "protocol", False), (None, "protocol", False),
])
def test_what_is_retried(status, kind, retried):
    assert RetryPolicy().should_retry(ModelError("x", status=status, kind=kind)) is retried


def test_backoff_is_full_jitter_capped_and_retry_after_wins():
    policy = RetryPolicy(base_delay=0.5, max_delay=10.0)
    error = ModelError("x", status=503)
    # the ceiling doubles per retry up to max_delay; the wait is uniform below it
    assert [policy.delay(n, error, rand=lambda: 1.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert policy.delay(3, error, rand=lambda: 0.25) == 1.0
    assert policy.delay(0, error, rand=lambda: 0.0) == 0.0
    # the server's Retry-After is obeyed as given, within max_delay
    assert policy.delay(0, ModelError("x", status=429, retry_after=2.5), rand=lambda: 0.0) == 2.5
    assert policy.delay(4, ModelError("x", status=429, retry_after=0.0), rand=lambda: 1.0) == 0.0
    assert policy.delay(0, ModelError("x", status=429, retry_after=3600), rand=lambda: 0.0) == 10.0


def _call_fake(fake, policy: RetryPolicy, request: dict | None = None):
    async def go():
        backend = OpenAIBackend("gpt-fake", api_key=SECRET_KEY, base_url=fake.url)
        try:
            return await call_with_retries(backend.create_response, request or {"input": "weather in Oslo?"},
                                           policy)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_retry_delays_against_the_fake_server(fake_openai):
    """429 with Retry-After, 503 with retry-after-ms, a dropped connection, a 500: each is
    retried; the gaps between arrivals honour the server's hint or the jitter ceiling."""
    fake_openai.faults = [{"status": 429, "retry_after": 0.3}, {"status": 503, "retry_after_ms": 200},
                          {"reset": True}, {"status": 500}]
    policy = RetryPolicy(max_retries=5, base_delay=0.1, max_delay=5)
    response = _call_fake(fake_openai, policy)
    assert response["output"][0]["name"] == "get_weather"
    at = [r["at"] for r in fake_openai.requests]
    assert len(at) == 5
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.2  # never sooner than the server asked
    # no hint: full jitter under base * 2**retry (0.4 s, 0.8 s); generous slack for a busy machine
    assert gaps[2] < 0.4 + 0.5 and gaps[3] < 0.8 + 0.5
    assert gaps[0] < 0.3 + 0.5 and gaps[1] < 0.2 + 0.5  # and not much later either


def test_retries_are_bounded_and_counted(fake_openai):
    fake_openai.faults = [{"status": 502, "retry_after": 0}] * 10
    with pytest.raises(ModelError) as info:
        _call_fake(fake_openai, RetryPolicy(max_retries=3))
    assert info.value.status == 502 and info.value.attempts == 4
    assert len(fake_openai.requests) == 4


@pytest.mark.parametrize("fault, kind", [({"status": 400, "retry_after": 0}, "http"),
                                         ({"status": 404, "retry_after": 0}, "http"),
                                         ({"status": 401, "retry_after": 0}, "auth"),
                                         ({"malformed": True}, "protocol")])
def test_hopeless_failures_are_not_retried(fake_openai, fault, kind):
    fake_openai.faults = [fault] * 3
    with pytest.raises(ModelError) as info:
        _call_fake(fake_openai, RetryPolicy(max_retries=5))
    assert info.value.kind == kind and info.value.attempts == 1
    assert len(fake_openai.requests) == 1
