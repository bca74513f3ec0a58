"""The reasoning environment: reasoning-gym's procedural task generators, scored by
reasoning-gym's own scorer for each task.

Tasks are generated, not shipped: ``gym dataset make reasoning:leg_counting --size 500
--seed 1 -o tasks.jsonl`` (options such as ``min_animals=3`` go to the generator's config).
A row carries what the scorer needs in ``verifier_metadata`` (the generator's name, its
answer and metadata), so ``verify`` needs nothing but the row: no generator is rebuilt, no
data is downloaded. The model answers inside ``<answer></answer>`` tags, reasoning-gym's
own convention; there are no tools.

Reward: the task's scorer on the last ``<answer>`` of the final message (most give 1.0 for
right and 0.0 for wrong; a few give partial credit, e.g. for a close number). No answer
tag: reward 0.0 with ``answer_found`` 0, so a format failure is told apart from a wrong
answer. Built on reasoning-gym (https://github.com/open-thought/reasoning-gym, Apache-2.0):
``reasoning_gym.create_dataset`` and ``reasoning_gym.get_score_answer_fn`` of 0.1.x.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from gymcore import hookimpl
from gymcore.responses import final_text

DATA = Path(__file__).parent / "data"
#: reasoning-gym's ``composite`` mixes other generators and needs their list as config:
#: mix tasks with ``cat`` instead.
NOT_OFFERED = frozenset({"composite"})
#: What the model is told, as reasoning-gym's default system prompt says it (paraphrased).
INSTRUCTIONS = ("Think the problem through step by step, then give only the final answer inside "
                "<answer></answer> tags, e.g. <answer>42</answer>. Put no explanation inside the tags.")


def task_row(name: str, index: int, seed: int, entry: dict[str, Any]) -> dict[str, Any]:
    """One generated entry as an input row; ``id`` names generator, seed and position."""
    return {
        "id": f"{name}-{seed}-{index}",
        "responses_create_params": {"input": [
            {"role": "developer", "content": INSTRUCTIONS},
            {"role": "user", "content": entry["question"]},
        ]},
        "verifier_metadata": {"dataset": name, "answer": entry.get("answer"),
                              "metadata": entry.get("metadata") or {}},
    }


def generator(name: str):
    def generate(size: int, seed: int, **config: Any) -> Iterator[dict[str, Any]]:
        import reasoning_gym

        try:
            dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
        except TypeError as exc:  # an option the generator's config does not have
            raise TypeError(f"{exc} (see reasoning-gym's {name} config for the options)") from None
        except AssertionError as exc:  # reasoning-gym validates configs with assert
            raise ValueError(f"invalid options for {name}: {exc}") from None
        # built here, not lazily, so that bad options are an error before any row
        return (task_row(name, index, seed, dataset[index]) for index in range(size))

    return generate


@hookimpl
def register_datasets(register):
    from reasoning_gym.factory import DATASETS

    for name in sorted(DATASETS):
        if name not in NOT_OFFERED:
            register(name, generator(name), f"reasoning-gym {name} (options: its config's fields)")


def last_answer(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` of ``text``, stripped; ``None`` if none."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    if end < 0:
        return None
    return text[start + len("<answer>"):end].strip()


@hookimpl
def verify(session, response):
    meta = session.task.verifier_metadata or {}
    name = meta.get("dataset")
    if not name:
        raise ValueError("the row has no verifier_metadata.dataset: make rows with `gym dataset make reasoning:NAME`")
    from reasoning_gym import get_score_answer_fn

    answer = last_answer(final_text(response.get("output") or []))
    if answer is None:
        return {"reward": 0.0, "answer_found": 0}
    entry = {"question": "", "answer": meta.get("answer"), "metadata": meta.get("metadata") or {}}
    score = float(get_score_answer_fn(name)(answer, entry))
    return {"reward": score, "answer_found": 1}


@hookimpl
def example_dataset():
    return DATA / "example.jsonl"


@hookimpl
def example_rollouts():
    return DATA / "example_rollouts.jsonl"
