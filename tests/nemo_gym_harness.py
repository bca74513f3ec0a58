"""Run NeMo Gym's own profiling code (tests/data/nemo_gym/reward_profile.py, unchanged) on a
gymcore run, under a Python that has pandas and pydantic (NeMo Gym's own dependencies).

    python tests/nemo_gym_harness.py OUTPUT.jsonl [PASS_THRESHOLD]

Reads OUTPUT.jsonl and its OUTPUT_materialized_inputs.jsonl as ``gym eval profile`` does
(``RewardProfiler.profile_from_data``), aggregates the rollouts as a resources server's
``/aggregate_metrics`` does (``compute_aggregate_metrics``, per ``agent_ref.name``), computes
``compute_pass_majority_metrics`` over the rollouts grouped by ``_ng_task_index`` (scores
``accuracy`` = reward, and ``passed`` = reward >= PASS_THRESHOLD), and prints
the figures as JSON. The modules reward_profile.py imports that need NeMo Gym installed
(which needs Python >= 3.13) are replaced by stand-ins holding the same names: the key
names of ``nemo_gym/global_config.py`` and the ``AggregateMetrics`` model of
``nemo_gym/config_types.py`` (commit 07d6b0d), a ``wandb.Histogram`` that is dropped
before serialisation anyway, and the file's closing deprecation shim.
"""

from __future__ import annotations

import json
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

from pydantic import BaseModel, Field

HERE = Path(__file__).resolve().parent


class AggregateMetrics(BaseModel):  # nemo_gym/config_types.py at 07d6b0d
    group_level_metrics: List[Dict[str, Any]] = Field(default_factory=list)
    agent_metrics: Dict[str, Any] = Field(default_factory=dict)
    key_metrics: Dict[str, Any] = Field(default_factory=dict)


def load_reward_profile() -> types.ModuleType:
    package = types.ModuleType("nemo_gym")
    package.__path__ = []
    config_types = types.ModuleType("nemo_gym.config_types")
    config_types.AggregateMetrics = AggregateMetrics
    config_types.BaseNeMoGymCLIConfig = BaseModel
    global_config = types.ModuleType("nemo_gym.global_config")
    global_config.AGENT_REF_KEY_NAME = "agent_ref"
    global_config.TASK_INDEX_KEY_NAME = "_ng_task_index"
    global_config.ROLLOUT_INDEX_KEY_NAME = "_ng_rollout_index"
    wandb = types.ModuleType("wandb")
    wandb.Histogram = lambda data: None
    compat = types.ModuleType("nemo_gym.cli._compat")  # a deprecation shim at the file's end
    compat.moved_attr_getter = lambda name, moved: None
    sys.modules.update({"nemo_gym": package, "nemo_gym.config_types": config_types,
                        "nemo_gym.global_config": global_config, "wandb": wandb,
                        "nemo_gym.cli": types.ModuleType("nemo_gym.cli"), "nemo_gym.cli._compat": compat})
    module = types.ModuleType("nemo_gym.reward_profile")
    source = (HERE / "data/nemo_gym/reward_profile.py").read_text()
    exec(compile(source, "reward_profile.py", "exec"), module.__dict__)
    return module


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(output: Path, threshold: float) -> None:
    rp = load_reward_profile()
    results = read(output)
    rows = read(output.with_name(output.stem + "_materialized_inputs.jsonl"))
    _groups, agents = rp.RewardProfiler().profile_from_data(rows, results, allow_partial_rollouts=True)
    profile = {a["agent_ref"]["name"]: {k: v for k, v in a.items() if k.startswith("mean/")} for a in agents}
    by_agent: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_agent[result["agent_ref"]["name"]].append(result)
    aggregate, passes = {}, {}
    for name, lines in by_agent.items():
        stripped = [{k: v for k, v in r.items() if k not in ("response", "responses_create_params")}
                    | {"response": {"usage": r["response"]["usage"]}} for r in lines]
        aggregate[name] = rp.compute_aggregate_metrics(stripped).agent_metrics
        tasks = defaultdict(list)
        for r in lines:
            tasks[r["_ng_task_index"]].append(r)
        grouped = [tasks[t] for t in sorted(tasks)]
        passes[name] = {**rp.compute_pass_majority_metrics(grouped)[0],  # score "accuracy" = reward
                        **rp.compute_pass_majority_metrics(  # score "passed" = reward >= threshold
                            grouped, score_fn=lambda r: {"passed": r["reward"] >= threshold})[0]}
    json.dump({"profile": profile, "aggregate": aggregate, "pass": passes}, sys.stdout, default=float)


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
