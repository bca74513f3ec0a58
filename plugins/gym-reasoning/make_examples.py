"""Writes the bundled example tasks and their recorded model turns (``gym_reasoning/data``).

The "recorded" turns are scripted, not a real model's: for each task the answer is the
right one, a wrong one (every third task) or an answer without tags (every eighth), so
``gym collect --agent reasoning --model replay`` exercises every branch of ``verify``
offline. Run it again after changing the task format:

    .venv/bin/python plugins/gym-reasoning/make_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

from gym_reasoning import DATA, generator

MIX = ["leg_counting", "basic_arithmetic", "spell_backward", "letter_counting"]


def wrong(answer: str) -> str:
    return str(int(answer) + 1) if answer.lstrip("-").isdigit() else answer[::-1] + "x"


def main() -> None:
    rows = [row for name in MIX for row in generator(name)(size=6, seed=0)]
    with open(DATA / "example.jsonl", "w") as tasks, open(DATA / "example_rollouts.jsonl", "w") as recorded:
        for i, row in enumerate(rows):
            tasks.write(json.dumps(row) + "\n")
            truth = str(row["verifier_metadata"]["answer"])
            if i % 8 == 7:
                text = f"The answer is {truth}."
            else:
                text = f"Working through it step by step.\n<answer>{wrong(truth) if i % 3 == 2 else truth}</answer>"
            message = {"type": "message", "id": f"msg_example_{i}", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]}
            recorded.write(json.dumps({**row, "response": {"id": f"resp_example_{i}", "output": [message],
                                                           "status": "completed"}}) + "\n")
    print(f"wrote {len(rows)} tasks and their scripted turns to {DATA}")


if __name__ == "__main__":
    main()
