"""The math environment: word problems and arithmetic where the model may call a ``python``
tool to compute, then answers; scored by math-verify (symbolic equivalence, LaTeX or plain).

Models: NeMo Gym's ``math_with_code`` (a code tool) and ``math_with_judge`` (math-verify,
with a judge model as fallback) resource servers. Tasks are generated with reasoning-gym
(Apache-2.0): ``gym dataset make math:gsm_symbolic --size 1000 --seed 1 -o tasks.jsonl``.

* ``python(code)`` runs the code in :mod:`gym_math.sandbox`: a separate process per call
  with CPU, memory, process, output and wall-clock limits and no inherited environment.
  What the model reads is the printed output, the error's tail, or which limit stopped it.
* ``verify``: reward 1.0 when the final message's answer (``\\boxed{}`` first, else the last
  expression) equals ``verifier_metadata.expected_answer`` for math-verify, else 0.0.
  Metrics: ``answer_parsed`` (0: no answer could be read; a format failure, told apart
  from a wrong answer), ``used_python`` and ``python_calls``. When math-verify reads no
  answer and the run has a judge model (``--judge-model``), the judge decides; ``judged``
  says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from gymcore import hookimpl
from gymcore.responses import final_text

from . import scoring
from .sandbox import Limits, Sandbox

DATA = Path(__file__).parent / "data"

PYTHON_TOOL = {
    "type": "function",
    "name": "python",
    "description": ("Run a Python 3 program and return what it prints (stdout), or its error. Each call is a "
                    "fresh process: print() the values you need. Limits: a few seconds, 512 MB, no input."),
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The program, e.g. print(17 * 23)"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "strict": True,
}

INSTRUCTIONS = ("Solve the problem. You may call the python tool to compute; it returns what the program "
                "prints. End with the final answer alone in \\boxed{}, e.g. \\boxed{42}.")

#: reasoning-gym generators whose reference answers math-verify reads back as equal to
#: themselves (checked on 30 tasks each; see the README)
GENERATORS = {
    "gsm_symbolic": "grade-school word problems (GSM8K-style templates)",
    "basic_arithmetic": "integer expressions with + - * / and parentheses",
    "decimal_arithmetic": "decimal expressions",
    "decimal_chain_sum": "sums of decimals",
    "chain_sum": "sums and differences of integers",
    "products": "products of integers",
    "simple_equations": "one linear equation in one unknown",
    "fraction_simplification": "reduce a fraction",
    "gcd": "greatest common divisor",
    "lcm": "least common multiple",
    "count_primes": "how many primes in a range",
}

#: What the judge model is asked when math-verify cannot read the answer (NeMo Gym's
#: math_with_judge asks a judge the same question of equivalence).
JUDGE_PROMPT = ("You grade math answers. The reference answer is:\n{expected}\n\nThe student's final "
                "message is:\n{answer}\n\nDoes the student's final answer equal the reference answer "
                "(mathematically equivalent; ignore formatting)? Reply with exactly YES or NO.")

_sandbox: Sandbox | None = None


def shared_sandbox() -> Sandbox:
    global _sandbox
    if _sandbox is None:
        _sandbox = Sandbox(Limits())
    return _sandbox


def task_row(name: str, index: int, seed: int, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{name}-{seed}-{index}",
        "responses_create_params": {"input": [
            {"role": "developer", "content": INSTRUCTIONS},
            {"role": "user", "content": entry["question"]},
        ]},
        "verifier_metadata": {"expected_answer": str(entry["answer"]), "source": f"reasoning-gym {name}"},
    }


def generator(name: str):
    def generate(size: int, seed: int, **config: Any) -> Iterator[dict[str, Any]]:
        import reasoning_gym

        try:
            dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
        except AssertionError as exc:
            raise ValueError(f"invalid options for {name}: {exc}") from None
        # built here, not lazily, so that bad options are an error before any row
        return (task_row(name, index, seed, dataset[index]) for index in range(size))

    return generate


@hookimpl
def register_datasets(register):
    for name, description in GENERATORS.items():
        register(name, generator(name), description)


@hookimpl
def list_tools():
    return [PYTHON_TOOL]


@hookimpl
async def call_tool(name, arguments, session):
    code = arguments.get("code")
    if not isinstance(code, str):
        raise ValueError("python takes {'code': '<program>'}")
    box = shared_sandbox()
    return (await box.run(code)).for_model(box.limits)


@hookimpl
async def verify(session, response):
    expected = (session.task.verifier_metadata or {}).get("expected_answer")
    if expected is None:
        raise ValueError("the row has no verifier_metadata.expected_answer")
    output = response.get("output") or []
    calls = sum(1 for item in output if item.get("type") == "function_call" and item.get("name") == "python")
    text = final_text(output)
    correct, parsed, _answer = await scoring.check(expected, text)
    judged = not parsed and session.judge is not None and bool(text.strip())
    if judged:  # math-verify read no answer: a judge model, when the run has one, decides
        verdict = await session.judge.ask(JUDGE_PROMPT.format(expected=expected, answer=text[-4000:]),
                                          temperature=0)
        correct = verdict.strip().upper().startswith("YES")
    return {"reward": float(correct), "answer_parsed": int(parsed), "judged": int(judged),
            "used_python": int(calls > 0), "python_calls": calls}


@hookimpl
def example_dataset():
    return DATA / "example.jsonl"


@hookimpl
def example_rollouts():
    return DATA / "example_rollouts.jsonl"
