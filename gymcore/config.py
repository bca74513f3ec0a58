"""Where settings come from: CLI options, the seed's ``+key=value`` spelling, environment
variables, and a NeMo Gym ``env.yaml`` in the working directory (so the tutorial's set-up
carries over). Secrets read here are handed to backends and never written anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .errors import GymError, UsageError

#: The seed's ``ng_collect_rollouts`` argument names -> ``gym collect`` option names.
SEED_ARGS = {
    "agent_name": "agent",
    "input_jsonl_fpath": "input",
    "output_jsonl_fpath": "output",
    "limit": "limit",
    "num_repeats": "num_repeats",
    "num_samples_in_parallel": "parallel",
    "model": "model",
    "max_steps": "max_steps",
}

PARAMS_PREFIX = "responses_create_params."


def parse_value(text: str) -> Any:
    """``0.7`` -> 0.7, ``5`` -> 5, ``null`` -> None, ``true`` -> True, other text stays text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_assignment(text: str, where: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"{where}: expected KEY=VALUE, got {text!r}")
    return key.strip(), parse_value(value)


def set_dotted(target: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``reasoning.effort`` = ``high`` -> ``target["reasoning"]["effort"] = "high"``, as the
    seed's Hydra-style keys mean; a later value for the same key wins, as on any command line."""
    parts = key.split(".")
    if not all(parts):
        raise UsageError(f"{where}: empty key in {key!r}")
    node = target
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"{where}: cannot set {key!r}: {'.'.join(parts[:depth + 1])!r} is already set "
                             f"to {child!r}")
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict):
        if not isinstance(value, dict):
            raise UsageError(f"{where}: cannot set {key!r} to {value!r}: {key!r} is already set to an object")
        value = merge_params(node[last], value)
    node[last] = value


def merge_params(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, objects key by key at every depth (a row's
    ``reasoning: {summary: auto}`` plus an override ``reasoning.effort`` keeps both); any
    other value in ``overrides`` replaces ``base``'s. Neither argument is changed."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge_params(merged[key], value)
        merged[key] = value
    return merged


def parse_seed_args(args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split NeMo Gym style ``+key=value`` arguments into (options, params overrides)."""
    options: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("+"):
            raise UsageError(f"unexpected argument {arg!r} (options start with --, seed-style ones with +)")
        key, value = parse_assignment(arg[1:], "argument")
        if key.startswith(PARAMS_PREFIX):
            set_dotted(overrides, key[len(PARAMS_PREFIX):], value, f"argument {arg!r}")
        elif key in SEED_ARGS:
            options[SEED_ARGS[key]] = value
        else:
            known = ", ".join(["+" + k for k in SEED_ARGS] + ["+responses_create_params.KEY"])
            raise UsageError(f"unknown argument +{key} (known: {known})")
    return options, overrides


def parse_set_options(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--set responses_create_params.KEY=VALUE`` (the prefix may be left out; a dotted KEY
    such as ``reasoning.effort`` builds nested objects)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, value = parse_assignment(item, "--set")
        if key.startswith(PARAMS_PREFIX):
            key = key[len(PARAMS_PREFIX):]
        set_dotted(overrides, key, value, f"--set {item!r}")
    return overrides


def read_env_yaml(directory: Path | None = None) -> dict[str, Any]:
    """The ``policy_*`` settings of a NeMo Gym ``env.yaml`` in ``directory``, if any."""
    path = (directory or Path.cwd()) / "env.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GymError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise GymError(f"{path}: expected a mapping of settings")
    return {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("policy_")}


def default_model() -> str | None:
    """``GYM_MODEL``, else ``openai:<policy_model_name>`` from ``env.yaml``."""
    value = os.environ.get("GYM_MODEL")
    if value:
        return value
    name = read_env_yaml().get("policy_model_name")
    return f"openai:{name}" if name else None


def openai_settings() -> dict[str, str | None]:
    """API key, base URL, organization and project for OpenAI-compatible backends:
    ``OPENAI_*`` environment variables first, then ``env.yaml``'s ``policy_*`` keys."""
    env_yaml = read_env_yaml()
    return {
        "api_key": os.environ.get("OPENAI_API_KEY") or env_yaml.get("policy_api_key"),
        "base_url": os.environ.get("OPENAI_BASE_URL") or env_yaml.get("policy_base_url")
        or "https://api.openai.com/v1",
        "organization": os.environ.get("OPENAI_ORG_ID"),
        "project": os.environ.get("OPENAI_PROJECT_ID"),
    }
