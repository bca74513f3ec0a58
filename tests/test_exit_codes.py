"""One exit status per kind of error, as real subprocesses see it: 2 when the command line is
wrong as written (click's own convention for usage errors), 1 when a command that was
understood could not be done (a file, the network, failed rollouts)."""

from __future__ import annotations

import json

import pytest

from .conftest import run_gym

COLLECT = ["collect", "--agent", "weather", "--model", "replay", "-q"]


def _run(args: list[str], tmp_path, gym_env):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"responses_create_params": {"input": "weather in Paris?"}}) + "\n")
    (tmp_path / "taken.jsonl").write_text("{}\n")
    (tmp_path / "gym-fresh").mkdir()
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    return run_gym(*args, env=gym_env, cwd=tmp_path)


@pytest.mark.parametrize("args", [
    # bad option values
    [*COLLECT, "--output", "TMP/o.jsonl", "--limit", "0"],
    [*COLLECT, "--output", "TMP/o.jsonl", "--parallel", "many"],
    [*COLLECT, "--output", "TMP/o.jsonl", "--max-failures", "1.5"],
    ["collect", "--agent", "nope", "--model", "replay", "--output", "TMP/o.jsonl"],
    ["collect", "--agent", "weather", "--model", "nosuch:x", "--output", "TMP/o.jsonl"],
    ["collect", "--agent", "weather", "--model", "openai:", "--output", "TMP/o.jsonl"],
    [*COLLECT, "--output", "TMP/o.jsonl", "--no-such-option"],
    [*COLLECT, "--output", "TMP/o.jsonl", "--set", "temperature"],
    [*COLLECT, "--output", "TMP/o.jsonl", "--set", "reasoning..effort=high"],
    # bad +key=value
    [*COLLECT, "--output", "TMP/o.jsonl", "+bogus=1"],
    [*COLLECT, "--output", "TMP/o.jsonl", "+limit"],
    [*COLLECT, "--output", "TMP/o.jsonl", "+limit=abc"],
    [*COLLECT, "--output", "TMP/o.jsonl", "+responses_create_params.reasoning=x",
     "+responses_create_params.reasoning.effort=high"],
    ["view", "+bogus=TMP/taken.jsonl"],
    ["view", "+jsonl_fpath"],
    # (gym verify --agent nope: tests/test_rescore.py)
    # contradicting or missing options
    [*COLLECT, "--output", "TMP/o.jsonl", "--resume", "--overwrite"],
    ["collect", "--agent", "weather", "--model", "replay"],
    ["view", "TMP/taken.jsonl", "TMP/taken.jsonl", "TMP/taken.jsonl"],  # two are A vs B (issue 17)
    ["serve", "--agent", "weather", "--model", "replay", "--host", "0.0.0.0", "--port", "0"],
    ["serve", "--agent", "nope", "--model", "replay", "--port", "0"],
    ["new", "resource", "--no-input", "nmae=typo", "--output-dir", "TMP/new"],
    ["new", "resource", "--no-input", "name", "--output-dir", "TMP/new"],
    ["new", "resource", "--no-input", "name=2fast", "--output-dir", "TMP/new"],
    ["new", "resource", "--no-input", "name=weather", "--output-dir", "TMP/new"],
], ids=lambda args: " ".join(args[:1] + [a for a in args[1:] if a not in COLLECT[1:]])[:60])
def test_usage_errors_exit_2(args, tmp_path, gym_env):
    result = _run(args, tmp_path, gym_env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: "), result.stderr
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "new").exists()


@pytest.mark.parametrize("args", [
    [*COLLECT, "--input", "TMP/missing.jsonl", "--output", "TMP/o.jsonl"],
    [*COLLECT, "--input", "TMP/taken.jsonl", "--output", "TMP/o.jsonl"],  # a row that is not a task
    [*COLLECT, "--output", "TMP/taken.jsonl"],  # an existing output is never touched
    ["verify", "TMP/missing.jsonl", "--output", "TMP/v.jsonl"],
    ["export", "TMP/missing.jsonl", "--format", "sft", "--output", "TMP/e.jsonl"],
    ["compare", "TMP/missing.jsonl", "TMP/taken.jsonl"],
    ["filter", "TMP/missing.jsonl", "--output", "TMP/f.jsonl"],
    ["view", "TMP/missing.jsonl"],
    ["new", "resource", "--no-input", "name=fresh", "--output-dir", "TMP"],  # gym-fresh exists
], ids=lambda args: " ".join(args[:1] + [a for a in args[1:] if a not in COLLECT[1:]])[:60])
def test_commands_that_cannot_be_done_exit_1(args, tmp_path, gym_env):
    result = _run(args, tmp_path, gym_env)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: "), result.stderr

