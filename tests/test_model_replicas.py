"""Model replicas: several base URLs of one model (``--model-url``, or a comma-separated
``OPENAI_BASE_URL``). Real rollouts (the weather environment, the agent loop) against three
real fake-OpenAI servers: a rollout's calls all reach one replica, load is spread, and a
replica that refuses connections is passed over."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest

from gym_openai_model.client import OpenAIBackend
from gymcore.agent import AgentConfig, run_rollout
from gymcore.data import Task, converter
from gymcore.environment import Environment
from gymcore.errors import ModelError

from .conftest import SECRET_KEY, read_jsonl, run_gym
from .fake_openai import FakeOpenAI

TAG = re.compile(r"\(task (\d+)\)")


@pytest.fixture(scope="module")
def replicas():
    servers = [FakeOpenAI(latency=0.02) for _ in range(3)]
    for server in servers:
        server.start_in_thread()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_requests(replicas):
    for server in replicas:
        server.requests.clear()


def closed_port_url() -> str:
    """A base URL nothing listens on (a port just freed): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def task(i: int) -> Task:
    """A weather task whose user message carries its number, so each call can be traced to it."""
    city = ["Paris", "London", "Oslo", "Tokyo"][i % 4]
    return converter.structure({"responses_create_params": {"input": f"weather in {city} please (task {i})"},
                                "verifier_metadata": {"expected_city": city}}, Task)


async def run_many(plugins, backend, indexes) -> list:
    env = await Environment.create(plugins, ["weather"])
    return await asyncio.gather(*(run_rollout(env, backend, task(i), task_index=i, rollout_index=0,
                                              config=AgentConfig()) for i in indexes))


def tasks_by_replica(servers) -> list[set[int]]:
    """Which tasks' calls each server saw (read from the tag in the user message)."""
    return [{int(TAG.search(json.dumps(r["body"])).group(1)) for r in server.requests} for server in servers]


async def test_each_rollout_stays_on_one_replica_and_load_is_spread(plugins, replicas):
    backend = OpenAIBackend("gpt-fake", api_key=SECRET_KEY, base_url=[s.url for s in replicas])
    try:
        rollouts = await run_many(plugins, backend, range(12))
    finally:
        await backend.aclose()
    assert all(r.error is None and r.turns == 2 for r in rollouts), [r.error for r in rollouts]
    seen = tasks_by_replica(replicas)
    assert sum(len(s) for s in seen) == 12 and set().union(*seen) == set(range(12))  # no task on two replicas
    assert all(len(server.requests) == 2 * len(s) for server, s in zip(replicas, seen))  # both calls there
    assert max(map(len, seen)) - min(map(len, seen)) <= 1, seen  # spread: 4, 4, 4


async def test_a_refusing_replica_is_passed_over(plugins, replicas):
    dead = closed_port_url()
    backend = OpenAIBackend("gpt-fake", api_key=SECRET_KEY, base_url=",".join([dead, replicas[0].url, replicas[1].url]))
    try:
        first = await run_many(plugins, backend, range(9))
        refused = backend.replicas.replicas[0].calls
        second = await run_many(plugins, backend, range(9, 15))
    finally:
        await backend.aclose()
    assert all(r.error is None for r in first + second), [r.error for r in first + second]
    assert refused >= 1  # it was tried ...
    assert backend.replicas.replicas[0].calls == refused  # ... and then passed over while down
    seen = tasks_by_replica(replicas[:2])
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(15))  # still one replica per rollout


async def test_every_replica_refusing_is_a_connection_error():
    backend = OpenAIBackend("gpt-fake", api_key=SECRET_KEY, base_url=[closed_port_url(), closed_port_url()])
    try:
        with pytest.raises(ModelError, match="cannot reach") as info:
            await backend.create_response({"input": "weather in Paris (task 0)"})
        assert info.value.kind == "connection"
    finally:
        await backend.aclose()


def tagged_tasks(path, n: int):
    path.write_text("".join(json.dumps({"responses_create_params": {"input": f"weather in Paris please (task {i})"},
                                        "verifier_metadata": {"expected_city": "Paris"}}) + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("served", [False, True], ids=["embedded", "served"])
def test_model_url_spreads_a_collection_over_replicas(replicas, tmp_path, served):
    """``gym collect --model-url A --model-url B`` (embedded), and ``gym serve --model-url``."""
    from .test_serve import gym_serve, serve_env

    env = {**serve_env(), "OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": closed_port_url()}  # overridden
    urls = [a for server in replicas[:2] for a in ("--model-url", server.url)]
    args = ["--agent", "weather", "-i", str(tagged_tasks(tmp_path / "tasks.jsonl", 8)), "-o", str(tmp_path / "o.jsonl"),
            "-q", "--parallel", "8"]
    if served:
        with gym_serve("--agent", "weather", "--model", "openai:gpt-fake", *urls, env=env) as (_proc, url):
            result = run_gym("collect", "--server", url, *args, env=env)
    else:
        result = run_gym("collect", "--model", "openai:gpt-fake", *urls, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert all(line["reward"] == 1.0 for line in read_jsonl(tmp_path / "o.jsonl"))
    seen = tasks_by_replica(replicas[:2])
    assert seen[0] and seen[1] and not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8)), seen
