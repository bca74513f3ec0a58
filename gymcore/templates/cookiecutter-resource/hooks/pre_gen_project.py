"""Refuse answers that would not make a working package, before anything is kept.

Self-contained on purpose: plain ``cookiecutter`` may run this template where gymcore is
not installed. ``gym new resource`` makes the same checks before it starts (gymcore.scaffold).
"""

import keyword
import sys
from importlib import metadata

NAME = {{ cookiecutter.name | jsonify }}
TOOL_NAME = {{ cookiecutter.tool_name | jsonify }}
DESCRIPTION = {{ cookiecutter.description | jsonify }}
GROUPS = ("gym.resources", "gym.models")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def is_identifier(value: str) -> bool:
    return value.isascii() and value.isidentifier() and not keyword.iskeyword(value)


if not is_identifier(NAME):
    fail(f"name {NAME!r} is not a valid Python identifier (letters, digits and _, not "
         "starting with a digit, not a keyword), e.g. my_env")
if NAME.endswith("_"):
    fail(f"name {NAME!r} may not end with _: the distribution gym-{NAME.replace('_', '-')} "
         "would not be a valid package name")
if not is_identifier(TOOL_NAME):
    fail(f"tool_name {TOOL_NAME!r} is not a valid Python identifier, e.g. lookup_order")
if '"""' in DESCRIPTION or "\\" in DESCRIPTION:
    fail('description may not contain """ or a backslash')
taken = {ep.name: ep.value for group in GROUPS for ep in metadata.entry_points(group=group)}
if NAME in taken:
    fail(f"name {NAME!r} is already taken by an installed gym plugin ({taken[NAME]}); pick another")
