"""``gym serve`` and ``gym collect --server``: real runners (subprocesses, or in-process apps
for test plugins) on ephemeral loopback ports, driven by the real CLI and by raw HTTP."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import attrs
import openai
import pytest
from openai.types.responses import Response
from openapi_spec_validator import validate

from gymcore import hookimpl, responses
from gymcore.agent import AgentConfig
from gymcore.collector import CollectConfig, collect
from gymcore.errors import GymError
from gymcore.retry import RetryPolicy
from gymcore.openapi import openapi_document
from gymcore.server import HOST_KEY, check_bind, create_app, is_loopback, serving

from .conftest import GYM, ROOT, clean_env, open_file_limit, read_jsonl, run_gym, weather_tasks

EXAMPLE = ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl"
RECORDED = EXAMPLE.with_name("example_rollouts.jsonl")


# --- a `gym serve` subprocess -----------------------------------------------------------


@contextmanager
def gym_serve(*args: str, env: dict | None = None, timeout: float = 20, preexec_fn=None):
    """Start ``gym serve --port 0 ARGS``; yield ``(process, url)``; stop it with SIGTERM."""
    proc = subprocess.Popen([GYM, "serve", "--port", "0", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    try:
        yield proc, read_url(proc, timeout)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def read_url(proc: subprocess.Popen, timeout: float) -> str:
    """The URL from the runner's "serving on URL" line (it may pick its port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("serving on "):
                return line.split()[-1]
            if not line and proc.poll() is not None:
                break
    raise AssertionError(f"gym serve did not start: {proc.poll()=} {proc.stderr.read() if proc.poll() is not None else ''}")


def serve_env(**extra: str) -> dict:
    return clean_env(PYTHONUNBUFFERED="1", **extra)


@pytest.fixture(scope="module")
def weather_server():
    """One replay-backed weather runner shared by the tests that only read from it."""
    with gym_serve("--agent", "weather", "--model", "replay", env=serve_env()) as (_proc, url):
        yield url


async def get_json(http: aiohttp.ClientSession, method: str, url: str, body=None, **kw) -> tuple[int, dict]:
    async with http.request(method, url, json=body, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


def comparable(line: dict) -> dict:
    """A rollout without what legitimately differs between two runs (timing, response id)."""
    line = dict(line)
    line.pop("timing")
    line["response"] = {k: v for k, v in line["response"].items() if k != "id"}
    return line


# --- test plugins (used in-process: a subprocess cannot see them) ------------------------


class StampTool:
    """A resource plugin that stamps each tool output and verdict with its runner's name,
    counts sessions, and can sleep in its async tool."""

    def __init__(self, runner: str, delay: float = 0.0):
        self.runner, self.delay = runner, delay
        self.setups = self.teardowns = self.in_tool = self.max_in_tool = 0

    @property
    def live(self) -> int:
        return self.setups - self.teardowns

    @hookimpl
    def list_tools(self):
        return [{"type": "function", "name": "where", "description": "Which runner am I on?",
                 "parameters": {"type": "object", "properties": {"fail": {"type": "boolean"},
                                                                 "sleep": {"type": "number"}}}}]

    @hookimpl
    async def setup_session(self, session):
        self.setups += 1
        session.state["calls"] = 0

    @hookimpl
    async def call_tool(self, name, arguments, session):
        self.in_tool += 1
        self.max_in_tool = max(self.max_in_tool, self.in_tool)
        try:
            await asyncio.sleep(arguments.get("sleep", self.delay))
        finally:
            self.in_tool -= 1
        if arguments.get("fail"):
            raise RuntimeError("asked to fail")
        session.state["calls"] += 1
        return {"runner": self.runner, "call": session.state["calls"]}

    @hookimpl
    async def verify(self, session, response):
        outputs = [json.loads(i["output"]) for i in response["output"] if i.get("type") == "function_call_output"]
        same = all(o.get("runner") == self.runner for o in outputs)
        return {"reward": float(same), "verified_by": self.runner, "calls_seen": session.state["calls"]}

    @hookimpl
    async def teardown_session(self, session):
        self.teardowns += 1


class ScriptedModel:
    """Calls the first tool ``calls`` times, one per turn, then answers. Deterministic."""

    def __init__(self, calls: int):
        self.calls, self.label = calls, f"scripted:{calls}"

    async def create_response(self, request):
        done = sum(1 for i in request["input"] if i.get("type") == "function_call_output")
        if done < self.calls:
            tool = request["tools"][0]["name"]
            output = [{"type": "function_call", "id": f"fc_{done}", "call_id": f"call_{done}", "name": tool,
                       "arguments": "{}", "status": "completed"}]
        else:
            output = [{"type": "message", "id": "msg", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": "done", "annotations": []}]}]
        return responses.response(id="resp", model=self.label, output=output, request=request, created_at=0)

    async def aclose(self):
        return None


class ScriptedModels:
    @hookimpl
    def register_models(self, register):
        register("scripted", lambda name, _ctx: ScriptedModel(int(name or 3)), "test model")


def stamp_plugins(bare_plugins_factory, runner: str, delay: float = 0.0):
    plugins = bare_plugins_factory()
    tool = StampTool(runner, delay)
    plugins.register(tool, "stamp")
    plugins.register(ScriptedModels(), "scripted", kind="model")
    return plugins, tool


@pytest.fixture
def fresh_plugins():
    from gymcore.plugins import load_plugins

    return lambda: load_plugins(entry_points=False)


def write_tasks(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"responses_create_params": {"input": f"task {i}"}, "id": i}) + "\n"
                            for i in range(n)))
    return path


# --- served == embedded -------------------------------------------------------------------


def test_served_collection_equals_embedded_with_replay(weather_server, tmp_path):
    embedded, served = tmp_path / "embedded.jsonl", tmp_path / "served.jsonl"
    r1 = run_gym("collect", "--agent", "weather", "--model", "replay", "-o", str(embedded), "-n", "2", "-q",
                 env=serve_env())
    r2 = run_gym("collect", "--server", weather_server, "--agent", "weather", "-o", str(served), "-n", "2", "-q",
                 env=serve_env())
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    key = lambda l: (l["task_index"], l["rollout_index"])  # noqa: E731
    a, b = sorted(read_jsonl(embedded), key=key), sorted(read_jsonl(served), key=key)
    assert len(a) == len(b) == 2 * len(read_jsonl(EXAMPLE))
    assert [comparable(x) for x in a] == [comparable(x) for x in b]
    assert sorted({l["reward"] for l in b}) == [0.0, 0.5, 1.0]  # real verify, all three outcomes
    ma = json.loads((tmp_path / "embedded.metrics.json").read_text())
    mb = json.loads((tmp_path / "served.metrics.json").read_text())
    for field in ("mean_reward", "pass@2", "rollouts", "tool_calls", "model", "agent", "note"):
        assert ma[field] == mb[field], field


# --- raw HTTP against a subprocess ---------------------------------------------------------


