"""Writes the bundled example tasks and their recorded model turns (``gym_math/data``).

The "recorded" turns are scripted, not a real model's: on most tasks the model runs
``print(<the answer>)`` in the python tool, then answers in ``\\boxed{}``; every third
answer is wrong, every fourth task is answered without the tool, and every eighth
with no readable answer, so ``gym collect --agent math --model replay`` exercises the
sandbox and every branch of ``verify`` offline.

    .venv/bin/python plugins/gym-math/make_examples.py
"""

from __future__ import annotations

import json
from fractions import Fraction

from gym_math import DATA, generator

MIX = ["gsm_symbolic", "basic_arithmetic", "fraction_simplification"]


def wrong(answer: str) -> str:
    try:
        return str(Fraction(answer) + 1)  # off by one
    except ValueError:  # a LaTeX fraction
        return "0"


def main() -> None:
    rows = [row for name in MIX for row in generator(name)(size=8, seed=0)]
    with open(DATA / "example.jsonl", "w") as tasks, open(DATA / "example_rollouts.jsonl", "w") as recorded:
        for i, row in enumerate(rows):
            tasks.write(json.dumps(row) + "\n")
            truth = row["verifier_metadata"]["expected_answer"]
            final = wrong(truth) if i % 3 == 2 else truth
            output = []
            if i % 4 != 3:
                call_id = f"call_example_{i}"
                output += [{"type": "function_call", "id": f"fc_example_{i}", "call_id": call_id, "name": "python",
                            "arguments": json.dumps({"code": f"print({final!r})"}), "status": "completed"},
                           {"type": "function_call_output", "call_id": call_id, "output": final}]
            text = "I cannot tell." if i % 8 == 7 else f"The result is \\boxed{{{final}}}."
            output.append({"type": "message", "id": f"msg_example_{i}", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]})
            recorded.write(json.dumps({**row, "response": {"id": f"resp_example_{i}", "output": output,
                                                           "status": "completed"}}) + "\n")
    print(f"wrote {len(rows)} tasks and their scripted turns to {DATA}")


if __name__ == "__main__":
    main()
