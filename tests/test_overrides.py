"""Request overrides: ``+responses_create_params.a.b=v`` and ``--set a.b=v`` build nested
objects and merge into the row's own ``responses_create_params``; they never become a literal
top-level key ``"a.b"``."""

from __future__ import annotations

import json

import pytest

from gymcore.config import parse_seed_args, parse_set_options
from gymcore.errors import UsageError

from .conftest import read_jsonl, run_gym


def test_dotted_seed_and_set_keys_build_nested_objects():
    _, seed = parse_seed_args(["+responses_create_params.reasoning.effort=high",
                               "+responses_create_params.reasoning.summary=auto",
                               "+responses_create_params.temperature=0.5"])
    assert seed == {"reasoning": {"effort": "high", "summary": "auto"}, "temperature": 0.5}
    assert parse_set_options(["responses_create_params.text.format.type=text", "reasoning.effort=low",
                              "max_output_tokens=64"]) == {
        "text": {"format": {"type": "text"}}, "reasoning": {"effort": "low"}, "max_output_tokens": 64}


@pytest.mark.parametrize("text, value", [
    ("0.7", 0.7), ("5", 5), ("true", True), ("null", None), ("high", "high"), ("007", "007"),
    ('{"effort": "high"}', {"effort": "high"}), ("[1, 2]", [1, 2]), ("", ""),
])
def test_values_are_json_where_they_parse_and_text_otherwise(text, value):
    assert parse_set_options([f"metadata.note={text}"]) == {"metadata": {"note": value}}


@pytest.mark.parametrize("items, message", [
    (["reasoning=high", "reasoning.effort=low"], "'reasoning' is already set to 'high'"),
    (["reasoning.effort=low", "reasoning=high"], "'reasoning' is already set to an object"),
    (["reasoning..effort=low"], "empty key"),
    (["reasoning.=low"], "empty key"),
    (["responses_create_params.=1"], "empty key"),
])
def test_contradicting_or_empty_dotted_keys_are_usage_errors(items, message):
    with pytest.raises(UsageError, match=message):
        parse_set_options(items)


def test_nested_override_merges_into_the_rows_object(gym_env, tmp_path, fake_openai):
    """The row sets reasoning and metadata; the command line adds and replaces keys inside
    them (a deep merge, `+...` and `--set` combined): the override wins key by key."""
    tasks = tmp_path / "tasks.jsonl"
    row = {"responses_create_params": {"input": "weather in Paris?", "reasoning": {"summary": "auto",
                                                                                   "effort": "low"},
                                       "metadata": {"team": "a"}}}
    tasks.write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "openai:m", "--input", str(tasks),
                     "--output", str(out), "-q", "+responses_create_params.reasoning.effort=high",
                     "--set", "responses_create_params.metadata.run=r7", "--set", "reasoning.summary=concise",
                     env=gym_env)
    assert result.returncode == 0, result.stderr
    bodies = [r["body"] for r in fake_openai.requests]
    assert bodies, "no request reached the model"
    for body in bodies:
        assert body["reasoning"] == {"summary": "concise", "effort": "high"}
        assert body["metadata"] == {"team": "a", "run": "r7"}
        assert not [key for key in body if "." in key]
    # the line records the request as sent (issue 14) and keeps the row as it was read
    line = read_jsonl(out)[0]
    assert line["responses_create_params"]["reasoning"] == {"summary": "concise", "effort": "high"}
    assert line["row_responses_create_params"]["reasoning"] == {"summary": "auto", "effort": "low"}