async def test_session_routes_over_raw_http(weather_server):
    assert weather_server.startswith("http://127.0.0.1:")  # started without --host: loopback only
    base = weather_server + "/agents/weather"
    async with aiohttp.ClientSession() as http:
        assert await get_json(http, "GET", weather_server + "/health") == (200, {"status": "ok"})
        status, index = await get_json(http, "GET", weather_server + "/")
        assert status == 200 and index["model_spec"] == "replay" and index["auth"] is False
        assert index["agents"][0]["name"] == "weather" and index["agents"][0]["tools"] == ["get_weather"]
        assert {"weather", "replay"} <= {p["name"] for p in index["plugins"]}
        status, tools = await get_json(http, "GET", base + "/tools")
        assert status == 200 and [t["name"] for t in tools["tools"]] == ["get_weather"]

        row = {"responses_create_params": {"input": "weather in Paris?"}, "verifier_metadata": {"expected_city": "Paris"}}
        status, opened = await get_json(http, "POST", base + "/sessions", row)
        assert status == 201
        session = f"{base}/sessions/{opened['session_id']}"
        status, result = await get_json(http, "POST", session + "/tools/get_weather", {"arguments": {"city": "Paris"}})
        assert status == 200 and result["ok"] is True
        weather = json.loads(result["output"])
        assert weather["city"] == "Paris"
        # a plugin's exception is a tool error for the model, not a 500
        status, result = await get_json(http, "POST", session + "/tools/get_weather", {"arguments": {}})
        assert status == 200 and result["ok"] is False and "ValueError" in json.loads(result["output"])["error"]
        status, result = await get_json(http, "POST", session + "/tools/nope", {"arguments": "{}"})
        assert status == 200 and result["ok"] is False and "unknown tool 'nope'" in result["output"]
        episode = {"output": [
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "c1", "output": json.dumps(weather)},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text":
             f"{weather['temperature_c']}°C and {weather['conditions']} in Paris"}]}]}
        status, verdict = await get_json(http, "POST", session + "/verify", {"response": episode})
        assert status == 200 and verdict["reward"] == 1.0 and verdict["metrics"]["city_correct"] == 1
        assert await get_json(http, "DELETE", session) == (200, {"ended": True})
        status, error = await get_json(http, "POST", session + "/tools/get_weather", {"arguments": {"city": "Oslo"}})
        assert status == 404 and error["error"]["type"] == "unknown_session"
        assert "ended" in error["error"]["message"]
        status, error = await get_json(http, "DELETE", session)
        assert status == 404 and error["error"]["type"] == "unknown_session"

        status, line = await get_json(http, "POST", base + "/rollouts",
                                      {"task": read_jsonl(EXAMPLE)[1], "task_index": 7, "rollout_index": 2})
        assert status == 200 and line["task_index"] == 7 and line["rollout_index"] == 2
        assert line["reward"] == 1.0 and line["id"] == "weather-001" and line["model"].startswith("replay:")
        Response.model_validate(line["response"])

        async with http.get(base + "/dataset") as resp:
            assert resp.status == 200
            assert [json.loads(x) for x in (await resp.text()).splitlines()] == read_jsonl(EXAMPLE)
        _, index = await get_json(http, "GET", weather_server + "/")
        assert index["sessions"]["open"] == 0


@pytest.mark.parametrize("method, path, body, status, kind, field", [
    ("POST", "/agents/weather/sessions", {"input": "hi"}, 400, "invalid_request", "responses_create_params"),
    ("POST", "/agents/weather/sessions", {"responses_create_params": {"input": 3}}, 400, "invalid_request",
     "responses_create_params.input"),
    ("POST", "/agents/weather/sessions", b"{not json", 400, "invalid_request", None),
    ("POST", "/agents/weather/sessions", [1], 400, "invalid_request", None),
    ("POST", "/agents/weather/rollouts", {}, 400, "invalid_request", "task"),
    ("POST", "/agents/weather/rollouts", {"task": {"responses_create_params": {}}}, 400, "invalid_request",
     "task.responses_create_params.input"),
    ("POST", "/agents/weather/rollouts", {"task": {"responses_create_params": {"input": "x"}}, "max_steps": 0},
     400, "invalid_request", "max_steps"),
    ("POST", "/agents/weather/rollouts", {"task": {"responses_create_params": {"input": "x"}}, "overrides": []},
     400, "invalid_request", "overrides"),
    ("POST", "/agents/weather/sessions/nope/tools/get_weather", {"arguments": 5}, 400, "invalid_request", "arguments"),
    ("POST", "/agents/weather/sessions/nope/verify", {"response": {"output": {}}}, 400, "invalid_request",
     "response.output"),
    ("POST", "/agents/weather/sessions/nope/verify", {"response": {"output": []}}, 404, "unknown_session", None),
    ("GET", "/agents/nope/tools", None, 404, "unknown_agent", None),
    ("POST", "/agents/nope/sessions", {"responses_create_params": {"input": "x"}}, 404, "unknown_agent", None),
    ("POST", "/v1/responses", {"input": 3}, 400, "invalid_request", "input"),
    ("POST", "/v1/responses", {"input": "x", "stream": True}, 400, "invalid_request", "stream"),
    ("POST", "/v1/responses", {"input": "nothing recorded starts like this"}, 502, "model_error", None),
    ("GET", "/no/such/route", None, 404, "not_found", None),
    ("PUT", "/health", None, 405, "method_not_allowed", None),
])
async def test_errors_are_json_with_a_stable_type(weather_server, method, path, body, status, kind, field):
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    async with aiohttp.ClientSession() as http:
        async with http.request(method, weather_server + path, data=data,
                                headers={"Content-Type": "application/json"} if data is not None else {}) as resp:
            got = await resp.json(content_type=None)
            assert resp.status == status, got
            assert resp.content_type == "application/json"
    assert got["error"]["type"] == kind and got["error"]["message"]
    assert got["error"].get("field") == field
    if field:
        assert repr(field) in got["error"]["message"]  # the message names the field too


async def test_model_endpoint_serves_an_openai_client(weather_server):
    recorded = read_jsonl(RECORDED)[0]
    for base_url in (weather_server + "/v1", weather_server + "/agents/weather/v1"):
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        async with client:
            response = await client.responses.create(model="whatever", input=recorded["responses_create_params"]["input"])
        assert isinstance(response, Response)
        call, expected = response.output[0], recorded["response"]["output"][0]
        assert (call.type, call.name, call.arguments) == ("function_call", expected["name"], expected["arguments"])


# --- the OpenAPI document -----------------------------------------------------------------


