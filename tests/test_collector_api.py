"""The streaming Python API, ``gymcore.Collector``, against the replay model and the fake
OpenAI server: the same records as ``gym collect``, groups, lazy rows, model versions,
failures that are never rewards."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import gymcore
from gymcore.data import converter

from .conftest import ROOT, SECRET_KEY, read_jsonl, run_gym

EXAMPLE = ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl"


@pytest.fixture
def openai_env(fake_openai, monkeypatch):
    """The openai backend of this process pointed at the fake server."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    return fake_openai


def rows(n: int) -> list[dict]:
    examples = read_jsonl(EXAMPLE)
    return [examples[i % len(examples)] for i in range(n)]


async def collect_all(collector_args: dict, data, **run_args) -> list:
    async with gymcore.Collector(**collector_args) as collector:
        return [item async for item in collector.run(data, **run_args)]


def comparable(line: dict) -> dict:
    line = dict(line)
    line.pop("timing")
    return line


def test_collector_is_exported_lazily():
    import subprocess
    import sys

    code = "import sys, gymcore; print('gymcore.collector' in sys.modules); gymcore.Collector; " \
           "print('gymcore.collector' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_api_results_are_the_lines_gym_collect_writes(tmp_path):
    """Same rows, replay model: the API's records are the CLI's output lines (timing aside)."""
    out = tmp_path / "cli.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "--input", str(EXAMPLE),
                     "--output", str(out), "--num-repeats", "2", "--parallel", "3", "-q")
    assert result.returncode == 0, result.stderr
    cli_lines = sorted((comparable(l) for l in read_jsonl(out)), key=lambda l: (l["task_index"], l["rollout_index"]))
    results = asyncio.run(collect_all(dict(agent="weather", model="replay", parallel=3), read_jsonl(EXAMPLE),
                                      num_repeats=2))
    assert all(isinstance(r, gymcore.collector.Rollout) for r in results)
    api_lines = sorted((comparable(converter.unstructure(r)) for r in results),
                       key=lambda l: (l["task_index"], l["rollout_index"]))
    assert len(api_lines) == 2 * len(read_jsonl(EXAMPLE))
    assert api_lines == cli_lines
    # and a line read back is the record the API gave
    assert converter.structure(read_jsonl(out)[0], gymcore.collector.Rollout).reward is not None


def test_groups_arrive_once_complete_with_failures_marked(openai_env):
    openai_env.rules = [{"match": "Oslo", "status": 500, "times": 1}]  # one of Oslo's repeats fails
    data = [{"responses_create_params": {"input": f"What is the weather in {city}?"}}
            for city in ("Paris", "Oslo", "Tokyo", "Denver")]
    groups = asyncio.run(collect_all(dict(agent="weather", model="openai:fake", parallel=5, max_retries=0),
                                     data, num_repeats=3, groups=True))
    assert sorted(g.task_index for g in groups) == [0, 1, 2, 3]  # each task once
    for group in groups:
        assert [r.rollout_index for r in group.rollouts] == [0, 1, 2]
        assert all(r.task_index == group.task_index for r in group.rollouts)
    oslo = next(g for g in groups if g.task_index == 1)
    assert len(oslo.failed) == 1 and len(oslo.scored) == 2
    failed = oslo.failed[0]
    assert failed.reward is None and failed.error["type"] == "model" and failed.error["status"] == 500
    assert all(r.reward == 1.0 for g in groups for r in g.scored)


