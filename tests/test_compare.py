"""``gym compare`` and ``gym filter`` on runs with known outcomes, made by real ``gym collect``.

The runs: 200 weather tasks whose prompt names no city. Model A is right on the tasks with
``i % 10 < 7``, model B on ``i % 10 in {0..5, 7, 8}``: B - A is +0.1 in mean reward, with 20
regressions (``i % 10 == 6``) and 40 improvements (``7, 8``). Each model is a recording made
by the fake OpenAI server answering a prompt that names the right or a wrong city, replayed
(``--model replay:FILE``) on the city-less tasks, so the tools and ``verify`` run for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import SECRET_KEY, clean_env, read_jsonl, run_gym
from .fake_openai import CITIES, FakeOpenAI

N = 200
RIGHT_A = {i for i in range(N) if i % 10 < 7}
RIGHT_B = {i for i in range(N) if i % 10 in (0, 1, 2, 3, 4, 5, 7, 8)}


def prompt(i: int) -> str:
    return f"Forecast request #{i}: the usual place, please."


def recording(work: Path, env: dict, name: str, right: set[int], skip: set[int] = frozenset()) -> Path:
    """Have the fake model answer a prompt naming the right (or a wrong) city, then file the
    answer under the city-less prompt of the task."""
    rows = work / f"{name}.prompts.jsonl"
    with rows.open("w") as f:
        for i in range(N):
            city = CITIES[i % len(CITIES)] if i in right else CITIES[(i + 5) % len(CITIES)]
            f.write(json.dumps({"responses_create_params": {"input": f"What is the weather in {city}? #{i}"}}) + "\n")
    raw = work / f"{name}.raw.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "openai:fake", "--input", str(rows),
                     "--output", str(raw), "--parallel", "16", "-q", env=env)
    assert result.returncode == 0, result.stderr
    out = work / f"{name}.recording.jsonl"
    with out.open("w") as f:
        for line in read_jsonl(raw):
            if line["task_index"] not in skip:
                line["responses_create_params"]["input"] = prompt(line["task_index"])
                f.write(json.dumps(line) + "\n")
    return out


def collect(work: Path, env: dict, tasks: Path, rec: Path, name: str, *extra: str) -> Path:
    out = work / f"{name}.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", f"replay:{rec}", "--input", str(tasks),
                     "--output", str(out), "--num-repeats", "2", "--parallel", "16", "-q", *extra, env=env)
    assert result.returncode in (0, 1), result.stderr
    return out


def build_paired_runs(work: Path):
    """The runs both this module and the viewer's A-vs-B tests read (built once a session:
    see ``paired_runs`` in conftest); yields their paths, then stops the fake server."""
    server = FakeOpenAI()
    url = server.start_in_thread()
    env = clean_env(OPENAI_BASE_URL=url, OPENAI_API_KEY=SECRET_KEY)
    try:
        tasks = work / "tasks.jsonl"
        with tasks.open("w") as f:
            for i in range(N):
                f.write(json.dumps({"responses_create_params": {"input": prompt(i)},
                                    "verifier_metadata": {"expected_city": CITIES[i % len(CITIES)]}}) + "\n")
        rec_a, rec_b = recording(work, env, "a", RIGHT_A), recording(work, env, "b", RIGHT_B)
        # B again, with no recording for the tasks i % 10 == 9: they fail (replay has no answer)
        rec_b_holes = work / "b-holes.recording.jsonl"
        rec_b_holes.write_text("".join(line for i, line in enumerate(rec_b.read_text().splitlines(True))
                                       if i % 10 != 9))
        yield {
            "work": work, "tasks": tasks, "env": env,
            "a": collect(work, env, tasks, rec_a, "a"),
            "a_again": collect(work, env, tasks, rec_a, "a_again"),
            "b": collect(work, env, tasks, rec_b, "b"),
            "b_holes": collect(work, env, tasks, rec_b_holes, "b_holes"),
            "a_first_150": collect(work, env, tasks, rec_a, "a_first_150", "--limit", "150"),
        }
    finally:
        server.stop()


@pytest.fixture
def runs(paired_runs):
    return paired_runs


def compare(runs, a: str, b: str, *extra: str) -> dict:
    result = run_gym("compare", str(runs[a]), str(runs[b]), "--json", *extra, env=runs["env"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_known_difference_is_inside_the_interval_and_zero_is_not(runs):
    result = compare(runs, "a", "b", "--seed", "7")
    d = result["difference"]
    assert result["a"]["mean_reward"] == pytest.approx(0.7) and result["b"]["mean_reward"] == pytest.approx(0.8)
    assert d["mean_reward"] == pytest.approx(0.1)
    assert 0 < d["ci_low"] < 0.1 < d["ci_high"]
    assert result["tasks"] == {"matched": N, "only_in_a": 0, "only_in_b": 0, "paired": N, "left_out_unscored": 0,
                               "matched_by": "row content"}
    assert compare(runs, "a", "b", "--seed", "7")["difference"] == d  # the seed fixes the interval


def test_the_flips_listed_are_the_tasks_that_flipped_worst_first(runs):
    result = compare(runs, "a", "b")
    flips = result["flips"]
    assert {f["task_index_a"] for f in flips if f["flip"] == "regression"} == RIGHT_A - RIGHT_B
    assert {f["task_index_a"] for f in flips if f["flip"] == "improvement"} == RIGHT_B - RIGHT_A
    assert [f["flip"] for f in flips[:20]] == ["regression"] * 20  # the worst come first
    assert result["mcnemar"]["regressions"] == 20 and result["mcnemar"]["improvements"] == 40
    assert 0 < result["mcnemar"]["p_value"] < 0.05


def test_identical_runs_give_an_interval_around_zero(runs):
    result = compare(runs, "a", "a_again")
    d = result["difference"]
    assert d["mean_reward"] == 0 and d["ci_low"] <= 0 <= d["ci_high"]
    assert result["flips"] == [] and result["mcnemar"]["p_value"] == 1.0


def test_runs_over_different_tasks_are_refused_unless_intersected(runs):
    refused = run_gym("compare", str(runs["a"]), str(runs["a_first_150"]), env=runs["env"])
    assert refused.returncode == 1
    assert "150 match" in refused.stderr and "50 only in" in refused.stderr and "--intersect" in refused.stderr
    result = compare(runs, "a", "a_first_150", "--intersect")
    assert result["tasks"]["matched"] == 150 and result["tasks"]["only_in_a"] == 50


def test_failed_rollouts_are_reported_per_side_and_never_count_as_zero(runs):
    result = compare(runs, "b", "b_holes")
    assert result["b"]["failed"] == 40 and result["b"]["failures"] == {"model:protocol": 40}
    assert result["a"]["failed"] == 0
    assert result["tasks"]["paired"] == 180 and result["tasks"]["left_out_unscored"] == 20
    assert result["difference"]["mean_reward"] == 0  # as 0 rewards they would have moved it
    text = run_gym("compare", str(runs["b"]), str(runs["b_holes"]), env=runs["env"]).stdout
    assert "B: 40 failed rollouts, not counted (model:protocol=40)" in text
    assert "20 left out" in text


def four_repeat_run(runs) -> Path:
    """A + B as one run of 4 repeats (A's as 0-1, B's as 2-3), with B-holes' failures as
    repeats 2-3 of the tasks it could not answer: pass rates 1, 0.5 and 0 are all there."""
    work = runs["work"] / "four"
    work.mkdir(exist_ok=True)
    out = work / "run.jsonl"
    holes = {line["task_index"] for line in read_jsonl(runs["b_holes"].with_name("b_holes.failures.jsonl"))}
    with out.open("w") as f:
        for line in read_jsonl(runs["a"]):
            f.write(json.dumps(line) + "\n")
        for line in read_jsonl(runs["b"]):
            if line["task_index"] not in holes:
                f.write(json.dumps({**line, "rollout_index": line["rollout_index"] + 2}) + "\n")
    with (work / "run.failures.jsonl").open("w") as f:
        for line in read_jsonl(runs["b_holes"].with_name("b_holes.failures.jsonl")):
            f.write(json.dumps({**line, "rollout_index": line["rollout_index"] + 2}) + "\n")
    record = json.loads(runs["a"].with_name("a.run.json").read_text())
    (work / "run.run.json").write_text(json.dumps({**record, "num_repeats": 4}))
    return out


def test_filter_keeps_the_band_and_writes_the_original_rows(runs, tmp_path):
    run = four_repeat_run(runs)
    out = tmp_path / "band.jsonl"
    result = run_gym("filter", str(run), "--pass-rate", "0.2:0.8", "-o", str(out), env=runs["env"])
    assert result.returncode == 0, result.stderr
    # i % 10 == 9 has only A's 2 scored repeats (B's failed): reported, not judged a fail
    assert "too_few_scored_repeats: 20" in result.stdout and "kept: 60" in result.stdout
    originals = runs["tasks"].read_text().splitlines(True)
    expected = [originals[i] for i in range(N) if i % 10 in (6, 7, 8)]
    assert out.read_text().splitlines(True) == expected  # the input's own lines, in its order


def test_filter_drop_zero_variance_and_min_repeats(runs, tmp_path):
    run = four_repeat_run(runs)
    out = tmp_path / "varied.jsonl"
    result = run_gym("filter", str(run), "--drop-zero-variance", "--min-repeats", "2", "-o", str(out),
                     env=runs["env"])
    assert result.returncode == 0, result.stderr
    # with 2 repeats enough, i % 10 == 9 (A wrong on both) is judged: zero variance, dropped
    assert "zero_variance: 140" in result.stdout and "kept: 60" in result.stdout
    again = run_gym("filter", str(run), "--drop-zero-variance", "-o", str(out), env=runs["env"])
    assert again.returncode == 1 and "already exists" in again.stderr  # never overwritten silently


def test_filter_rebuilds_rows_when_the_input_is_gone(runs, tmp_path):
    work = tmp_path / "moved"
    shutil.copytree(four_repeat_run(runs).parent, work)
    record = json.loads((work / "run.run.json").read_text())
    (work / "run.run.json").write_text(json.dumps({**record, "input": str(tmp_path / "gone.jsonl")}))
    out = tmp_path / "rebuilt.jsonl"
    result = run_gym("filter", str(work / "run.jsonl"), "--pass-rate", "0.5:0.5", "-o", str(out), env=runs["env"])
    assert result.returncode == 0, result.stderr
    assert "rows_from: the run's output lines" in result.stdout
    rows = read_jsonl(out)
    originals = [json.loads(line) for line in runs["tasks"].read_text().splitlines()]
    assert rows == [originals[i] for i in range(N) if i % 10 in (6, 7, 8)]


def test_filter_refuses_a_bad_band(runs, tmp_path):
    result = run_gym("filter", str(runs["a"]), "--pass-rate", "0.8:0.2", "-o", str(tmp_path / "x.jsonl"),
                     env=runs["env"])
    assert result.returncode == 2 and "0 <= LOW <= HIGH <= 1" in result.stderr