async def test_openapi_document_is_valid_and_lists_every_route(weather_server, bare_plugins):
    async with aiohttp.ClientSession() as http:
        status, served = await get_json(http, "GET", weather_server + "/openapi.json")
    assert status == 200
    validate(served)  # OpenAPI 3.1, by openapi-spec-validator
    validate(openapi_document(auth=True))
    app = create_app(bare_plugins, ["unused"], "replay")  # routes exist before start-up
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    documented = {(m, p) for p, ops in served["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and ({"200", "201"} & set(op["responses"])), (method, path)
            if method == "post":
                assert op["requestBody"]["content"]["application/json"]["schema"], (method, path)


# --- gym collect --server ----------------------------------------------------------------


def test_two_runners_share_one_collection(tmp_path):
    with gym_serve("--agent", "weather", "--model", "replay", env=serve_env()) as (_p1, url1), \
            gym_serve("--agent", "weather", "--model", "replay", env=serve_env()) as (_p2, url2):
        out = tmp_path / "out.jsonl"
        result = run_gym("collect", "--server", url1, "--server", url2, "--agent", "weather", "-o", str(out),
                         "-n", "3", "-p", "8", "-q", env=serve_env())
        assert result.returncode == 0, result.stderr
        lines = read_jsonl(out)
        n_tasks = len(read_jsonl(EXAMPLE))
        assert sorted((l["task_index"], l["rollout_index"]) for l in lines) == \
            [(t, r) for t in range(n_tasks) for r in range(3)]
        assert all(l["error"] is None and l["reward"] is not None for l in lines)
        counts = []
        for url in (url1, url2):
            with urllib.request.urlopen(url + "/") as resp:
                index = json.loads(resp.read())
            counts.append(index["stats"]["rollouts"])
            assert index["sessions"]["open"] == 0 and index["stats"]["rollouts_in_flight"] == 0
        assert sum(counts) == len(lines) and min(counts) > 0, counts
        # the records name where the dataset came from, not the temporary copy of it
        for sidecar in ("out.metrics.json", "out.run.json"):
            assert json.loads((tmp_path / sidecar).read_text())["input"] == f"{url1}/agents/weather/dataset"


async def test_each_rollout_stays_on_one_runner(fresh_plugins, tmp_path):
    """Every tool call and the verify of a rollout ran on one runner: the test plugin stamps
    each tool output and the verdict with its runner's name, and counts calls per session."""
    plugins_a, tool_a = stamp_plugins(fresh_plugins, "A", delay=0.002)
    plugins_b, tool_b = stamp_plugins(fresh_plugins, "B", delay=0.002)
    async with serving(create_app(plugins_a, ["stamp"], "scripted:3")) as url_a, \
            serving(create_app(plugins_b, ["stamp"], "scripted:3")) as url_b:
        config = CollectConfig(agent="stamp", model="scripted:3", output=tmp_path / "out.jsonl",
                               input=write_tasks(tmp_path / "tasks.jsonl", 20), num_repeats=2, parallel=8,
                               progress=False, servers=[url_a, url_b])
        summary = await collect(fresh_plugins(), config)
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert summary["rollouts"] == len(lines) == 40
    by_runner = {"A": 0, "B": 0}
    for line in lines:
        stamps = {json.loads(i["output"])["runner"] for i in line["response"]["output"]
                  if i["type"] == "function_call_output"}
        assert stamps == {line["verified_by"]}, line  # tools and verify on one runner
        assert line["calls_seen"] == 3 and line["tool_calls"] == 3 and line["reward"] == 1.0  # one session
        by_runner[line["verified_by"]] += 1
    assert min(by_runner.values()) > 0 and sum(by_runner.values()) == 40, by_runner
    assert tool_a.setups == by_runner["A"] and tool_b.setups == by_runner["B"]
    assert tool_a.live == tool_b.live == 0


async def test_losing_every_runner_keeps_what_was_written_and_resume_finishes(fresh_plugins, tmp_path):
    plugins, tool = stamp_plugins(fresh_plugins, "A", delay=0.01)
    config = CollectConfig(agent="stamp", model="", output=tmp_path / "out.jsonl", parallel=2, progress=False,
                           input=write_tasks(tmp_path / "tasks.jsonl", 30))
    async with serving(create_app(plugins, ["stamp"], "scripted:3")) as url:
        config.servers = [url]
        run = asyncio.create_task(collect(fresh_plugins(), config))
        for _ in range(500):  # bounded: until some rollouts are done
            if tool.teardowns >= 6:
                break
            await asyncio.sleep(0.01)
    # the only runner stopped (its in-flight rollouts were answered first)
    with pytest.raises(GymError, match="no gym server accepts connections: .*kept: start a runner and add --resume"):
        await asyncio.wait_for(run, 20)
    done = read_jsonl(config.output)
    assert 6 <= len(done) < 30 and len({l["task_index"] for l in done}) == len(done)
    plugins_b, _tool_b = stamp_plugins(fresh_plugins, "B")
    async with serving(create_app(plugins_b, ["stamp"], "scripted:3")) as url_b:
        summary = await collect(fresh_plugins(), attrs.evolve(config, servers=[url_b], resume=True))
    lines = read_jsonl(config.output)
    assert sorted(l["task_index"] for l in lines) == list(range(30)) and lines[:len(done)] == done
    assert summary["resumed"] == len(done) and summary["rollouts"] == 30 and summary["failed"] == 0


@pytest.mark.parametrize("args, expected", [
    (["--server", "http://127.0.0.1:9"], "cannot reach gym server http://127.0.0.1:9"),
    (["--agent", "nope"], "does not host agent 'nope' (it hosts: weather)"),
    (["--model", "openai:m"], "serves model 'replay', not --model 'openai:m'"),
])
def test_collect_server_errors_are_one_line(weather_server, tmp_path, args, expected):
    argv = ["--server", weather_server, "--agent", "weather"]
    for flag in ("--server", "--agent"):
        if flag in args:
            i = argv.index(flag)
            del argv[i:i + 2]
    out = tmp_path / "out.jsonl"
    result = run_gym("collect", *argv, *args, "-o", str(out), "-q", env=serve_env())
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("Error")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not out.exists()


async def test_one_runner_hosts_several_agents(fresh_plugins):
    """Two --agent on one runner: each has its own environment, tools, sessions and routes."""
    plugins = fresh_plugins()
    tool_a, tool_b = StampTool("A"), StampTool("B")
    plugins.register(tool_a, "stamp")
    plugins.register(tool_b, "other")
    plugins.register(ScriptedModels(), "scripted", kind="model")
    task = {"responses_create_params": {"input": "x"}}
    async with serving(create_app(plugins, ["stamp", "other"], "scripted:2")) as url, \
            aiohttp.ClientSession() as http:
        _, index = await get_json(http, "GET", url + "/")
        assert [(a["name"], a["tools"], a["model"]) for a in index["agents"]] == \
            [("stamp", ["where"], "scripted:2"), ("other", ["where"], "scripted:2")]
        for agent, runner in (("other", "B"), ("stamp", "A")):
            status, line = await get_json(http, "POST", f"{url}/agents/{agent}/rollouts", {"task": task})
            assert status == 200 and line["agent"] == agent and line["verified_by"] == runner
            assert line["tool_calls"] == 2 and line["reward"] == 1.0
        status, opened = await get_json(http, "POST", url + "/agents/stamp/sessions", task)
        assert status == 201
        # a session belongs to the agent that opened it
        status, error = await get_json(http, "POST", f"{url}/agents/other/sessions/{opened['session_id']}/tools/where",
                                       {"arguments": {}})
        assert status == 404 and error["error"]["type"] == "unknown_session"
        status, result = await get_json(http, "POST", f"{url}/agents/stamp/sessions/{opened['session_id']}/tools/where",
                                        {"arguments": {}})
        assert status == 200 and json.loads(result["output"])["runner"] == "A"
    assert tool_a.setups == 2 and tool_b.setups == 1 and tool_a.live == tool_b.live == 0  # ended on stop
    with pytest.raises(GymError, match="agent 'stamp' is given twice"):
        async with serving(create_app(plugins, ["stamp", "stamp"], "scripted")):
            pass


# --- load: 1,000 concurrent sessions ---------------------------------------------------------


async def test_a_thousand_concurrent_sessions(fresh_plugins):
    plugins, tool = stamp_plugins(fresh_plugins, "A", delay=0.02)
    n = 1000
    statuses: list[int] = []
    async with serving(create_app(plugins, ["stamp"], "scripted")) as url:
        base = url + "/agents/stamp"
        all_open = asyncio.Event()
        opened = 0

        async def one(http: aiohttp.ClientSession, i: int) -> None:
            nonlocal opened
            status, body = await get_json(http, "POST", base + "/sessions", {"responses_create_params": {"input": f"t{i}"}})
            statuses.append(status)
            session = f"{base}/sessions/{body['session_id']}"
            opened += 1
            if opened == n:
                all_open.set()
            await asyncio.wait_for(all_open.wait(), 60)  # every session is open at once
            status, result = await get_json(http, "POST", session + "/tools/where", {"arguments": {}})
            statuses.append(status)
            assert result == {"output": '{"runner":"A","call":1}', "ok": True}
            status, verdict = await get_json(http, "POST", session + "/verify", {"response": {"output": []}})
            statuses.append(status)
            assert verdict["metrics"]["calls_seen"] == 1
            status, _ = await get_json(http, "DELETE", session)
            statuses.append(status)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=250)) as http:
            tasks = [asyncio.create_task(one(http, i)) for i in range(n)]
            await asyncio.wait_for(all_open.wait(), 60)
            _, index = await get_json(http, "GET", url + "/")
            assert index["sessions"]["open"] == n and tool.live == n
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            _, index = await get_json(http, "GET", url + "/")
    assert statuses.count(201) == n and statuses.count(200) == 3 * n and len(statuses) == 4 * n
    assert index["sessions"]["open"] == 0 and index["stats"]["sessions_ended"] == n
    assert tool.setups == tool.teardowns == n and tool.max_in_tool > 50  # the tool calls overlapped


