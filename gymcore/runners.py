"""Where rollouts run. The collector only needs ``run(task, task_index, rollout_index)``;
a runner decides where: in this process (:class:`EmbeddedRunner`) or on a ``gym serve``
host. Every runner ends in the same :func:`gymcore.agent.run_rollout`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs

from .agent import AgentConfig, run_rollout
from .backends import ModelBackend, ModelContext, create_backend
from .data import Rollout, Task
from .environment import Environment
from .hook_threads import MAX_THREADS
from .judge import Judge
from .plugins import Plugins
from .reach import ModelReach


class RolloutRunner(Protocol):
    agent: str
    model_label: str
    is_replay: bool
    example_dataset_path: Path | None
    #: where that dataset comes from, as the run record and summary name it
    example_dataset_name: str | None
    #: the judge model ``verify`` may call and whether calls return token ids, wherever the
    #: model is called (here or in `gym serve`): part of what the run is
    judge_model: str | None
    return_tokens: bool

    async def run(self, task: Task, task_index: int, rollout_index: int) -> Rollout: ...

    async def aclose(self) -> None: ...


def split_agent(agent: str) -> list[str]:
    """``weather`` -> [weather]; ``weather,clock`` or ``weather+clock`` -> both, composed."""
    return [name for name in agent.replace("+", ",").split(",") if name.strip()]


class EmbeddedRunner:
    """Environment and model backend loaded from plugins into this process."""

    def __init__(self, env: Environment, model: ModelBackend, config: AgentConfig, judge: Judge | None = None,
                 reach: ModelReach | None = None):
        self.reach = reach or ModelReach()  # knows call by call whether the model answered (shared per run)
        self.env, self.model, self.config = env, self.reach.watch(model), config
        self.judge = judge
        self.agent = env.name
        self.model_label = model.label
        self.is_replay = bool(getattr(model, "is_replay", False))
        self.judge_model, self.return_tokens = config.judge_model, config.return_tokens
        self.example_dataset_path = env.example_dataset_path
        self.example_dataset_name = str(env.example_dataset_path) if env.example_dataset_path else None

    @classmethod
    async def create(cls, plugins: Plugins, agent: str, model: str, config: AgentConfig, *,
                     hook_threads: int = MAX_THREADS, reach: ModelReach | None = None) -> "EmbeddedRunner":
        env = await Environment.create(plugins, split_agent(agent), threads=hook_threads)
        context = ModelContext(environment=env, timeout=config.model_timeout, return_tokens=config.return_tokens)
        backend = create_backend(plugins, model, context)
        judge_context = attrs.evolve(context, return_tokens=False)  # the judge's tokens are not trained on
        judge = Judge(create_backend(plugins, config.judge_model, judge_context, option="--judge-model"),
                      config.retry) if config.judge_model else None
        return cls(env, backend, config, judge, reach)

    async def run(self, task: Task, task_index: int, rollout_index: int) -> Rollout:
        return await run_rollout(self.env, self.model, task, task_index=task_index,
                                 rollout_index=rollout_index, config=self.config, judge=self.judge)

    def stuck_hook_calls(self) -> dict[str, int]:
        """``def`` hook calls still running in a thread whose rollout gave up on them."""
        return dict(self.env.threads.stuck())

    async def aclose(self) -> None:
        try:
            await self.model.aclose()
        finally:
            if self.judge is not None:
                await self.judge.aclose()
