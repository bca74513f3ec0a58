"""Thin adapters from rollouts to two trainers' rollout shapes, built on :func:`to_sequences`.

Both split one token row into the first call's prompt and everything after it (the model's
tokens, and tool / user tokens between calls, which the mask zeroes). Both take
``on_drift="strict"``: each trainer expects exactly one sequence per rollout, so a rollout
whose calls drift raises :class:`~gymcore.training.DriftError` instead of forking into rows
the trainer would miscount; drop or re-collect it, or use :func:`to_sequences` directly.
"""

from __future__ import annotations

from typing import Any, Iterable

from .sequences import _line_of, model_calls, to_sequences


def _split(rollout: Any) -> tuple[list[int], list[int], list[int], list[float], float]:
    [row] = to_sequences(rollout, on_drift="strict")
    start = len(model_calls(rollout)[0][0])
    return (row["input_ids"][:start], row["input_ids"][start:], row["loss_mask"][start:],
            row["logprobs"][start:], row["reward"])


def trl_rollout_output(rollouts: Iterable[Any]) -> dict[str, list[Any]]:
    """What TRL's ``GRPOTrainer(rollout_func=...)`` must return for these rollouts, in order:
    ``prompt_ids``, ``completion_ids`` and ``logprobs`` (required: ``GRPOTrainer.
    _generate``, "rollout_func must return keys ..."), ``env_mask`` (1 on the model's
    tokens, 0 on tool output: "custom env_mask from rollout_func ... marks model tokens (1)
    vs external tokens (0)"), and ``reward``, an extra field TRL forwards to the reward
    functions as a keyword argument. Contract read in ``trl/trainer/grpo_trainer.py``, TRL
    1.10.0.dev0 (main at f2cd577); ``rollout_func`` is experimental there. The rollout
    function returns ``num_generations`` rollouts per prompt, in prompt order."""
    out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [],
                                 "reward": []}
    for rollout in rollouts:
        prompt, completion, mask, logprobs, reward = _split(rollout)
        out["prompt_ids"].append(prompt)
        out["completion_ids"].append(completion)
        out["logprobs"].append(logprobs)
        out["env_mask"].append(mask)
        out["reward"].append(reward)
    return out


def verl_agent_loop_output(rollout: Any) -> dict[str, Any]:
    """One rollout as the fields of verl's ``AgentLoopOutput`` (``verl/experimental/
    agent_loop/agent_loop.py``, verl 0.8.0.dev at b178a3c): ``prompt_ids``, ``response_ids``
    ("LLM generated token, tool response token"), ``response_mask`` ("1 for LLM generated
    token, 0 for tool response token"), ``response_logprobs``, ``reward_score``,
    ``num_turns`` and ``metrics``; ``AgentLoopOutput(**verl_agent_loop_output(r))``."""
    prompt, response, mask, logprobs, reward = _split(rollout)
    return {"prompt_ids": prompt, "response_ids": response, "response_mask": mask, "response_logprobs": logprobs,
            "reward_score": reward, "num_turns": _chat_turns(rollout), "metrics": {}, "extra_fields": {}}


def _chat_turns(rollout: Any) -> int:
    """verl's ``num_turns``: messages of the chat, "including user, assistant, tool" (the
    input's, one per model call, one per tool output)."""
    line = _line_of(rollout)
    task_input = (line.get("responses_create_params") or {}).get("input")
    given = 1 if isinstance(task_input, str) else len(task_input or [])
    output = (line.get("response") or {}).get("output") or []
    return given + len(model_calls(line)) + sum(1 for item in output if item.get("type") == "function_call_output")
