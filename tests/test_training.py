"""Training rows from rollouts collected with --return-tokens (real `gym collect` runs against
the fake vLLM-like server): to_sequences in both drift modes, the TRL and verl adapters
checked against the contracts their code states, and `gym export`."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from gymcore.data import Rollout, converter
from gymcore.training import DriftError, model_calls, to_sequences, trl_rollout_output, verl_agent_loop_output

from .conftest import read_jsonl, run_gym, weather_tasks
from .fake_openai import FakeOpenAI
from .test_tokens import env_for


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of 3 weather tasks x 2: one whose calls extend each other, one that drifts."""
    fake = FakeOpenAI(keep_requests=False)
    fake.start_in_thread()
    tmp = tmp_path_factory.mktemp("runs")
    tasks = weather_tasks(tmp / "in.jsonl", 3)
    paths = {}
    try:
        for name, drift in (("clean", False), ("drift", True)):
            fake.drift_tokens = drift
            paths[name] = tmp / f"{name}.jsonl"
            result = run_gym("collect", "--agent", "weather", "--model", "openai-chat:m", "--return-tokens",
                             "--input", str(tasks), "-n", "2", "-q", "--output", str(paths[name]), env=env_for(fake))
            assert result.returncode == 0, result.stderr
    finally:
        fake.stop()
    return paths


def first(path):
    return read_jsonl(path)[0]


# --- to_sequences ----------------------------------------------------------------------


def test_a_clean_rollout_is_one_row_masking_everything_the_model_did_not_generate(runs):
    line = first(runs["clean"])
    calls = model_calls(line)
    assert len(calls) == 2
    [row] = to_sequences(line)
    last_prompt, last_generation, _ = calls[-1]
    assert row["input_ids"] == last_prompt + last_generation  # exactly the server's tokens, nothing spliced
    assert len(row["input_ids"]) == len(row["loss_mask"]) == len(row["logprobs"])
    expected_mask = [0] * len(calls[0][0]) + [1] * len(calls[0][1])
    expected_mask += [0] * (len(last_prompt) - len(expected_mask)) + [1] * len(last_generation)
    assert row["loss_mask"] == expected_mask
    trained = [lp for lp, m in zip(row["logprobs"], row["loss_mask"]) if m]
    assert trained == calls[0][2] + calls[1][2]
    assert all(lp == 0.0 for lp, m in zip(row["logprobs"], row["loss_mask"]) if not m)
    assert row["reward"] == line["reward"] and row["calls"] == [0, 1]
    assert (row["task_index"], row["rollout_index"]) == (line["task_index"], line["rollout_index"])


def test_a_rollout_object_gives_the_same_rows_as_its_line(runs):
    line = first(runs["clean"])
    rollout = converter.structure(line, Rollout)
    assert rollout.token_monotonic is True
    assert to_sequences(rollout) == to_sequences(line)


def test_drift_strict_raises_and_fork_starts_a_row_at_the_drifting_call(runs):
    line = first(runs["drift"])
    assert line["token_monotonic"] is False
    with pytest.raises(DriftError) as raised:
        to_sequences(line, on_drift="strict")
    assert raised.value.call == 1
    rows = to_sequences(line, on_drift="fork")
    calls = model_calls(line)
    assert [row["calls"] for row in rows] == [[0], [1]]
    for row, (prompt, generation, logprobs) in zip(rows, calls):
        assert row["input_ids"] == prompt + generation
        assert row["loss_mask"] == [0] * len(prompt) + [1] * len(generation)
        assert row["logprobs"] == [0.0] * len(prompt) + logprobs


def test_failures_and_rollouts_without_tokens_are_refused(runs):
    line = first(runs["clean"])
    with pytest.raises(ValueError, match="failure is never training data"):
        to_sequences({**line, "error": {"type": "model"}, "reward": None})
    bare = {**line, "response": {**line["response"], "output": [
        {k: v for k, v in item.items() if not k.startswith(("prompt_", "generation_"))}
        for item in line["response"]["output"]]}}
    with pytest.raises(ValueError, match="--return-tokens"):
        to_sequences(bare)
    with pytest.raises(ValueError, match="on_drift"):
        to_sequences(line, on_drift="realign")


