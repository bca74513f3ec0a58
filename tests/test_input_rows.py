"""Bad input: every invalid row reported with its line number before anything starts, or
skipped with --skip-invalid without renumbering the others; and, property-based, the reader
itself: valid rows round-trip, anything else is an InputError, never a crash."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymcore.data import OUTPUT_KEYS, Task, converter
from gymcore.dataset import MAX_REPORTED, iter_rows, scan_input, validate_row
from gymcore.errors import InputError

from .conftest import read_jsonl, run_gym
from .test_collect_faults import collect_args

GOOD = json.dumps({"responses_create_params": {"input": "weather in Paris?"}})


def test_every_invalid_row_is_reported_up_to_a_cap(tmp_path, gym_env):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    bad = ['{"responses_create_params": ', json.dumps({"input": "no params"}), "[1, 2]"]
    rows = [GOOD] + [bad[i % 3] for i in range(MAX_REPORTED + 5)] + [GOOD]
    tasks.write_text("\n".join(rows) + "\n")
    result = run_gym(*collect_args(tasks, out), env=gym_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (f"Error: {MAX_REPORTED + 5} invalid rows in {tasks} (fix them, or pass --skip-invalid "
                        "to go on without invalid rows):")
    reported = lines[1:1 + MAX_REPORTED]
    assert [line.split(":")[1] for line in reported] == [str(n) for n in range(2, 2 + MAX_REPORTED)]
    assert "not valid JSON" in reported[0] and "field 'responses_create_params': missing" in reported[1]
    assert "expected a JSON object, got list" in reported[2]
    assert lines[1 + MAX_REPORTED] == "  ... and 5 more"
    assert not out.exists() and not (tmp_path / "out.run.json").exists()  # nothing started


def test_skip_invalid_keeps_task_indices_stable(tmp_path, gym_env):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    rows = [GOOD, json.dumps({"responses_create_params": {"input": 7}}), "", GOOD, "{oops", "  ",
            json.dumps({"responses_create_params": {"input": "weather in Oslo?"}, "id": "last"})]
    tasks.write_text("\n".join(rows) + "\n")
    result = run_gym(*collect_args(tasks, out, "--skip-invalid"), env=gym_env)
    assert result.returncode == 0, result.stderr
    assert f"skipping 2 invalid rows of {tasks} (--skip-invalid); first: {tasks}:2:" in result.stderr
    lines = read_jsonl(out)
    # a row's task_index is its place among the non-empty lines, valid or not
    assert sorted(line["task_index"] for line in lines) == [0, 2, 4]
    assert next(line for line in lines if line["task_index"] == 4)["id"] == "last"
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["skipped_invalid_rows"] == 2 and metrics["rollouts"] == 3


# --- property-based: the reader -----------------------------------------------------------

# JSON that survives a round trip exactly: no NaN, no lone surrogates, ints within 64 bits
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=10)
messages = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "developer", "system"]),
                                  "content": text | st.lists(st.fixed_dictionaries(
                                      {"type": st.just("input_text"), "text": text}), max_size=2)})
params = st.fixed_dictionaries(
    {"input": text | st.lists(messages, max_size=3)},
    optional={"tools": st.lists(st.dictionaries(text, json_values, max_size=3), max_size=2),
              "temperature": st.floats(0, 2)})
# a row's own columns: not gymcore's output keys, which an input row drops (or, for the row's
# own params of a previous output, reads back): hypothesis draws string literals from the
# code under test, so it does find them
extra = st.dictionaries(text.filter(lambda k: k not in Task.KNOWN_KEYS and k not in OUTPUT_KEYS), json_values,
                        max_size=3)
rows = st.builds(lambda p, meta, more: {**more, "responses_create_params": p, **meta},
                 params, st.just({}) | st.fixed_dictionaries({"verifier_metadata": st.dictionaries(text, json_values, max_size=3)}),
                 extra)


def _write(lines: list[bytes]) -> str:
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "wb") as fp:
        fp.write(b"".join(lines))
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(rows, st.integers(0, 2), st.booleans()), max_size=8))
def test_valid_rows_round_trip(items):
    lines, expected = [], []
    for row, blanks, crlf in items:
        lines += [b"\n", b"   \n"][: blanks]
        lines.append(json.dumps(row, ensure_ascii=False).encode() + (b"\r\n" if crlf else b"\n"))
        expected.append((len(lines), row))
    path = _write(lines)
    try:
        got = list(iter_rows(path))
    finally:
        os.unlink(path)
    assert [index for index, _, _ in got] == list(range(len(expected)))
    for (_, line_no, task), (expected_line, row) in zip(got, expected):
        assert isinstance(task, Task), task
        assert line_no == expected_line
        assert converter.unstructure(task) == row


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode())
                | rows.map(lambda r: json.dumps(r).encode()), max_size=8),
       st.integers(1, 10) | st.none())
def test_any_input_gives_tasks_or_clean_errors(chunks, limit):
    lines = [chunk.replace(b"\n", b" ") + b"\n" for chunk in chunks]
    path = _write(lines)
    try:
        got = list(iter_rows(path, limit))  # never raises for a row
        scan = scan_input(path, limit)
    finally:
        os.unlink(path)
    bom = b"\xef\xbb\xbf"
    non_empty = [n for n, line in enumerate(lines, start=1)
                 if (line[len(bom):] if n == 1 and line.startswith(bom) else line).strip()]
    # exactly the first ``limit`` non-empty lines, numbered in order
    assert [(index, line_no) for index, line_no, _ in got] == list(enumerate(non_empty[:limit]))
    for _, line_no, item in got:
        assert isinstance(item, (Task, InputError))
        if isinstance(item, InputError):
            assert item.line == line_no and str(item).startswith(f"{path}:{line_no}: ")
    assert scan.rows == len(got) and scan.valid + scan.invalid == scan.rows
    assert scan.invalid == sum(isinstance(item, InputError) for _, _, item in got)


@pytest.mark.parametrize("row, field, message", [
    ({"responses_create_params": {"input": ["hi"]}}, "responses_create_params.input[0]",
     "expected an object, got str"),
    ({"responses_create_params": {"input": [{"role": "user", "content": "a"}, {"role": "user", "content": 3}]}},
     "responses_create_params.input[1].content", "expected a string or a list of parts"),
    ({"responses_create_params": {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, 7]}]}},
     "responses_create_params.input[0].content[1]", "expected an object, got int"),
    ({"responses_create_params": {"input": "hi", "tools": [{}, "x"]}}, "responses_create_params.tools[1]",
     "expected an object, got str"),
])
def test_a_bad_nested_value_is_named_by_its_path(row, field, message):
    with pytest.raises(InputError) as caught:
        validate_row(row, "tasks.jsonl", 7)
    assert str(caught.value) == f"tasks.jsonl:7: field {field!r}: {message}"