# --- sessions: idle reaping, busy sessions kept, body limit ----------------------------------


async def test_idle_sessions_are_reaped_but_busy_ones_are_not(fresh_plugins):
    plugins, tool = stamp_plugins(fresh_plugins, "A")
    app = create_app(plugins, ["stamp"], "scripted", session_idle_timeout=0.3, reap_interval=0.05)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        base = url + "/agents/stamp/sessions"
        _, idle = await get_json(http, "POST", base, {"responses_create_params": {"input": "x"}})
        _, busy = await get_json(http, "POST", base, {"responses_create_params": {"input": "y"}})
        # a call longer than the idle timeout keeps its session alive
        status, result = await get_json(http, "POST", f"{base}/{busy['session_id']}/tools/where",
                                        {"arguments": {"sleep": 0.6}})
        assert status == 200 and result["ok"], result
        status, error = await get_json(http, "POST", f"{base}/{idle['session_id']}/tools/where", {"arguments": {}})
        assert status == 404 and error["error"]["type"] == "unknown_session" and "expired" in error["error"]["message"]
        assert tool.teardowns == 1  # the reaper ran teardown_session
        for _ in range(100):  # bounded: the busy one goes too once idle
            _, index = await get_json(http, "GET", url + "/")
            if index["sessions"]["open"] == 0:
                break
            await asyncio.sleep(0.05)
        assert index["sessions"]["open"] == 0 and index["stats"]["sessions_reaped"] == 2 and tool.live == 0


async def test_body_size_is_limited(fresh_plugins):
    plugins, _tool = stamp_plugins(fresh_plugins, "A")
    async with serving(create_app(plugins, ["stamp"], "scripted", max_body_size=2048)) as url, \
            aiohttp.ClientSession() as http:
        status, error = await get_json(http, "POST", url + "/agents/stamp/sessions",
                                       {"responses_create_params": {"input": "x" * 4096}})
        assert status == 413 and error["error"]["type"] == "body_too_large"
        status, _ = await get_json(http, "POST", url + "/agents/stamp/sessions",
                                   {"responses_create_params": {"input": "x" * 1000}})
        assert status == 201


# --- security -------------------------------------------------------------------------------


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("gpu-box.example", False),
])
def test_only_loopback_binds_go_without_a_token(host, loopback):
    assert is_loopback(host) is loopback
    check_bind(host, "a-token")  # with a token any address is fine
    if loopback:
        check_bind(host, None)
    else:
        with pytest.raises(Exception, match="refusing to bind .* without a token"):
            check_bind(host, None)


def test_non_loopback_bind_without_token_refuses_to_start():
    result = subprocess.run([GYM, "serve", "--agent", "weather", "--model", "replay", "--host", "0.0.0.0"],
                            env=serve_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "serving on" not in result.stdout and "Traceback" not in result.stderr
    assert "Error: refusing to bind '0.0.0.0' without a token" in result.stderr


async def test_token_is_required_on_every_route_but_health(tmp_path, bare_plugins):
    token = "s3cret-token"
    # every route the app has (so a route added later is checked too), placeholders filled in
    app = create_app(bare_plugins, ["unused"], "replay")
    routes = sorted({(r.method, r.resource.canonical.format(agent="weather", session_id="x", tool="get_weather"))
                     for r in app.router.routes() if r.method != "HEAD"})
    assert len(routes) >= 12 and ("GET", "/health") in routes
    routes.remove(("GET", "/health"))
    with gym_serve("--agent", "weather", "--model", "replay", "--host", "127.0.0.2", "--token", token,
                   env=serve_env()) as (_proc, url):
        assert url.startswith("http://127.0.0.2:")
        async with aiohttp.ClientSession() as http:
            assert (await get_json(http, "GET", url + "/health"))[0] == 200
            for method, path in routes:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                    status, error = await get_json(http, method, url + path, headers=headers)
                    assert status == 401 and error["error"]["type"] == "unauthorized", (method, path, headers)
            status, index = await get_json(http, "GET", url + "/", headers={"Authorization": f"Bearer {token}"})
            assert status == 200 and index["auth"] is True
            status, doc = await get_json(http, "GET", url + "/openapi.json", headers={"Authorization": f"Bearer {token}"})
            assert doc["security"] == [{"bearer": []}] and doc["paths"]["/health"]["get"]["security"] == []
        out = tmp_path / "out.jsonl"
        refused = run_gym("collect", "--server", url, "--agent", "weather", "-o", str(out), "-q", env=serve_env())
        assert refused.returncode != 0 and "401 unauthorized" in refused.stderr and not out.exists()
        ok = run_gym("collect", "--server", url, "--agent", "weather", "-o", str(out), "--limit", "3", "-q",
                     env=serve_env(GYM_TOKEN=token))
        assert ok.returncode == 0, ok.stderr
        assert len(read_jsonl(out)) == 3
        assert token not in out.read_text() + ok.stdout + ok.stderr


# --- graceful stop --------------------------------------------------------------------------


async def test_sigterm_finishes_in_flight_requests_ends_sessions_and_exits_0(fake_openai, gym_env):
    fake_openai.latency = 0.5  # each model call takes 0.5 s: the rollout is in flight when we signal
    with gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env) as (proc, url):
        async with aiohttp.ClientSession() as http:
            _, left_open = await get_json(http, "POST", url + "/agents/weather/sessions",
                                          {"responses_create_params": {"input": "x"}})
            rollout = asyncio.create_task(get_json(http, "POST", url + "/agents/weather/rollouts",
                                                   {"task": read_jsonl(EXAMPLE)[1]}))
            for _ in range(200):  # bounded wait until the runner is inside the model call
                if fake_openai.count:
                    break
                await asyncio.sleep(0.01)
            assert fake_openai.count == 1
            proc.send_signal(signal.SIGTERM)
            status, line = await asyncio.wait_for(rollout, 20)
        assert status == 200 and line["reward"] == 1.0 and line["turns"] == 2  # finished after the signal
        assert fake_openai.count == 2
        assert proc.wait(20) == 0
        stderr = proc.stderr.read()
        assert "ended 1 open session(s) on shutdown" in stderr and "Traceback" not in stderr
        assert left_open["session_id"] not in stderr


