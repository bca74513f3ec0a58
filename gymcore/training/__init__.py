"""From scored rollouts to what trainers consume: token-level training rows
(:func:`to_sequences`) and thin adapters to TRL's and verl's rollout shapes.

Pure Python (no torch): a trainer turns these lists into tensors itself. See docs/training.md.
"""

from __future__ import annotations

from .adapters import trl_rollout_output, verl_agent_loop_output
from .sequences import DriftError, model_calls, to_sequences

__all__ = ["to_sequences", "model_calls", "DriftError", "trl_rollout_output", "verl_agent_loop_output"]
