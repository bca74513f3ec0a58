"""Shared fixtures: a real fake-OpenAI server, fresh plugin managers, the ``gym`` CLI as a
subprocess. Nothing of gymcore's own is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gymcore.plugins import KINDS, load_plugins

from .fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
GYM = str(Path(sys.executable).parent / "gym")
#: A key that must never appear in any file or log we write.
SECRET_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def repository_plugins() -> list[str]:
    """The plugin names declared by this repository's pyproject files (gymcore's own and
    plugins/*), whether or not they are installed."""
    names = []
    for path in [ROOT / "pyproject.toml", *sorted((ROOT / "plugins").glob("*/pyproject.toml"))]:
        entry_points = tomllib.loads(path.read_text())["project"].get("entry-points", {})
        names += [name for group in KINDS for name in entry_points.get(group, {})]
    return names


#: The suite loads only the plugins this repository ships (GYM_LOAD_PLUGINS, the escape hatch
#: of gymcore.plugins), in this process and in every `gym` it starts, so a plugin installed
#: beside them (say by following "Writing an environment") changes no test's outcome. A test
#: that needs another plugin, or fewer, names them in GYM_LOAD_PLUGINS.
REPO_PLUGINS = ",".join(repository_plugins())
os.environ["GYM_LOAD_PLUGINS"] = REPO_PLUGINS


def clean_env(**extra: str) -> dict[str, str]:
    """Environment variables for a subprocess: none of the user's ``OPENAI_*`` or ``GYM_*``
    settings, only this repository's plugins, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env["GYM_LOAD_PLUGINS"] = REPO_PLUGINS
    env.update(extra)
    return env


@pytest.fixture
def fake_openai():
    server = FakeOpenAI()
    server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def plugins():
    """A fresh plugin manager per test (installed entry points loaded, no global state)."""
    return load_plugins()


@pytest.fixture
def bare_plugins():
    """A plugin manager with no installed plugins: tests register their own."""
    return load_plugins(entry_points=False)


@pytest.fixture
def gym_env(fake_openai, tmp_path):
    """Environment variables for a ``gym`` subprocess talking to the fake server."""
    return clean_env(OPENAI_BASE_URL=fake_openai.url, OPENAI_API_KEY=SECRET_KEY, PYTHONUNBUFFERED="1")


def run_gym(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``gym`` console script as a real subprocess (with only this
    repository's plugins unless ``env`` sets ``GYM_LOAD_PLUGINS``)."""
    if env is not None and "GYM_LOAD_PLUGINS" not in env:
        env = {**env, "GYM_LOAD_PLUGINS": REPO_PLUGINS}
    return subprocess.run([GYM, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, input=input)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def weather_tasks(path: Path, n: int) -> Path:
    """``n`` weather tasks at ``path``, cycling through the bundled examples."""
    rows = (ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl").read_text().splitlines()
    path.write_text("".join(rows[i % len(rows)] + "\n" for i in range(n)))
    return path


def open_file_limit(soft: int, hard: int | None = None):
    """A ``preexec_fn`` giving a child process a low open-file limit, as many systems do."""
    def apply() -> None:
        import resource

        _soft, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current_hard if hard is None else hard))
    return apply


@pytest.fixture(scope="session")
def paired_runs(tmp_path_factory):
    """Two real runs of the same 200 tasks with a known difference (see tests/test_compare.py),
    built once for the compare, filter and A-vs-B viewer tests."""
    from .test_compare import build_paired_runs

    yield from build_paired_runs(tmp_path_factory.mktemp("paired-runs"))