async def test_ctrl_c_stops_listening_and_cuts_what_outlasts_the_grace(fake_openai, gym_env):
    """SIGINT: the listener closes at once; a rollout that finishes within --shutdown-grace is
    answered; one that would take longer is cut when the grace runs out (the runner does not
    wait for it); the runner still exits 0."""
    fake_openai.rules = [{"match": "Paris", "hang": 0.2, "times": 1}, {"match": "Oslo", "hang": 2.5}]
    task = lambda city: {"task": {"responses_create_params": {"input": f"weather in {city}?"}}}  # noqa: E731
    with gym_serve("--agent", "weather", "--model", "openai:fake", "--shutdown-grace", "1",
                   env=gym_env) as (proc, url):
        async with aiohttp.ClientSession() as http:
            quick = asyncio.create_task(get_json(http, "POST", url + "/agents/weather/rollouts", task("Paris")))
            slow = asyncio.create_task(get_json(http, "POST", url + "/agents/weather/rollouts", task("Oslo")))
            for _ in range(200):  # bounded wait until both rollouts are inside their model call
                if fake_openai.count >= 2:
                    break
                await asyncio.sleep(0.01)
            assert fake_openai.count == 2
            proc.send_signal(signal.SIGINT)
            await asyncio.sleep(0.1)
            assert proc.poll() is None  # still in its grace period...
            async with aiohttp.ClientSession() as fresh:  # ...but taking no new connection
                with pytest.raises(aiohttp.ClientConnectionError):
                    await fresh.get(url + "/health")
            status, line = await asyncio.wait_for(quick, 20)
            assert status == 200 and line["reward"] == 1.0 and line["turns"] == 2
            with pytest.raises(aiohttp.ClientError):  # cut, not answered after its 2.5 s model call
                await asyncio.wait_for(slow, 20)
        assert proc.wait(20) == 0
        stderr = proc.stderr.read()
        assert "in-flight requests get up to 1s" in stderr and "gym serve: stopped" in stderr
        assert "Traceback" not in stderr
    assert fake_openai.count == 3  # Paris's two calls and Oslo's first: nothing after the cut


async def test_a_runner_lost_mid_collection_sends_the_rest_to_the_other(fake_openai, gym_env, tmp_path, fresh_plugins):
    """SIGKILL one of two runners mid-collection: its in-flight rollouts end with a ``server``
    error, later ones go to the survivor, and every rollout has its line."""
    fake_openai.latency = 0.03
    with gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env) as (_p1, url1), \
            gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env) as (proc2, url2):
        config = CollectConfig(agent="weather", model="", output=tmp_path / "out.jsonl", num_repeats=2, parallel=4,
                               progress=False, servers=[url1, url2])

        async def kill_runner_2() -> None:
            for _ in range(500):  # bounded: until some rollouts are done on both runners
                if fake_openai.count >= 20:
                    break
                await asyncio.sleep(0.01)
            proc2.kill()

        killer = asyncio.create_task(kill_runner_2())
        summary = await collect(fresh_plugins(), config)
        await killer
        with urllib.request.urlopen(url1 + "/") as resp:
            survivor = json.loads(resp.read())["stats"]["rollouts"]
    ok = read_jsonl(tmp_path / "out.jsonl")
    failures = tmp_path / "out.failures.jsonl"
    failed = read_jsonl(failures) if failures.exists() else []  # failed rollouts: not in the output
    n_tasks = len(read_jsonl(EXAMPLE))
    assert sorted((l["task_index"], l["rollout_index"]) for l in ok + failed) == \
        [(t, r) for t in range(n_tasks) for r in range(2)]
    assert all(l["class"] == "server:runner" and url2 in l["message"] for l in failed)
    assert len(failed) <= 4  # at most what was in flight on the lost runner
    assert all(l["error"] is None and l["reward"] == 1.0 for l in ok) and survivor > len(ok) / 2
    assert summary["rollouts"] == len(ok) + len(failed) and summary["failed"] == len(failed)


async def test_collect_max_retries_reaches_the_runner(fake_openai, gym_env, tmp_path, fresh_plugins):
    """Retries happen where the model is called (on the runner), under the collector's
    --max-retries: 0 fails the rollout at the first 503, the default rides it out."""
    with gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env) as (_proc, url):
        results = {}
        for retries in (0, 2):
            fake_openai.faults = [{"status": 503, "retry_after": 0}]
            out = tmp_path / f"out-{retries}.jsonl"
            config = CollectConfig(agent="weather", model="", output=out, limit=1, parallel=1, progress=False,
                                   servers=[url], agent_config=AgentConfig(retry=RetryPolicy(max_retries=retries)))
            summary = await collect(fresh_plugins(), config)
            failures = out.with_name(out.stem + ".failures.jsonl")
            results[retries] = (summary, read_jsonl(failures) if failures.exists() else [])
    summary, failed = results[0]
    assert summary["failed"] == 1 and failed[0]["attempts"] == 1 and "503" in failed[0]["message"]
    summary, failed = results[2]
    assert summary["failed"] == 0 and failed == [] and summary["mean_reward"] == 1.0