def test_rows_are_pulled_only_as_slots_free(openai_env):
    """An async generator of rows is read lazily: with 4 slots and 2 repeats, 2 rows fill the
    run; the first result arrives with at most one more pulled, not the whole stream."""
    pulled = []
    openai_env.gate.clear()  # hold every model call until the test has looked

    async def prompts():
        for i in range(50):
            pulled.append(i)
            yield {"responses_create_params": {"input": f"Weather in Paris? ({i})"}}

    async def main():
        async with gymcore.Collector(agent="weather", model="openai:fake", parallel=4) as collector:
            results = collector.run(prompts(), num_repeats=2)
            first = asyncio.ensure_future(anext(results))
            deadline = time.monotonic() + 30
            while len(openai_env.requests) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            held = len(pulled)
            openai_env.gate.set()
            result = await first
            at_first = len(pulled)
            rest = [r async for r in results]
            return held, at_first, [result, *rest]

    held, at_first, results = asyncio.run(main())
    assert held == 2  # exactly the rows that fill the 4 slots while nothing has finished
    assert at_first <= 4  # and at most a refill of those slots by the time the first result is read
    assert len(results) == 100 and len(pulled) == 50


def test_model_version_stamps_rollouts_started_after_it(openai_env):
    pulled_after: set[int] = set()
    state = {"set": False}

    async def prompts():
        for i in range(8):
            if state["set"]:
                pulled_after.add(i)
            yield {"responses_create_params": {"input": f"Weather in Tokyo? ({i})"}}

    async def main():
        async with gymcore.Collector(agent="weather", model="openai:fake", parallel=2) as collector:
            collector.set_model_version(7)
            results = []
            async for rollout in collector.run(prompts()):
                results.append(rollout)
                if len(results) == 3:
                    collector.set_model_version(8)
                    state["set"] = True
            return results

    results = asyncio.run(main())
    assert len(results) == 8
    for rollout in results:
        assert rollout.model_version == (8 if rollout.task_index in pulled_after else 7)
    assert {r.model_version for r in results} == {7, 8}
    assert converter.unstructure(results[0])["model_version"] == results[0].model_version


def test_no_model_version_no_key(openai_env):
    [rollout] = asyncio.run(collect_all(dict(agent="weather", model="openai:fake"), rows(1)))
    assert rollout.model_version is None and "model_version" not in converter.unstructure(rollout)
    with pytest.raises(gymcore.collector.GymError, match="int or a string"):
        gymcore.Collector(agent="weather").set_model_version(1.5)


def test_failures_are_marked_never_rewards_and_max_failures_stops(openai_env):
    openai_env.rules = [{"match": "Oslo", "status": 503}]  # every Oslo call
    data = [{"responses_create_params": {"input": f"Weather in {city}?"}} for city in ["Paris", "Oslo"] * 3]
    results = asyncio.run(collect_all(dict(agent="weather", model="openai:fake", parallel=2, max_retries=0),
                                      data))
    failed = [r for r in results if r.error is not None]
    assert sorted(r.task_index for r in failed) == [1, 3, 5]
    assert all(r.reward is None and r.error["status"] == 503 for r in failed)
    assert all(r.reward == 1.0 for r in results if r.error is None)

    seen = []

    async def stopped():
        async with gymcore.Collector(agent="weather", model="openai:fake", parallel=1, max_retries=0,
                                     max_failures=1, grace=5) as collector:
            async for rollout in collector.run(data):
                seen.append(rollout)

    with pytest.raises(gymcore.RunStopped, match="more than --max-failures 1"):
        asyncio.run(stopped())
    assert 2 <= sum(r.error is not None for r in seen) and len(seen) < len(data)


def test_timeout_and_bad_rows_through_the_api(openai_env):
    openai_env.rules = [{"match": "Reykjavik", "hang": 5}]
    data = [{"responses_create_params": {"input": "Weather in Reykjavik?"}},
            {"responses_create_params": {"input": "Weather in Paris?"}}]
    results = asyncio.run(collect_all(dict(agent="weather", model="openai:fake", timeout=0.5), data))
    by_task = {r.task_index: r for r in results}
    assert by_task[0].error["type"] == "timeout" and by_task[0].reward is None
    assert by_task[1].reward == 1.0
    with pytest.raises(gymcore.collector.InputError, match=r"rows:1: field 'responses_create_params'"):
        asyncio.run(collect_all(dict(agent="weather", model="openai:fake"), [data[1], {"prompt": "x"}]))