# --- adapters --------------------------------------------------------------------------


def test_trl_rollout_func_output_meets_grpo_trainers_contract(runs):
    lines = read_jsonl(runs["clean"])
    out = trl_rollout_output(lines)
    # trl/trainer/grpo_trainer.py (1.10.0.dev0): required keys; the rest go to reward functions
    assert {"prompt_ids", "completion_ids", "logprobs"} <= out.keys()
    assert all(len(values) == len(lines) for values in out.values())
    for i, line in enumerate(lines):
        [row] = to_sequences(line)
        assert out["prompt_ids"][i] + out["completion_ids"][i] == row["input_ids"]
        assert out["prompt_ids"][i] == model_calls(line)[0][0]
        assert len(out["completion_ids"][i]) == len(out["logprobs"][i]) == len(out["env_mask"][i])
        assert all(isinstance(lp, float) for lp in out["logprobs"][i])  # one float per token, not top-k lists
        assert set(out["env_mask"][i]) == {0, 1} and out["env_mask"][i][0] == 1  # the completion opens with the model
        assert out["reward"][i] == line["reward"]
    with pytest.raises(DriftError):
        trl_rollout_output(read_jsonl(runs["drift"]))


class AgentLoopOutput(pydantic.BaseModel):
    """The fields of verl's ``AgentLoopOutput`` (verl/experimental/agent_loop/agent_loop.py,
    verl 0.8.0.dev at b178a3c), with their types; extra fields forbidden so a misspelt one fails."""

    model_config = pydantic.ConfigDict(extra="forbid")

    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    response_logprobs: list[float] | None = None
    routed_experts: object | None = None
    multi_modal_data: dict | None = None
    reward_score: float | None = None
    num_turns: int = 0
    metrics: dict
    extra_fields: dict = {}


def test_verl_agent_loop_output_has_verls_fields(runs):
    line = first(runs["clean"])
    out = AgentLoopOutput(**verl_agent_loop_output(line))
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
    assert out.prompt_ids + out.response_ids == to_sequences(line)[0]["input_ids"]
    assert out.reward_score == line["reward"]
    given = len(line["responses_create_params"]["input"])  # system and user messages
    assert out.num_turns == given + 3  # + assistant (tool call), tool, assistant


def test_gymcore_training_does_not_import_torch():
    code = "import sys, gymcore.training, gymcore.export; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- gym export ------------------------------------------------------------------------


def export(*args):
    return run_gym("export", *map(str, args))


def test_export_sft_writes_chat_rows_with_tool_calls_and_tools(runs, tmp_path):
    out = tmp_path / "sft.jsonl"
    result = export(runs["clean"], "--format", "sft", "-o", out)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    assert len(rows) == 6
    row = rows[0]
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    call = row["messages"][2]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert row["messages"][3]["tool_call_id"] == call["id"]
    assert row["messages"][-1]["content"].startswith("In ")  # the model's answer, from the fake's policy
    assert row["tools"][0]["function"]["name"] == "get_weather"
    assert not any("token" in key for m in row["messages"] for key in m)  # no token fields in SFT rows
    # the openai SDK's own types accept every message and tool
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

    pydantic.TypeAdapter(list[ChatCompletionMessageParam]).validate_python(row["messages"])
    pydantic.TypeAdapter(list[ChatCompletionToolParam]).validate_python(row["tools"])


def test_export_never_exports_failures_and_filters_by_reward(runs, tmp_path):
    lines = read_jsonl(runs["clean"])
    mixed = tmp_path / "mixed.jsonl"
    lines[0] = {**lines[0], "reward": 0.0}
    lines[1] = {**lines[1], "reward": None, "error": {"type": "model", "kind": "http", "message": "503"}}
    mixed.write_text("".join(converter_line(line) for line in lines))
    (tmp_path / "mixed.failures.jsonl").write_text(converter_line(first(runs["clean"])))  # never read
    out = tmp_path / "sft.jsonl"
    result = export(mixed, "--format", "sft", "--min-reward", "0.5", "-o", out)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 4
    assert "skipped 1 failures, 1 below --min-reward" in result.stderr
    result = export(mixed, "--format", "sequences", "-o", out)
    assert result.returncode == 0, result.stderr
    assert [(r["task_index"], r["rollout_index"]) for r in read_jsonl(out)] == \
        [(line["task_index"], line["rollout_index"]) for line in lines if line["error"] is None]