async def test_a_rollout_the_collector_gave_up_on_stops_on_the_runner(fresh_plugins, tmp_path):
    """--timeout cuts the connection; the runner cancels that rollout's handler, so the slow
    tool stops and the session ends now, not after the tool's 60 s."""
    plugins, tool = stamp_plugins(fresh_plugins, "A", delay=60)
    app = create_app(plugins, ["stamp"], "scripted:1")
    async with serving(app) as url:
        config = CollectConfig(agent="stamp", model="", output=tmp_path / "out.jsonl", parallel=1, progress=False,
                               input=write_tasks(tmp_path / "tasks.jsonl", 1), servers=[url], timeout=0.5)
        summary = await collect(fresh_plugins(), config)
        assert summary["failed"] == 1 and summary["failures"] == {"timeout": 1}
        host = app[HOST_KEY]
        for _ in range(200):  # bounded wait for the disconnect to reach the handler
            if host.stats["rollouts_in_flight"] == 0:
                break
            await asyncio.sleep(0.05)
        assert host.stats["rollouts_in_flight"] == 0 and tool.in_tool == 0
        assert tool.setups == tool.teardowns == 1  # the session was closed, not leaked


def test_a_runner_takes_the_open_files_its_clients_need(fake_openai, gym_env, tmp_path):
    """Started with a soft limit of 200 open files, a runner serving 300 rollouts at once
    (600 connections: the collector's and the model's) raises its own soft limit."""
    fake_openai.latency = 0.3  # all 300 rollouts in flight at once
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 600)
    with gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env,
                   preexec_fn=open_file_limit(200)) as (_proc, url):
        out = tmp_path / "out.jsonl"
        result = run_gym("collect", "--server", url, "--agent", "weather", "-i", str(tasks), "-o", str(out),
                         "--parallel", "300", "--max-retries", "0", "-q", env=gym_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_jsonl(out)) == 600


# --- what a runner answers is checked like an input row ---------------------------------------


class JunkRunner:
    """A fake ``gym serve`` in a thread of its own: enough of a runner (``GET /``) for the
    collector to start, and ``POST /agents/stamp/rollouts`` answered by ``answer(body) ->
    (status, headers, raw bytes)``, which each test sets."""

    def __init__(self):
        self.answer = None
        self.url = ""
        self._loop = self._runner = None

    def start(self) -> str:
        from aiohttp import web
        import threading

        async def index(_request):
            return web.json_response({"model_spec": "fake", "agents": [
                {"name": "stamp", "model": "fake:1", "is_replay": False}]})

        async def rollout(request):
            status, headers, raw = self.answer(await request.json())
            return web.Response(status=status, headers=headers, body=raw)

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/", index)
            app.router.add_post("/agents/stamp/rollouts", rollout)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="junk-runner").start()
        assert ready.wait(10)
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="module")
def junk_runner():
    runner = JunkRunner()
    runner.start()
    yield runner
    runner.stop()


DROP = object()


def scored_line(body: dict, **changes) -> dict:
    """The line a well-behaved runner answers for rollout request ``body``, with ``changes``
    (``DROP`` removes a key)."""
    line = {**body["task"], "response": {"id": "r", "output": []}, "reward": 1.0, "metric_names": ["calls"],
            "calls": 2, "task_index": body["task_index"], "rollout_index": body["rollout_index"],
            "agent": "stamp", "model": "fake:1", "turns": 1, "tool_calls": 0, "tool_errors": 0,
            "stop_reason": "completed", "timing": {"total_s": 0.1, "model_s": 0.05, "tools_s": 0.0, "verify_s": 0.0},
            "error": None}
    for key, value in changes.items():
        if value is DROP:
            line.pop(key)
        else:
            line[key] = value
    return line


def answer_json(**changes):
    return lambda body: (200, {"Content-Type": "application/json"}, json.dumps(scored_line(body, **changes)).encode())


@pytest.mark.parametrize("answer, named", [
    (lambda body: (200, {}, b"<html>upstream hiccup</html>"), "not JSON"),
    (lambda body: (200, {}, b""), "not JSON"),
    (lambda body: (200, {}, b"[1, 2]"), "not a JSON object"),
    (lambda body: (200, {}, json.dumps(scored_line(body, task_index=body["task_index"] + 1)).encode()), "task_index"),
    (lambda body: (200, {}, json.dumps(scored_line(body, rollout_index=body["rollout_index"] + 5)).encode()),
     "rollout_index"),
    # any finite number is a reward (issue 14: 7 and -0.5 are rewards); JSON cannot carry NaN
    (answer_json(reward=[1.0]), "reward"),
    (answer_json(reward={"value": 1.0}), "reward"),
    (answer_json(reward="1.0"), "reward"),
    (answer_json(reward=True), "reward"),
    (answer_json(reward=None), "reward"),
    (answer_json(reward=DROP), "reward"),
    (answer_json(task_index=DROP), "task_index"),
    (answer_json(error="boom"), "error"),
    (answer_json(response=5), "response"),
    (answer_json(timing="fast"), "timing"),
    (answer_json(turns=-1), "turns"),
    (answer_json(metric_names=["nope"]), "metric_names"),
])
async def test_a_runner_reply_that_is_wrong_is_a_protocol_failure(junk_runner, tmp_path, fresh_plugins, answer, named):
    junk_runner.answer = answer
    config = CollectConfig(agent="stamp", model="", output=tmp_path / "out.jsonl", parallel=2, progress=False,
                           input=write_tasks(tmp_path / "tasks.jsonl", 3), servers=[junk_runner.url])
    summary = await collect(fresh_plugins(), config)
    assert summary["rollouts"] == 3 and summary["failed"] == 3 and summary["failures"] == {"server:protocol": 3}
    assert read_jsonl(config.output) == []  # nothing the runner said was written as a rollout
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert sorted(l["task_index"] for l in failed) == [0, 1, 2]
    for line in failed:
        assert line["class"] == "server:protocol" and junk_runner.url in line["message"], line
        assert named in line["message"], line["message"]


async def test_a_good_runner_reply_is_written_with_the_row_that_was_sent(junk_runner, tmp_path, fresh_plugins):
    """The row comes from the input, not from the runner's echo of it."""
    junk_runner.answer = lambda body: (200, {}, json.dumps(scored_line(
        body, responses_create_params={"input": "rewritten by the runner"})).encode())
    config = CollectConfig(agent="stamp", model="", output=tmp_path / "out.jsonl", parallel=2, progress=False,
                           input=write_tasks(tmp_path / "tasks.jsonl", 3), servers=[junk_runner.url])
    summary = await collect(fresh_plugins(), config)
    assert summary["failed"] == 0 and summary["mean_reward"] == 1.0
    lines = sorted(read_jsonl(config.output), key=lambda l: l["task_index"])
    assert [l["responses_create_params"]["input"] for l in lines] == ["task 0", "task 1", "task 2"]
    assert [l["calls"] for l in lines] == [2, 2, 2] and all(l["metric_names"] == ["calls"] for l in lines)


# --- a row over the runner's body limit ------------------------------------------------------


