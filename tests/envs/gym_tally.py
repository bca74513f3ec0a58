"""A second test environment, ``tally``, for mixed-environment runs (tests/test_nemo_gym.py).

Its tool is ``count_letters``; its ``verify`` returns what the row's ``verifier_metadata``
asks for (``reward``, ``reward_components``), 1.0 by default, and the metric ``tallied``.
Installed for the suite's subprocesses by putting ``tests/envs`` on ``PYTHONPATH`` (the
``gym_tally-0.1.dist-info`` beside it declares the entry point).
"""

from gymcore import hookimpl


@hookimpl
def list_tools():
    return [{"name": "count_letters", "description": "Count the letters of a word.",
             "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}]


@hookimpl
def call_tool(name, arguments, session):
    return {"letters": len(str(arguments.get("word", "")))}


@hookimpl
def verify(session, response):
    meta = session.task.verifier_metadata or {}
    verdict = {"reward": meta.get("reward", 1.0), "tallied": 1}
    if "reward_components" in meta:
        verdict["reward_components"] = meta["reward_components"]
    return verdict
