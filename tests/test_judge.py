"""A judge model for verify (``--judge-model``): reached as ``session.judge`` from ``def`` and
``async def`` hooks, its tokens kept apart, and a judge that fails is a ``judge:...``
failure, never a reward, even when the hook swallows the error. Real fake-OpenAI server,
real openai backend, real ``gym collect``."""

from __future__ import annotations

import asyncio
import json

from gymcore import hookimpl
from gymcore.agent import AgentConfig
from gymcore.collector import CollectConfig, collect
from gymcore.retry import RetryPolicy

from .conftest import SECRET_KEY, read_jsonl, run_gym
from .test_collect_faults import write_tasks

MARK = "JUDGE-QUESTION"


def judge_says(text: str) -> dict:
    """A canned Responses body whose answer is ``text``."""
    return {"output": [{"type": "message", "id": "msg_judge", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 100, "output_tokens": 1, "total_tokens": 101}}


class SyncJudged:
    """A plain ``def`` verify (run in a worker thread) that asks the judge."""

    @hookimpl
    def verify(self, session, response):
        answer = session.judge.ask_sync(f"{MARK}: is this right? {session.task.verifier_metadata}")
        return {"reward": 1.0 if answer.strip() == "YES" else 0.0, "judge_said_yes": int(answer.strip() == "YES")}


class SwallowsJudgeErrors:
    """An ``async def`` verify that turns a failed judge into a 0: gymcore must not believe it."""

    @hookimpl
    async def verify(self, session, response):
        try:
            await session.judge.ask(f"{MARK}: right?")
        except Exception:
            return 0.0
        return 1.0


def run(plugins, tmp_path, monkeypatch, fake, agent: str, judge: str | None = "openai:judge"):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", ["Paris", "Oslo"]), tmp_path / "out.jsonl"
    config = CollectConfig(agent=agent, output=out, model="openai:policy", input=tasks, num_repeats=2,
                           progress=False, agent_config=AgentConfig(retry=RetryPolicy(max_retries=1, base_delay=0.01),
                                                                    judge_model=judge))
    summary = asyncio.run(collect(plugins, config))
    failures = tmp_path / "out.failures.jsonl"
    return summary, read_jsonl(out), read_jsonl(failures) if failures.exists() else []


def test_a_def_verify_asks_the_judge_and_its_tokens_are_kept_apart(plugins, tmp_path, monkeypatch, fake_openai):
    plugins.register(SyncJudged(), name="judged")
    answers = iter(["YES", "NO", "YES", "NO"])

    # the policy answers through the fake's weather policy; judge requests carry MARK
    original = fake_openai.policy_output

    def policy_or_judge(items):
        text = json.dumps(items)
        if MARK in text:
            return judge_says(next(answers))["output"]
        return original(items)

    fake_openai.policy_output = policy_or_judge
    summary, lines, failed = run(plugins, tmp_path, monkeypatch, fake_openai, "judged")
    assert failed == [] and len(lines) == 4
    assert sorted(line["judge_said_yes"] for line in lines) == [0, 0, 1, 1]
    assert all(line["reward"] == line["judge_said_yes"] for line in lines)
    judge_calls = [r for r in fake_openai.requests if MARK in json.dumps(r["body"])]
    assert len(judge_calls) == 4 and all(r["body"]["model"] == "judge" for r in judge_calls)
    for line in lines:  # the judge's tokens are on the line, apart from the policy's usage
        assert line["judge_usage"]["input_tokens"] == 10 and line["response"]["usage"]["input_tokens"] == 20
    assert summary["judge_input_tokens"] == 40 and summary["input_tokens"] == 80


def test_a_failed_judge_is_a_judge_failure_even_if_verify_swallows_it(plugins, tmp_path, monkeypatch, fake_openai):
    plugins.register(SwallowsJudgeErrors(), name="lenient")
    fake_openai.rules = [{"match": MARK, "status": 503}]
    summary, lines, failed = run(plugins, tmp_path, monkeypatch, fake_openai, "lenient")
    assert lines == [] and len(failed) == 4
    assert {f["class"] for f in failed} == {"judge:503"} and all(f["attempts"] == 2 for f in failed)
    assert summary["failures"] == {"judge:503": 4} and summary["status"] == "completed"


def test_no_judge_configured_means_session_judge_is_none(plugins, tmp_path, monkeypatch, fake_openai):
    plugins.register(SyncJudged(), name="judged")
    summary, lines, failed = run(plugins, tmp_path, monkeypatch, fake_openai, "judged", judge=None)
    assert lines == [] and {f["class"] for f in failed} == {"plugin:verify"}
    assert "'NoneType' object has no attribute 'ask_sync'" in failed[0]["message"]


def test_the_judge_is_part_of_what_the_run_is(tmp_path, gym_env):
    out = tmp_path / "out.jsonl"
    first = run_gym("collect", "--agent", "weather", "--model", "replay", "--output", str(out), "--limit", "2",
                    "-q", env=gym_env)
    assert first.returncode == 0, first.stderr
    again = run_gym("collect", "--agent", "weather", "--model", "replay", "--output", str(out), "--limit", "2",
                    "--resume", "--judge-model", "openai:judge", "-q", env=gym_env)
    assert again.returncode != 0 and "judge model: None then, 'openai:judge' now" in again.stderr
    served = run_gym("collect", "--agent", "weather", "--server", "http://127.0.0.1:9", "--judge-model", "openai:j",
                     "--output", str(tmp_path / "s.jsonl"), env=gym_env)
    assert served.returncode == 2 and "gym serve" in served.stderr


def test_gym_math_asks_the_judge_only_when_math_verify_reads_no_answer(tmp_path, gym_env, fake_openai):
    fake_openai.script = [judge_says("YES") for _ in range(3)]
    out = tmp_path / "math.jsonl"
    result = run_gym("collect", "--agent", "math", "--model", "replay", "--judge-model", "openai:judge",
                     "--output", str(out), "-q", env=gym_env)
    assert result.returncode == 0, result.stderr
    lines = {line["task_index"]: line for line in read_jsonl(out)}
    judged = sorted(i for i, line in lines.items() if line["judged"])
    assert judged == [7, 15, 23]  # the scripted answers math-verify cannot read
    assert all(lines[i]["reward"] == 1.0 and lines[i]["judge_usage"]["input_tokens"] == 100 for i in judged)
    assert all("judge_usage" not in line for i, line in lines.items() if i not in judged)
    assert len(fake_openai.requests) == 3 and "reference answer" in json.dumps(fake_openai.requests[0]["body"])


class AsksTwiceInAThread:
    """A plain ``def`` verify that asks the judge twice, noting what its first call did."""

    def __init__(self):
        self.first_call_ended: list[str] = []

    @hookimpl
    def verify(self, session, response):
        city = session.task.verifier_metadata["expected_city"]
        try:
            session.judge.ask_sync(f"{MARK} first {city}")
        except BaseException as exc:
            self.first_call_ended.append(f"{city}: {type(exc).__name__}")
            raise
        session.judge.ask_sync(f"{MARK} second {city}")
        return 1.0


def test_a_rollout_given_up_while_a_def_verify_waits_for_the_judge_releases_it(plugins, tmp_path, monkeypatch,
                                                                                fake_openai):
    # --timeout gives up the Paris rollout while its verify's thread waits in ask_sync for a
    # judge that hangs: the judge call is cancelled and the thread freed at once, not left
    # waiting (and the judge spending) until the run ends; it asks the judge nothing more
    hook = AsksTwiceInAThread()
    plugins.register(hook, name="asks-twice")
    fake_openai.rules = [{"match": f"{MARK} first Paris", "hang": 8}]  # past the run, within the fake's stop
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", ["Paris", "Oslo", "Oslo"]), tmp_path / "out.jsonl"
    config = CollectConfig(agent="asks-twice", output=out, model="openai:policy", input=tasks, progress=False,
                           parallel=1, timeout=3,
                           agent_config=AgentConfig(retry=RetryPolicy(max_retries=0), judge_model="openai:judge"))
    summary = asyncio.run(collect(plugins, config))
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert [f["class"] for f in failed] == ["timeout"] and failed[0]["verifier_metadata"]["expected_city"] == "Paris"
    assert len(read_jsonl(out)) == 2
    assert "hook_calls_stuck" not in summary, summary.get("hook_calls_stuck_note")
    assert hook.first_call_ended == ["Paris: CancelledError"]
    assert not [r for r in fake_openai.requests if f"{MARK} second Paris" in json.dumps(r["body"])]


def test_gym_verify_of_a_judged_run_reports_no_judge_tokens_it_did_not_spend(tmp_path, gym_env, fake_openai):
    # gym verify runs verify without a judge: its lines and summary must not carry over the
    # judge tokens of the collection, which did not produce the new verdicts
    fake_openai.script = [judge_says("YES") for _ in range(3)]
    out, rescored = tmp_path / "math.jsonl", tmp_path / "rescored.jsonl"
    result = run_gym("collect", "--agent", "math", "--model", "replay", "--judge-model", "openai:judge",
                     "--output", str(out), "-q", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "math.metrics.json").read_text())["judge_input_tokens"] == 300
    result = run_gym("verify", str(out), "--output", str(rescored), env=gym_env)
    assert result.returncode == 0, result.stderr
    assert len(fake_openai.requests) == 3  # the judge was asked during the collection only
    summary = json.loads((tmp_path / "rescored.metrics.json").read_text())
    assert "judge_input_tokens" not in summary and "judge_input_tokens" not in result.stderr + result.stdout
    lines = read_jsonl(rescored)
    assert len(lines) == 24 and not [line for line in lines if "judge_usage" in line]


def test_an_unknown_judge_backend_is_named_as_the_judge(tmp_path, gym_env):
    for command in (["collect", "--output", str(tmp_path / "o.jsonl")], ["serve", "--port", "0"]):
        result = run_gym(*command, "--agent", "weather", "--model", "replay", "--judge-model", "nosuch:j",
                         env=gym_env)
        assert result.returncode == 2, result.stderr
        assert "in --judge-model 'nosuch:j'" in result.stderr, result.stderr