async def test_a_row_over_the_body_limit_fails_alone_and_the_run_goes_on(fresh_plugins, tmp_path):
    plugins, _tool = stamp_plugins(fresh_plugins, "A")
    tasks = write_tasks(tmp_path / "tasks.jsonl", 4)
    rows = tasks.read_text().splitlines()
    rows[1] = json.dumps({"responses_create_params": {"input": "x" * 8192}})
    tasks.write_text("\n".join(rows) + "\n")
    async with serving(create_app(plugins, ["stamp"], "scripted:1", max_body_size=4096)) as url:
        config = CollectConfig(agent="stamp", model="", output=tmp_path / "out.jsonl", parallel=1, progress=False,
                               input=tasks, servers=[url])
        summary = await collect(fresh_plugins(), config)
        assert summary["failed"] == 1 and summary["failures"] == {"server:413": 1}
        assert sorted(l["task_index"] for l in read_jsonl(config.output)) == [0, 2, 3]
        [failed] = read_jsonl(tmp_path / "out.failures.jsonl")
        assert failed["task_index"] == 1 and failed["class"] == "server:413"
        assert "--max-body-size" in failed["message"] and url in failed["message"]
        # a resume tries it again, fails it again, and still ends
        summary = await collect(fresh_plugins(), attrs.evolve(config, resume=True))
        assert summary["failed"] == 1 and summary["resumed"] == 3


# --- runners that are full, and runners that froze -------------------------------------------


async def test_a_full_runner_answers_503_and_the_collector_waits_instead_of_failing(fresh_plugins, tmp_path):
    plugins, tool = stamp_plugins(fresh_plugins, "A", delay=0.05)
    app = create_app(plugins, ["stamp"], "scripted:2", max_sessions=2)
    async with serving(app) as url:
        config = CollectConfig(agent="stamp", model="", output=tmp_path / "out.jsonl", parallel=6, progress=False,
                               input=write_tasks(tmp_path / "tasks.jsonl", 12), servers=[url])
        summary = await collect(fresh_plugins(), config)
        stats = app[HOST_KEY].stats
    assert summary["failed"] == 0 and summary["rollouts"] == 12 and len(read_jsonl(config.output)) == 12
    assert stats["sessions_refused"] > 0  # the runner did say "full", and nobody saw it as a failure
    assert tool.max_in_tool <= 2 and tool.live == 0


async def test_max_sessions_answers_503_with_retry_after(fresh_plugins):
    plugins, tool = stamp_plugins(fresh_plugins, "A")
    async with serving(create_app(plugins, ["stamp"], "scripted", max_sessions=2)) as url, \
            aiohttp.ClientSession() as http:
        base = url + "/agents/stamp/sessions"
        row = {"responses_create_params": {"input": "x"}}
        opened = [await get_json(http, "POST", base, row) for _ in range(2)]
        assert [status for status, _ in opened] == [201, 201]
        async with http.post(base, json=row) as resp:
            error = await resp.json()
            assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
        assert error["error"]["type"] == "too_many_sessions" and "--max-sessions 2" in error["error"]["message"]
        status, _ = await get_json(http, "POST", url + "/agents/stamp/rollouts", {"task": row})
        assert status == 503  # a rollout holds a session too
        assert await get_json(http, "DELETE", f"{base}/{opened[0][1]['session_id']}") == (200, {"ended": True})
        assert (await get_json(http, "POST", base, row))[0] == 201
    assert tool.setups == 3 and tool.live == 0


def test_a_frozen_runner_becomes_timeout_failures_and_the_run_ends(fake_openai, gym_env, tmp_path):
    """SIGSTOP one of two runners mid-collection: what it holds fails as server:timeout
    after --server-timeout, the rest goes to the other runner, and gym collect exits."""
    fake_openai.latency = 0.02
    help_text = run_gym("collect", "--help", env=gym_env).stdout
    assert "--server-timeout" in help_text and "Default: 1800" in help_text
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 40)
    out = tmp_path / "out.jsonl"
    with gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env) as (_p1, url1), \
            gym_serve("--agent", "weather", "--model", "openai:fake", env=gym_env) as (proc2, url2):
        collector = subprocess.Popen([GYM, "collect", "--server", url1, "--server", url2, "--agent", "weather",
                                      "-i", str(tasks), "-o", str(out), "-p", "4", "--server-timeout", "2", "-q"],
                                     env=gym_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(1000):  # bounded: until some rollouts are written
                if out.exists() and len(out.read_text().splitlines()) >= 6:
                    break
                time.sleep(0.01)
            proc2.send_signal(signal.SIGSTOP)
            _stdout, stderr = collector.communicate(timeout=90)
        finally:
            proc2.send_signal(signal.SIGCONT)
            if collector.poll() is None:
                collector.kill()
                collector.wait()
    assert collector.returncode == 1, stderr
    ok = read_jsonl(out)
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert failed and all(l["class"] == "server:timeout" for l in failed), failed
    assert all(url2 in l["message"] and "--server-timeout 2" in l["message"] for l in failed)
    assert sorted(l["task_index"] for l in ok + failed) == list(range(40))
    assert "Traceback" not in stderr


# --- web pages cannot drive a runner -----------------------------------------------------------


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, dict]:
    """One request with exactly these headers (``Host`` too), by http.client."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    finally:
        conn.close()


def runner_stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/") as resp:
        return json.loads(resp.read())["stats"]


ROW = json.dumps({"task": read_jsonl(EXAMPLE)[1]}).encode()  # a recorded task: replay answers it


@pytest.mark.parametrize("headers, status, kind", [
    ({"Host": "evil.example"}, 403, "untrusted_host"),
    ({"Host": "attacker.example:{port}"}, 403, "untrusted_host"),
    ({"Host": "127.0.0.1.evil.example:{port}"}, 403, "untrusted_host"),
    ({"Host": "127.0.0.1:{port}", "Origin": "http://evil.example"}, 403, "cross_origin"),
    ({"Host": "127.0.0.1:{port}", "Origin": "http://localhost:1"}, 403, "cross_origin"),
    ({"Host": "127.0.0.1:{port}", "Origin": "null"}, 403, "cross_origin"),
    ({"Host": "127.0.0.1:{port}", "Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ({"Host": "127.0.0.1:{port}", "Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ({"Host": "127.0.0.1:{port}"}, 415, "unsupported_media_type"),  # no Content-Type at all
    ({"Host": "localhost:{port}", "Content-Type": "application/json; charset=utf-8"}, 200, None),
    ({"Host": "127.0.0.1:{port}", "Origin": "http://127.0.0.1:{port}", "Content-Type": "application/json"}, 200, None),
])
def test_only_same_host_same_origin_json_requests_reach_a_runner(weather_server, headers, status, kind):
    port = weather_server.rsplit(":", 1)[1]
    headers = {k: v.format(port=port) for k, v in headers.items()}
    before = runner_stats(weather_server)["rollouts"]
    got, response_headers, body = raw_request(weather_server, "POST", "/agents/weather/rollouts", ROW, headers)
    assert got == status, body
    if kind is None:
        assert body["reward"] == 1.0 and runner_stats(weather_server)["rollouts"] == before + 1
    else:
        assert body["error"]["type"] == kind and body["error"]["message"]
        assert response_headers["Connection"] == "close"
        assert runner_stats(weather_server)["rollouts"] == before  # refused before anything ran


def test_a_bad_host_is_refused_on_every_route(weather_server):
    for method, path in (("GET", "/"), ("GET", "/openapi.json"), ("GET", "/agents/weather/tools"),
                         ("DELETE", "/agents/weather/sessions/x")):
        status, _, body = raw_request(weather_server, method, path, headers={"Host": "rebound.example"})
        assert status == 403 and body["error"]["type"] == "untrusted_host", (method, path)
    assert raw_request(weather_server, "GET", "/", headers={"Host": "[::1]"})[0] == 200


#: What a hostile page runs: POST a rollout and a model call, as text/plain (a "simple"
#: request: no preflight) and as JSON (preflighted when cross-origin).
ATTACK = """async runner => {
  const row = {task: {responses_create_params: {input: "weather in Paris?"}}};
  const out = [];
  for (const [path, body] of [["/agents/weather/rollouts", row], ["/v1/responses", {input: "hi"}]]) {
    for (const type of ["text/plain", "application/json"]) {
      try {
        const r = await fetch(runner + path, {method: "POST", body: JSON.stringify(body),
          mode: type === "text/plain" && runner ? "no-cors" : "cors", headers: {"Content-Type": type}});
        out.push(type + " " + (r.type === "opaque" ? "opaque" : r.status + " " + await r.text()));
      } catch (e) { out.push(type + " blocked " + e); }
    }
  }
  return out;
}"""


@pytest.fixture
def chromium():
    """Headless chromium as the viewer's browser tests launch it; ``rebind.test`` resolves
    to 127.0.0.1, as a DNS-rebinding attacker's name would. Per test: Playwright's sync API
    holds an event loop in this thread, which the async tests after it must not find."""
    from .test_viewer_browser import CHROMIUM, CHROMIUM_ARGS, sync_api  # skips without chromium

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            *CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.test 127.0.0.1"])
        yield browser
        browser.close()


def test_a_web_page_cannot_drive_a_runner(weather_server, chromium):
    """A page of another origin posts text/plain (no preflight) and JSON (preflight) to the
    runner; a page whose name was rebound to 127.0.0.1 posts same-origin. Nothing runs."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>cats</title><p>nothing to see"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    before = runner_stats(weather_server)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{attacker.server_port}/")
        cross_origin = page.evaluate(ATTACK, weather_server)
        # the attacker's page, once its name points at 127.0.0.1: the runner's port is its origin
        page.goto(f"http://rebind.test:{weather_server.rsplit(':', 1)[1]}/health")
        same_origin = page.evaluate(ATTACK, "")
    finally:
        context.close()
        attacker.shutdown()
    after = runner_stats(weather_server)
    assert (after["rollouts"], after["model_calls"]) == (before["rollouts"], before["model_calls"]), \
        (cross_origin, same_origin)
    assert [r.split()[1] for r in cross_origin] == ["opaque", "blocked"] * 2  # sent blind, or not at all
    assert all("untrusted_host" in r for r in same_origin), same_origin  # the page reads only the refusal