def test_parallel_auto_settles_under_a_concurrency_cap(tmp_path, gym_env, fake_openai):
    """A server that answers 429 above 24 calls at once: --parallel auto finds about 24 and
    no rollout fails for the rate limit (the refused calls are retried)."""
    fake_openai.max_concurrent = 24
    fake_openai.latency = 0.1
    fake_openai.keep_requests = False
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows(400)))
    out = tmp_path / "auto.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "openai:fake", "--input", str(tasks),
                     "--output", str(out), "--parallel", "auto", "--parallel-max", "64", "-q", env=gym_env)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "auto.metrics.json").read_text())
    assert summary["failed"] == 0 and summary["scored"] == 400
    auto = summary["parallel_auto"]
    assert fake_openai.refused > 0  # it did find the limit
    assert 18 <= auto["settled"] <= 28, auto
    assert auto["peak"] <= 64


def test_served_runners_through_the_api(tmp_path):
    """servers=[...]: the rollouts run on a `gym serve` runner and are the embedded ones."""
    from .test_serve import gym_serve, serve_env

    data = read_jsonl(EXAMPLE)
    embedded = asyncio.run(collect_all(dict(agent="weather", model="replay", parallel=2), data, num_repeats=2))
    with gym_serve("--agent", "weather", "--model", "replay", env=serve_env()) as (_proc, url):
        served = asyncio.run(collect_all(dict(agent="weather", servers=[url], parallel=2), data, num_repeats=2,
                                         groups=True))
    assert sorted(g.task_index for g in served) == list(range(len(data)))

    def key(line):
        line = comparable(line)
        line["response"] = {k: v for k, v in line["response"].items() if k != "id"}
        return line["task_index"], line["rollout_index"], json.dumps(line, sort_keys=True)

    assert sorted(key(converter.unstructure(r)) for r in embedded) == \
        sorted(key(converter.unstructure(r)) for g in served for r in g.rollouts)


def test_parallel_auto_options_are_checked(tmp_path, gym_env):
    out = tmp_path / "out.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "-o", str(out), "--parallel-max", "8",
                     env=gym_env)
    assert result.returncode == 2 and "--parallel-max bounds --parallel auto" in result.stderr
    result = run_gym("collect", "--agent", "weather", "--server", "http://127.0.0.1:9", "-o", str(out),
                     "--parallel", "auto", env=gym_env)
    assert result.returncode == 2 and "--parallel auto learns from the model's answers" in result.stderr
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "-o", str(out), "--parallel", "many",
                     env=gym_env)
    assert result.returncode == 2 and "parallel must be a whole number" in result.stderr
    assert not out.exists()


def test_leaving_early_stops_the_run(openai_env):
    openai_env.latency = 0.05

    async def main():
        async with gymcore.Collector(agent="weather", model="openai:fake", parallel=4) as collector:
            results = collector.run(rows(40))
            async for _rollout in results:
                break
            await results.aclose()
            assert not collector._runs  # no worker left running
            await asyncio.sleep(0.2)  # a request sent just before may still be on its way
            sent = openai_env.count
            await asyncio.sleep(0.5)
            return collector.status, sent, openai_env.count

    status, sent, later = asyncio.run(main())
    assert status == "interrupted"
    assert later == sent < 80  # nothing more was asked of the model


def test_parallel_auto_waits_out_retry_after(openai_env):
    """A 429 with Retry-After pauses new rollouts that long: no rollout's first call arrives
    in the pause, and none fails."""
    openai_env.max_concurrent, openai_env.concurrent_retry_after = 6, 0.3
    openai_env.latency = 0.05
    results = asyncio.run(collect_all(dict(agent="weather", model="openai:fake", parallel="auto", parallel_max=32),
                                      rows(60)))
    assert len(results) == 60 and all(r.error is None for r in results)
    assert openai_env.refused_at
    first_calls = [r["at"] for r in openai_env.requests
                   if not any(i.get("type") == "function_call_output" for i in r["body"]["input"])]
    refused = openai_env.refused_at[0]
    assert not [at for at in first_calls if refused + 0.05 < at < refused + 0.25], (refused, first_calls)
