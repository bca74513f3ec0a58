"""Plugin discovery through real entry points, and composition of in-process plugins."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from gymcore import hookimpl
from gymcore.data import Task
from gymcore.environment import Environment
from gymcore.errors import EnvironmentBuildError
from gymcore.plugins import load_plugins

from .conftest import REPO_PLUGINS, clean_env, run_gym


def test_installed_plugins_arrive_through_entry_points(plugins):
    infos = plugins.infos
    assert infos["weather"].kind == "resource" and infos["weather"].distribution == "gym-weather"
    assert infos["openai"].kind == "model" and infos["openai"].distribution == "gym-openai-model"
    # gymcore's own backend is registered the same way as outside ones
    assert infos["replay"].kind == "model" and infos["replay"].distribution == "gymcore"
    assert {"list_tools", "call_tool", "verify"} <= set(infos["weather"].hooks)


def test_gym_load_plugins_selects_and_empty_means_none(monkeypatch):
    monkeypatch.setenv("GYM_LOAD_PLUGINS", "weather")
    assert sorted(load_plugins().infos) == ["weather"]
    monkeypatch.setenv("GYM_LOAD_PLUGINS", "")
    assert load_plugins().infos == {}


def test_plugins_list_json_subprocess():
    result = run_gym("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["weather"]["tools"] == ["get_weather"]
    assert rows["weather"]["version"] == "0.1.0"
    assert rows["openai"]["backends"] == ["openai", "openai-chat"]
    assert rows["replay"]["backends"] == ["replay"]


def test_plugins_list_table_subprocess():
    result = run_gym("plugins", "list")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["name", "kind", "distribution", "version", "provides"]
    weather = next(line for line in lines if line.startswith("weather"))
    assert weather.split() == ["weather", "resource", "gym-weather", "0.1.0", "get_weather"]


# --- in-process plugins: composition, sync and async hooks ---------------------------------


class AsyncClock:
    """An async plugin: its coroutines must be awaited by the core, never taken as answers."""

    @hookimpl
    async def list_tools(self):
        return [{"name": "now", "parameters": {"type": "object", "properties": {}}}]

    @hookimpl
    async def call_tool(self, name, arguments, session):
        await asyncio.sleep(0)
        return {"time": "12:00", "session": session.id}

    @hookimpl
    async def verify(self, session, response):
        return {"reward": 0.5, "clock_checked": 1}


class SyncCalculator:
    """A sync plugin: its blocking hooks run off the event loop."""

    def __init__(self):
        self.threads = []

    @hookimpl
    def list_tools(self):
        return [{"name": "add", "parameters": {"type": "object", "properties": {}}}]

    @hookimpl
    def setup_session(self, session):
        session.state["calls"] = 0

    @hookimpl
    def call_tool(self, name, arguments, session):
        self.threads.append(threading.current_thread())
        session.state["calls"] += 1
        return arguments["a"] + arguments["b"]

    @hookimpl
    def verify(self, session, response):
        return {"reward": 0.5, "calls": session.state["calls"]}


@pytest.fixture
def composed(bare_plugins):
    calc = SyncCalculator()
    bare_plugins.register(AsyncClock(), name="clock")
    bare_plugins.register(calc, name="calc")
    env = asyncio.run(Environment.create(bare_plugins, ["clock", "calc"]))
    return env, calc


def test_two_plugins_compose_tools_and_route_calls(composed):
    env, calc = composed
    assert [t["name"] for t in env.tools] == ["now", "add"]
    assert all(t["type"] == "function" for t in env.tools)

    async def go():
        session = await env.open_session(Task({"input": "x"}))
        now = await env.call_tool(session, "now", "{}")
        total = await env.call_tool(session, "add", '{"a": 2, "b": 3}')
        verdict = await env.verify(session, {"output": []})
        return session, now, total, verdict

    session, now, total, verdict = asyncio.run(go())
    assert now == (json.dumps({"time": "12:00", "session": session.id}, separators=(",", ":")), True)
    assert total == ("5", True)
    assert calc.threads and all(t is not threading.main_thread() for t in calc.threads)
    # rewards multiply, metrics merge
    assert verdict.reward == 0.25
    assert verdict.metrics == {"clock_checked": 1, "calls": 1}


def test_bad_tool_calls_become_error_outputs(composed):
    env, _ = composed

    async def go():
        session = await env.open_session(Task({"input": "x"}))
        return [await env.call_tool(session, *call) for call in [
            ("nope", "{}"), ("add", "{not json"), ("add", "[1, 2]"), ("add", '{"a": 1}')]]

    results = asyncio.run(go())
    assert all(ok is False for _, ok in results)
    messages = [json.loads(text)["error"] for text, _ in results]
    assert "unknown tool 'nope'" in messages[0] and "now, add" in messages[0]
    assert "not valid JSON" in messages[1]
    assert "must be a JSON object" in messages[2]
    assert "KeyError" in messages[3]


def test_duplicate_tool_names_are_refused(bare_plugins):
    bare_plugins.register(AsyncClock(), name="clock1")
    bare_plugins.register(AsyncClock(), name="clock2")
    with pytest.raises(EnvironmentBuildError, match="'now' is offered by both 'clock1' and 'clock2'"):
        asyncio.run(Environment.create(bare_plugins, ["clock1", "clock2"]))


def test_unknown_environment_names_the_installed_ones(monkeypatch):
    monkeypatch.setenv("GYM_LOAD_PLUGINS", "weather,replay")
    with pytest.raises(EnvironmentBuildError, match=r"unknown agent 'nope' \(installed environments: weather\)"):
        asyncio.run(Environment.create(load_plugins(), ["nope"]))


def test_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    """A plugin whose import fails is listed with its error; the CLI still works."""
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gym.resources]\nbroken = gym_broken_plugin_missing\n")
    env = clean_env(PYTHONPATH=str(tmp_path), GYM_LOAD_PLUGINS=f"{REPO_PLUGINS},broken")
    result = run_gym("plugins", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert "ModuleNotFoundError" in rows["broken"]["error"]
    assert rows["weather"]["error"] is None
    assert "plugin 'broken' (broken-plugin) failed to load" in result.stderr
    assert "Traceback" not in result.stderr