# --- slow clients: timeouts, a connection cap, strangers shown the door -------------------------


def connect(url: str, timeout: float = 20):
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_until_closed(sock) -> bytes:
    """Everything the runner sends until it closes the connection (the socket's timeout
    only stops a hang)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_and_unauthenticated_connections_are_closed(tmp_path):
    token = "s3cret-token"
    with gym_serve("--agent", "weather", "--model", "replay", "--token", token, "--read-timeout", "1",
                   env=serve_env()) as (_proc, url):
        host = url.removeprefix("http://")
        # headers that never end: closed, without an answer
        slow = connect(url)
        slow.sendall(f"POST /agents/weather/rollouts HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
        assert read_until_closed(slow) == b""
        # an authorised request whose body never comes: 408, closed
        stalled = connect(url)
        stalled.sendall(f"POST /agents/weather/rollouts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        answer = read_until_closed(stalled)
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer and b"--read-timeout" in answer
        # a stranger's request is answered 401 at once and its connection closed, body or not
        stranger = connect(url)
        stranger.sendall(f"POST /agents/weather/rollouts HTTP/1.1\r\nHost: {host}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode())
        answer = read_until_closed(stranger)
        assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer
        for sock in (slow, stalled, stranger):
            sock.close()


def test_slow_loris_cannot_starve_a_runner_of_connections(tmp_path):
    """400 connections that send their headers a byte at a time, against a token-protected
    runner that may open 256 files: an authorised request is still answered (the slow ones
    are closed to make room, oldest first), and so is a rollout."""
    token = "s3cret-token"
    help_text = run_gym("serve", "--help", env=serve_env()).stdout
    assert "--max-connections" in help_text and "--read-timeout" in help_text
    with gym_serve("--agent", "weather", "--model", "replay", "--token", token, env=serve_env(),
                   preexec_fn=open_file_limit(256, 256)) as (proc, url):
        host = url.removeprefix("http://")
        slow = []
        try:
            for i in range(400):
                sock = connect(url)
                sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow-{i}: ".encode())
                slow.append(sock)
            for sock in slow[::7]:  # keep dribbling (those the runner closed say so)
                try:
                    sock.send(b"x")
                except OSError:
                    pass
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            status, _, index = raw_request(url, "GET", "/", headers=headers)
            assert status == 200 and index["auth"] is True
            connections = index["connections"]
            assert connections["max"] < 256 // 2 and connections["open"] <= connections["max"]
            assert connections["connections_evicted"] >= 400 - connections["max"]
            status, _, line = raw_request(url, "POST", "/agents/weather/rollouts", ROW, headers)
            assert status == 200 and line["reward"] == 1.0
        finally:
            for sock in slow:
                sock.close()
        assert proc.poll() is None
    assert "Too many open files" not in proc.stderr.read()


async def test_past_the_connection_cap_with_every_connection_busy_a_client_gets_503(fresh_plugins):
    """Nothing to evict (both connections are inside a request): the third gets 503 with
    Retry-After, which served collection waits out, and is closed."""
    plugins, tool = stamp_plugins(fresh_plugins, "A")
    app = create_app(plugins, ["stamp"], "scripted", max_connections=2)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        base = url + "/agents/stamp/sessions"
        _, opened = await get_json(http, "POST", base, {"responses_create_params": {"input": "x"}})
        await http.close()  # its connection goes: the two slow calls below hold the only two
        slow_calls = []
        for _ in range(2):
            client = aiohttp.ClientSession()
            slow_calls.append((client, asyncio.create_task(get_json(
                client, "POST", f"{base}/{opened['session_id']}/tools/where", {"arguments": {"sleep": 1.0}}))))
        for _ in range(200):  # bounded: until both are inside the tool
            if tool.in_tool == 2:
                break
            await asyncio.sleep(0.01)
        assert tool.in_tool == 2
        reader, writer = await asyncio.open_connection(*url.removeprefix("http://").split(":"))
        writer.write(f"GET /health HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 20)  # until the runner closes it
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer and b"too_many_connections" in answer
        for client, call in slow_calls:
            assert (await asyncio.wait_for(call, 20))[0] == 200
            await client.close()
        assert app[HOST_KEY].guard.stats["connections_refused"] == 1
