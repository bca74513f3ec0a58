"""Every hook has a docstring, a place in the plugin author's guide, and a test that
implements it; and the guide's hook reference is the hookspecs' docstrings, up to date."""

from __future__ import annotations

import inspect
import re

import pytest
from cogapp import Cog

import gymcore.hookspecs as hookspecs
from gymcore.plugins import new_manager

from .conftest import ROOT

GUIDE = ROOT / "docs" / "plugins.md"
TEST_DIRS = [ROOT / "tests", *sorted((ROOT / "plugins").glob("*/tests"))]


def hook_names() -> list[str]:
    manager = new_manager()
    return [name for name, value in vars(hookspecs).items()
            if inspect.isfunction(value) and manager.parse_hookspec_opts(hookspecs, name)]


def test_the_hooks_are_found():
    assert {"list_tools", "call_tool", "verify", "setup_session", "teardown_session",
            "register_models"} <= set(hook_names())


@pytest.mark.parametrize("name", hook_names())
def test_hook_has_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc and len(doc) > 40, f"hookspec {name} needs a docstring: it is the reference"


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_in_the_guide(name):
    guide = GUIDE.read_text(encoding="utf-8")
    prose = guide.split("## Hook reference")[0]  # the generated reference alone is not enough
    assert f"`{name}(" in prose, f"docs/plugins.md does not explain `{name}(...)`"


@pytest.mark.parametrize("name", hook_names())
def test_hook_has_a_test_that_implements_it(name):
    pattern = re.compile(rf"@hookimpl[^\n]*\n\s*(async\s+)?def {name}\(")
    found = [path for folder in TEST_DIRS for path in folder.rglob("test_*.py")
             if pattern.search(path.read_text(encoding="utf-8"))]
    assert found, f"no test implements the {name} hook (in {', '.join(str(d) for d in TEST_DIRS)})"


def test_guide_hook_reference_is_up_to_date():
    status = Cog().main(["cog", "--check", str(GUIDE)])
    assert status == 0, "docs/plugins.md is stale: run `.venv/bin/cog -r docs/plugins.md`"
