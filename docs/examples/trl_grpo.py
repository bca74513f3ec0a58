"""GRPO with TRL on gymcore rollouts: a ``rollout_func`` that collects each batch with
``--return-tokens`` and hands TRL the exact tokens (docs/training.md).

    pip install trl  # and a vLLM server: trl vllm-serve --model Qwen/Qwen3-0.6B
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=none python docs/examples/trl_grpo.py

Everything above ``main`` runs without TRL or torch (the tests call ``rollout_func``
against the fake server). Until the streaming API lands this collects through a temporary
file; failed rollouts are not in the output, so the batch is retried until every prompt has
``num_generations`` scored rollouts.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import orjson

from gymcore.agent import AgentConfig
from gymcore.collector import CollectConfig, collect
from gymcore.plugins import load_plugins
from gymcore.training import trl_rollout_output

AGENT = os.environ.get("GYM_AGENT", "weather")
MODEL = os.environ.get("GYM_MODEL", "openai-chat:Qwen/Qwen3-0.6B")


def collect_rollouts(prompts: list, repeats: int) -> list[dict]:
    """``repeats`` scored rollouts per prompt (a string or chat messages), in prompt order."""
    with tempfile.TemporaryDirectory() as tmp:
        tasks, out = Path(tmp, "tasks.jsonl"), Path(tmp, "rollouts.jsonl")
        tasks.write_bytes(b"".join(orjson.dumps({"responses_create_params": {"input": p}}) + b"\n"
                                   for p in prompts))
        config = CollectConfig(agent=AGENT, model=MODEL, input=tasks, output=out, num_repeats=repeats,
                               progress=False, agent_config=AgentConfig(return_tokens=True))
        plugins = load_plugins()
        for _ in range(3):  # --resume retries what failed (a 503, a timeout, model:no_tokens)
            asyncio.run(collect(plugins, config))
            lines = [orjson.loads(raw) for raw in out.read_bytes().splitlines() if raw.strip()]
            if len(lines) == len(prompts) * repeats:
                return sorted(lines, key=lambda line: (line["task_index"], line["rollout_index"]))
            config.resume = True
    raise RuntimeError(f"{len(prompts) * repeats - len(lines)} rollouts still failing; see the failures sidecar")


def rollout_func(prompts: list, trainer) -> dict[str, list]:
    """TRL's ``GRPOTrainer(rollout_func=...)``: ``num_generations`` rollouts per prompt."""
    return trl_rollout_output(collect_rollouts(prompts, trainer.num_generations))


def gym_reward(completions, reward, **kwargs) -> list[float]:
    """The environment's verify() scored each rollout already; TRL passes ``reward`` through."""
    return list(reward)


def main() -> None:  # pragma: no cover - needs TRL, torch and a vLLM server
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = [orjson.loads(raw) for raw in Path("plugins/gym-weather/gym_weather/data/example.jsonl").read_bytes()
            .splitlines() if raw.strip()]
    dataset = Dataset.from_list([{"prompt": row["responses_create_params"]["input"]} for row in rows])
    trainer = GRPOTrainer(model=MODEL.split(":", 1)[1], reward_funcs=gym_reward, rollout_func=rollout_func,
                          train_dataset=dataset,
                          args=GRPOConfig(use_vllm=True, vllm_mode="server", num_generations=4,
                                          per_device_train_batch_size=4, max_steps=10))
    trainer.train()


if __name__ == "__main__":
    main()
