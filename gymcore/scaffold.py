"""``gym new resource``: a new environment package from the cookiecutter template.

The template lives inside the gymcore package (``gymcore/templates/cookiecutter-resource``)
as ordinary package data, so every kind of install finds it: an editable install reads the
source tree, a wheel or sdist carries a copy. ``cookiecutter-resource/`` at the repository
root is a symlink to it, for ``cookiecutter cookiecutter-resource`` in a checkout: one copy.

Answers are checked here before cookiecutter runs, so a bad name writes nothing; the
template's own ``hooks/pre_gen_project.py`` makes the same checks for plain cookiecutter.
"""

from __future__ import annotations

import contextlib
import json
import keyword
import logging
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import GymError, UsageError
from .plugins import KINDS

TEMPLATE_DIR = Path(__file__).parent / "templates" / "cookiecutter-resource"


def template_defaults() -> dict[str, Any]:
    """The template's questions and their defaults (``cookiecutter.json``, public keys only)."""
    context = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
    return {k: v for k, v in context.items() if not k.startswith("_")}


def installed_plugin_names() -> set[str]:
    """Names of every installed gym plugin (both kinds), read from entry points without
    importing them, and regardless of ``GYM_LOAD_PLUGINS``: a name taken by a plugin that is
    switched off or broken is taken all the same."""
    return {ep.name for group in KINDS for ep in metadata.entry_points(group=group)}


def is_identifier(value: str) -> bool:
    return value.isascii() and value.isidentifier() and not keyword.iskeyword(value)


def distribution_name(name: str) -> str:
    """``word_count`` -> ``gym-word-count`` (the generated directory and PyPI name)."""
    return "gym-" + name.replace("_", "-")


def parse_answers(items: Iterable[str]) -> dict[str, str]:
    """``["name=calc", "tool_name=add"]`` -> a dict; unknown keys are an error, not ignored."""
    known = template_defaults()
    answers = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE, got {item!r} (keys: {', '.join(known)})")
        if key not in known:
            raise UsageError(f"unknown template field {key!r} (keys: {', '.join(known)})")
        answers[key] = value
    return answers


def check_answers(answers: dict[str, str], taken: Iterable[str] = ()) -> None:
    """Raise :class:`UsageError` for a name or tool name that would not make a working package."""
    name = answers.get("name")
    if name is not None:
        if not is_identifier(name):
            raise UsageError(f"name {name!r} is not a valid Python identifier (letters, digits and _, not "
                           "starting with a digit, not a keyword), e.g. my_env")
        if name.endswith("_"):
            raise UsageError(f"name {name!r} may not end with _: the distribution {distribution_name(name)} "
                           "would not be a valid package name")
        if name in set(taken):
            raise UsageError(f"name {name!r} is already taken by an installed gym plugin; pick another "
                           "(see `gym plugins list`)")
    tool = answers.get("tool_name")
    if tool is not None and not is_identifier(tool):
        raise UsageError(f"tool_name {tool!r} is not a valid Python identifier, e.g. lookup_order")
    description = answers.get("description", "")
    if '"""' in description or "\\" in description:
        raise UsageError('description may not contain """ or a backslash')


@contextlib.contextmanager
def _quiet_cookiecutter_log() -> Iterator[None]:
    """cookiecutter logs a traceback when a hook refuses the answers; the hook's own one-line
    error is what the user needs, so its log goes nowhere while we run it."""
    log = logging.getLogger("cookiecutter")
    handler, propagate = logging.NullHandler(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def new_resource(answers: dict[str, str], *, output_dir: Path, no_input: bool) -> Path:
    """Generate ``gym-<name>/`` in ``output_dir``; return its path.

    With ``no_input`` every answer not given takes the template's default, and all are
    checked before anything is written. Otherwise cookiecutter prompts (given answers become
    the defaults) and the template's hook checks the answers.
    """
    final = {**template_defaults(), **answers} if no_input else answers
    check_answers(final, installed_plugin_names())
    if "name" in final and no_input:
        target = output_dir / distribution_name(final["name"])
        if target.exists():
            raise GymError(f"{target} already exists; pick another name or --output-dir")
    from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    existed = output_dir.exists()
    try:
        with _quiet_cookiecutter_log():
            path = cookiecutter(str(TEMPLATE_DIR), no_input=no_input, extra_context=answers,
                                output_dir=str(output_dir))
    except FailedHookException:
        if not existed and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise GymError("the template refused the answers (see the error above); nothing was written") from None
    except OutputDirExistsException as exc:
        raise GymError(f"{exc}; pick another name or --output-dir") from None
    except CookiecutterException as exc:
        raise GymError(f"cookiecutter: {exc}") from None
    return Path(path)
