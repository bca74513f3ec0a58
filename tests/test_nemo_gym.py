"""A drop-in for NeMo Gym users (issue 14): mixed-environment inputs routed by ``agent_ref``,
output NeMo Gym's own tools read, the request as sent, rewards as they are.

Real ``gym collect`` (and ``gym serve``) subprocesses against the fake OpenAI server, with a
second environment, ``tally`` (tests/envs/gym_tally.py, on ``PYTHONPATH``), beside
``weather``; NeMo Gym's own ``reward_profile.py`` reads the output (tests/nemo_gym_harness.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gymcore.dataset import iter_rows
from gymcore.errors import InputError

from .conftest import read_jsonl, run_gym
from .test_serve import gym_serve, serve_env

HERE = Path(__file__).resolve().parent
ENVS = HERE / "envs"
NG_DATA = HERE / "data/nemo_gym"


@pytest.fixture
def env(gym_env):
    """``gym_env`` with ``tally`` installed (and loaded, should the suite pin the plugins)."""
    pinned = gym_env.get("GYM_LOAD_PLUGINS")
    return {**gym_env, "PYTHONPATH": str(ENVS), **({"GYM_LOAD_PLUGINS": pinned + ",tally"} if pinned else {})}


def weather_row(city: str, **extra) -> dict:
    return {"responses_create_params": {"input": f"weather in {city}?"},
            "verifier_metadata": {"expected_city": city}, **extra}


def tally_row(word: str, **meta) -> dict:
    return {"responses_create_params": {"input": f"how many letters in {word}?"},
            "verifier_metadata": meta, "agent_ref": {"name": "tally", "type": "responses_api_agents"}}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def collect(tasks: Path, out: Path, *extra: str, env: dict) -> subprocess.CompletedProcess:
    return run_gym("collect", "--model", "openai:m", "--input", str(tasks), "--output", str(out), "-q",
                   "--parallel", "4", *extra, env=env)


def mixed_rows() -> list[dict]:
    return [weather_row("Paris"), tally_row("apple"), weather_row("Oslo"), tally_row("kiwi"),
            weather_row("Tokyo", agent_ref={"name": "weather"})]


def check_routed(out: Path, repeats: int) -> list[dict]:
    lines = read_jsonl(out)
    assert len(lines) == 5 * repeats
    tools = {"weather": "get_weather", "tally": "count_letters"}
    for line in lines:
        expected = "tally" if line["task_index"] in (1, 3) else "weather"
        assert line["agent"] == expected
        assert line["agent_ref"]["name"] == expected
        assert [t["name"] for t in line["responses_create_params"]["tools"]] == [tools[expected]]
        assert ("tallied" in line["metric_names"]) == (expected == "tally")
        assert line["_ng_task_index"] == line["task_index"] and line["_ng_rollout_index"] == line["rollout_index"]
    # task 0 (a weather row without agent_ref), not the first line: lines come in completion order
    assert next(l for l in lines if l["task_index"] == 0)["agent_ref"] == {"name": "weather"}
    assert {json.dumps(l["agent_ref"]) for l in lines if l["agent"] == "tally"} == {  # the row's own, type kept
        json.dumps({"name": "tally", "type": "responses_api_agents"})}
    return lines


def test_mixed_input_is_routed_by_agent_ref_with_agent_as_the_default(tmp_path, env):
    tasks = write_rows(tmp_path / "tasks.jsonl", mixed_rows())
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, "--agent", "weather", "-n", "2", env=env)
    assert result.returncode == 0, result.stderr
    check_routed(out, 2)
    summary = json.loads((tmp_path / "out.metrics.json").read_text())
    assert summary["environments"]["tally"]["rollouts"] == 4
    assert summary["environments"]["weather"]["rollouts"] == 6
    assert "environments" in result.stdout and "tally: rollouts=4" in result.stdout
    assert json.loads((tmp_path / "out.run.json").read_text())["environments"] == ["tally", "weather"]
    aggregate = json.loads((tmp_path / "out_aggregate_metrics.json").read_text())
    assert [e["agent_ref"]["name"] for e in aggregate] == ["tally", "weather"]
    materialized = read_jsonl(tmp_path / "out_materialized_inputs.jsonl")
    assert [(m["_ng_task_index"], m["_ng_rollout_index"], m["agent_ref"]["name"]) for m in materialized] == [
        (t, r, "tally" if t in (1, 3) else "weather") for t in range(5) for r in range(2)]


def test_every_row_naming_its_environment_needs_no_agent_and_resumes(tmp_path, env):
    rows = [tally_row("fig"), weather_row("Paris", agent_ref={"name": "weather"})]
    tasks = write_rows(tmp_path / "tasks.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, "--limit", "1", env=env)
    assert result.returncode == 0, result.stderr
    result = collect(tasks, out, "--resume", env=env)  # raise the limit: the weather row now
    assert result.returncode == 0, result.stderr
    assert [(l["task_index"], l["agent"]) for l in read_jsonl(out)] == [(0, "tally"), (1, "weather")]
    assert json.loads((tmp_path / "out.metrics.json").read_text())["environments"]["weather"]["rollouts"] == 1


def test_a_row_without_agent_ref_needs_agent(tmp_path, env):
    tasks = write_rows(tmp_path / "tasks.jsonl", [tally_row("fig"), weather_row("Paris")])
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, env=env)
    assert result.returncode == 1
    assert f"{tasks}:2: field 'agent_ref': missing" in result.stderr and "--agent" in result.stderr
    assert not out.exists()


def test_an_unknown_agent_ref_names_its_line_before_anything_runs(tmp_path, env, fake_openai):
    rows = [weather_row("Paris"), weather_row("Oslo"), weather_row("Rome", agent_ref={"name": "nope"})]
    tasks = write_rows(tmp_path / "tasks.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, "--agent", "weather", env=env)
    assert result.returncode == 1
    assert f"{tasks}:3: field 'agent_ref.name': environment 'nope' is not available" in result.stderr
    assert not out.exists() and fake_openai.requests == []
    bad = write_rows(tmp_path / "bad.jsonl", [weather_row("Paris", agent_ref="weather")])
    result = collect(bad, tmp_path / "bad-out.jsonl", "--agent", "weather", env=env)
    assert result.returncode == 1 and f"{bad}:1: field 'agent_ref': expected an object" in result.stderr


def test_served_rows_go_to_a_runner_hosting_their_environment(tmp_path, env, fake_openai):
    runner_env = {**serve_env(), **{k: v for k, v in env.items() if k.startswith(("OPENAI_", "PYTHON", "GYM_LOAD"))}}
    tasks = write_rows(tmp_path / "tasks.jsonl", mixed_rows())
    with gym_serve("--agent", "weather", "--model", "openai:m", env=runner_env) as (_w, weather_url), \
            gym_serve("--agent", "tally", "--model", "openai:m", env=runner_env) as (_t, tally_url):
        out = tmp_path / "out.jsonl"
        result = collect(tasks, out, "--agent", "weather", "--server", weather_url, "--server", tally_url, env=env)
        assert result.returncode == 0, result.stderr
        check_routed(out, 1)
        unknown = write_rows(tmp_path / "unknown.jsonl",
                             [tally_row("fig"), weather_row("x", agent_ref={"name": "math"})])
        result = collect(unknown, tmp_path / "unknown-out.jsonl", "--server", weather_url, "--server", tally_url,
                         env=env)
        assert result.returncode == 1
        assert f"{unknown}:2: field 'agent_ref.name': environment 'math' is not available" in result.stderr


def test_rewards_are_any_finite_number_with_components_and_a_pass_threshold(tmp_path, env):
    rows = [tally_row("a", reward=-0.5), tally_row("b", reward=2.0, reward_components={"x": 1.5, "y": 0.5}),
            tally_row("c", reward=0.75, reward_components={"x": 0.5}), tally_row("d", reward=0.25)]
    tasks = write_rows(tmp_path / "tasks.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, "--pass-threshold", "0.5", env=env)
    assert result.returncode == 0, result.stderr
    lines = {l["task_index"]: l for l in read_jsonl(out)}
    assert [lines[i]["reward"] for i in range(4)] == [-0.5, 2.0, 0.75, 0.25]
    assert lines[1]["reward_components"] == {"x": 1.5, "y": 0.5} and "reward_components" not in lines[0]
    assert "reward_components" not in lines[1]["metric_names"]
    warned = [w for w in result.stderr.splitlines() if "reward_components" in w]
    assert len(warned) == 1 and "task 2" in warned[0] and "GDPO" in warned[0]  # 0.75 is not 0.5
    summary = json.loads((tmp_path / "out.metrics.json").read_text())
    assert summary["pass_threshold"] == 0.5 and summary["pass@1"] == 0.5  # 2.0 and 0.75 pass
    assert "pass_threshold: 0.5" in result.stdout
    aggregate = json.loads((tmp_path / "out_aggregate_metrics.json").read_text())
    assert aggregate[0]["agent_metrics"]["pass@1/passed"] == 50.0
    assert aggregate[0]["agent_metrics"]["min/reward"] == -0.5


def test_served_rewards_outside_0_1_are_rewards_not_protocol_errors(tmp_path, env):
    """The collector checks a runner's reply like a line it would write: any finite reward."""
    runner_env = {**serve_env(), **{k: v for k, v in env.items() if k.startswith(("OPENAI_", "PYTHON", "GYM_LOAD"))}}
    tasks = write_rows(tmp_path / "tasks.jsonl", [tally_row("a", reward=-0.5), tally_row("b", reward=2.0)])
    out = tmp_path / "out.jsonl"
    with gym_serve("--agent", "tally", "--model", "openai:m", env=runner_env) as (_t, tally_url):
        result = collect(tasks, out, "--server", tally_url, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(line["reward"] for line in read_jsonl(out)) == [-0.5, 2.0]


def test_seed_repeats_and_the_recorded_request_is_what_the_server_received(tmp_path, env, fake_openai):
    tasks = write_rows(tmp_path / "tasks.jsonl", [weather_row("Paris"), tally_row("fig")])
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, "--agent", "weather", "-n", "3", "--seed-repeats", "--temperature", "0.3", env=env)
    assert result.returncode == 0, result.stderr
    first_calls = {}
    for request in fake_openai.requests:
        body = request["body"]
        if not any(item.get("type") == "function_call_output" for item in body["input"]):  # a first call
            first_calls[(body["input"][-1]["content"], body["seed"])] = body
    assert len(first_calls) == 6
    rows = [json.loads(line) for line in tasks.read_text().splitlines()]
    for line in read_jsonl(out):
        sent = dict(line["responses_create_params"])
        assert sent["seed"] == line["rollout_index"] and sent["temperature"] == 0.3
        received = first_calls[(sent["input"], line["rollout_index"])]
        assert {**received, "input": sent["input"]} == {**sent, "model": "m"}  # model: the backend's name
        assert received["input"] == [{"role": "user", "content": sent["input"]}]
        assert line["row_responses_create_params"] == rows[line["task_index"]]["responses_create_params"]
    materialized = read_jsonl(tmp_path / "out_materialized_inputs.jsonl")
    assert [m["responses_create_params"]["seed"] for m in materialized] == [0, 1, 2, 0, 1, 2]
    # the output fed back as input is the same task: the row's own params, not what was sent
    again = tmp_path / "again.jsonl"
    result = collect(out, again, "--agent", "weather", "--limit", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert read_jsonl(again)[0]["responses_create_params"] == rows[0]["responses_create_params"] | {
        "tools": read_jsonl(again)[0]["responses_create_params"]["tools"]}


def test_seed_repeats_is_part_of_what_the_run_is(tmp_path, env):
    tasks = write_rows(tmp_path / "tasks.jsonl", [tally_row("fig")])
    out = tmp_path / "out.jsonl"
    assert collect(tasks, out, env=env).returncode == 0
    result = collect(tasks, out, "--resume", "--seed-repeats", env=env)
    assert result.returncode == 1 and "--seed-repeats: False then, True now" in result.stderr


# --- NeMo Gym's own files and code --------------------------------------------------

NG_TASK_FILES = sorted(p for p in (NG_DATA / "resources_servers").rglob("*.jsonl"))
#: the 10 rows of the sample NeMo Gym builds from a prompt config at run time
NG_REFUSED = {"aviary/data/bixbench_example.jsonl": 5, "finance_sec_search/data/example_questions.jsonl": 5}


def test_nemo_gym_task_files_are_read_row_by_row():
    assert (NG_DATA / "LICENSE").read_text().lstrip().startswith("Apache License")
    valid, refused, with_ref = 0, [], 0
    for path in NG_TASK_FILES:
        for _index, _line, item in iter_rows(path):
            if isinstance(item, InputError):
                refused.append((str(path.relative_to(NG_DATA / "resources_servers")), str(item)))
            else:
                valid += 1
                with_ref += "agent_ref" in item.extra
    assert valid == 25 and with_ref == 15
    counts = {name: sum(1 for n, _ in refused if n == name) for name in NG_REFUSED}
    assert counts == NG_REFUSED and len(refused) == 10
    assert all("field 'responses_create_params': missing" in message for _name, message in refused)


def test_a_nemo_gym_mixed_file_names_environments_that_are_not_installed(tmp_path, env):
    tasks = NG_DATA / "resources_servers/jailbreak_detection/data/example.jsonl"
    result = collect(tasks, tmp_path / "out.jsonl", env=env)
    assert result.returncode == 1
    assert f"{tasks}:1: field 'agent_ref.name': environment 'jailbreak_" in result.stderr


def pandas_python() -> str:
    try:
        import pandas  # noqa: F401
    except ImportError:
        pytest.skip("pandas is not installed (make install puts it in .venv): NeMo Gym's reward_profile.py needs it")
    return sys.executable


def test_nemo_gym_profiling_reads_our_output_with_our_figures(tmp_path, env):
    python = pandas_python()
    rows = [tally_row("a", reward=1.0), tally_row("b", reward=0.0), weather_row("Paris"), weather_row("Oslo"),
            tally_row("c", reward=1.0), weather_row("Atlantis")]
    tasks = write_rows(tmp_path / "tasks.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = collect(tasks, out, "--agent", "weather", "-n", "2", env=env)
    assert result.returncode == 0, result.stderr
    ours = json.loads((tmp_path / "out.metrics.json").read_text())
    read = subprocess.run([python, str(HERE / "nemo_gym_harness.py"), str(out), "1.0"], capture_output=True,
                          text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    theirs = json.loads(read.stdout)
    aggregate = {e["agent_ref"]["name"]: e for e in json.loads((tmp_path / "out_aggregate_metrics.json").read_text())}
    for name, figures in ours["environments"].items():
        assert theirs["profile"][name]["mean/reward"] == pytest.approx(figures["mean_reward"])
        assert theirs["aggregate"][name]["mean/reward"] == pytest.approx(figures["mean_reward"])
        for k in (1, 2):
            assert theirs["pass"][name][f"pass@{k}/passed"] == pytest.approx(100 * figures[f"pass@{k}"])
        ng = theirs["aggregate"][name]
        mine = aggregate[name]["agent_metrics"]
        for key in ("mean/reward", "max/reward", "min/reward", "median/reward", "std/reward", "mean/turns",
                    "mean/input_tokens"):
            assert mine[key] == pytest.approx(ng[key]), key
    every = [l for l in read_jsonl(out)]
    assert ours["mean_reward"] == pytest.approx(sum(l["reward"] for l in every) / len(every))


@pytest.mark.parametrize("reward", [-0.5, 2.0, -1e6, 0.0, 1.0])
def test_any_finite_reward_is_a_verdict(reward):
    from gymcore.data import as_verdict

    assert as_verdict({"reward": reward}).reward == reward


@pytest.mark.parametrize("value, says", [
    (float("nan"), "not a finite number"), (float("inf"), "not a finite number"),
    ({"reward": 1.0, "reward_components": {"a": float("nan")}}, "reward component 'a'"),
    ({"reward": 1.0, "reward_components": [1.0]}, "reward_components of type list"),
])
def test_nan_and_infinity_stay_failures(value, says):
    from gymcore.data import VerdictError, as_verdict

    with pytest.raises(VerdictError, match=says):
        as_verdict(value)


def test_the_viewer_breaks_a_mixed_run_down_by_environment_at_the_runs_threshold(tmp_path, env):
    from gymcore.viewer.app import create_app

    rows = [tally_row("a", reward=0.6), tally_row("b", reward=0.4), weather_row("Paris"), weather_row("Oslo")]
    tasks = write_rows(tmp_path / "tasks.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert collect(tasks, out, "--agent", "weather", "--pass-threshold", "0.5", env=env).returncode == 0
    summary = json.loads((tmp_path / "out.metrics.json").read_text())
    client = create_app(out, wait=None).test_client()
    overview = client.get("/api/overview").get_json()
    assert overview["pass_threshold"] == 0.5
    assert overview["pass_at"]["pass@1"] == pytest.approx(summary["pass@1"])  # same passes as the run
    environments = {name: (n, mean, rate) for name, n, mean, rate in overview["environments"]}
    assert environments["tally"] == (2, pytest.approx(0.5), pytest.approx(0.5))  # 0.6 passes, 0.4 does not
    assert environments["weather"][0] == 2
    html = client.get("/").get_data(as_text=True)
    assert "pass: reward ≥ 0.5" in html and "<th>tally</th>" in html


def test_gym_verify_counts_passes_at_the_runs_threshold(tmp_path, env):
    tasks = write_rows(tmp_path / "tasks.jsonl", [tally_row("a", reward=0.6), tally_row("b", reward=0.4)])
    out = tmp_path / "out.jsonl"
    assert collect(tasks, out, "--pass-threshold", "0.5", env=env).returncode == 0
    result = run_gym("verify", str(out), "--output", str(tmp_path / "again.jsonl"), env=env)
    assert result.returncode == 0, result.stderr
    assert "pass_threshold: 0.5" in result.stdout and "pass@1: 0.5000" in result.stdout


def test_the_aggregate_file_of_a_large_run_is_written_as_it_is_made(tmp_path):
    """20,000 tasks: the document's groups are as many as the tasks; held all at once before
    the file was written they took ~200 MB (a 20,000-rollout gym collect peaked at 277 MB
    against 44 MB without the file). Now each group is written as it is made."""
    import tracemalloc

    from gymcore.nemo_gym import write_aggregate_metrics

    def lines():
        for i in range(20_000):
            yield {"reward": float(i % 2), "task_index": i, "rollout_index": 0, "agent": "weather",
                   **{f"metric_{k}": k * 0.5 for k in range(12)},
                   "response": {"usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}}}

    tracemalloc.start()
    try:
        path = write_aggregate_metrics(tmp_path / "out.jsonl", lines(), 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = json.loads(path.read_text())
    assert len(written[0]["group_level_metrics"]) == 20_000
    assert written[0]["agent_metrics"]["mean/reward"] == 0.5
    assert peak < 60 * 1024 * 1024, f"peak {peak / 2**20:.0f} MB"