def converter_line(line: dict) -> str:
    import json

    return json.dumps(line) + "\n"


def test_export_sequences_forks_on_drift_or_names_the_line_in_strict_mode(runs, tmp_path):
    out = tmp_path / "seq.jsonl"
    result = export(runs["drift"], "--format", "sequences", "-o", out)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 12  # 6 rollouts, each forked at its second call
    result = export(runs["drift"], "--format", "sequences", "--on-drift", "strict", "-o", tmp_path / "s.jsonl")
    assert result.returncode == 1
    assert f"{runs['drift']}:1:" in result.stderr and "drift" in result.stderr
    assert not (tmp_path / "s.jsonl").exists()  # nothing half-written


def test_export_sequences_of_a_run_without_tokens_names_the_line(runs, tmp_path):
    line = first(runs["clean"])
    bare = {**line, "response": {**line["response"], "output": [
        {k: v for k, v in item.items() if not k.startswith(("prompt_", "generation_"))}
        for item in line["response"]["output"]]}}
    run = tmp_path / "bare.jsonl"
    run.write_text(converter_line(line) + converter_line(bare))
    result = export(run, "--format", "sequences", "-o", tmp_path / "out.jsonl")
    assert result.returncode == 1
    assert f"{run}:2:" in result.stderr and "--return-tokens" in result.stderr
    run.write_text(converter_line(line) + "{not json\n")
    result = export(run, "--format", "sft", "-o", tmp_path / "out.jsonl")
    assert result.returncode == 1 and f"{run}:2: not a JSON line" in result.stderr


def test_the_documented_trl_rollout_func_runs(fake_openai, monkeypatch):
    """docs/examples/trl_grpo.py's rollout_func, as TRL would call it (TRL itself not needed)."""
    import importlib.util
    import json
    from types import SimpleNamespace

    from .conftest import ROOT, SECRET_KEY

    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GYM_MODEL", "openai-chat:m")
    spec = importlib.util.spec_from_file_location("trl_grpo", ROOT / "docs/examples/trl_grpo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = [json.loads(line) for line in (ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl")
            .read_text().splitlines()[:2]]
    prompts = [row["responses_create_params"]["input"] for row in rows]
    fake_openai.faults = [{"status": 400}]  # one rollout fails, and is collected again
    out = example.rollout_func(prompts, SimpleNamespace(num_generations=2))
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == 4
    assert example.gym_reward(None, **{k: v for k, v in out.items() if k == "reward"}) == out["reward"]
    assert all(r is not None for r in out["reward"])
    assert fake_openai.faults == []  # the failed rollout was collected again
    for i, row in enumerate(rows):  # in prompt order, num_generations each (fake tokens are bytes)
        user = row["responses_create_params"]["input"][-1]["content"]
        assert all(user in bytes(ids).decode() for ids in out["prompt_ids"][2 * i:2 * i + 2])


def test_export_of_a_killed_run_skips_its_torn_last_line_as_resume_does(runs, tmp_path):
    # a `kill -9` mid-write leaves a last line without its newline: resume, gym filter and the
    # viewer read the complete lines before it, and so must export (without repairing the file)
    run = tmp_path / "killed.jsonl"
    whole = runs["clean"].read_bytes()
    run.write_bytes(whole + whole.splitlines(keepends=True)[0][:100])
    out = tmp_path / "sft.jsonl"
    result = export(run, "--format", "sft", "-o", out)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 6
    assert f"{run}:7: the last line is incomplete" in result.stderr
    assert run.read_bytes().endswith(whole.splitlines(keepends=True)[0][:100])  # left as it was
