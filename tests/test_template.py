"""The resource template, tested by use: generate packages (cookiecutter's API and
``gym new resource``), install them into this venv, run their own tests, collect with the
replay backend, list them; and refuse bad names before anything is written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from gymcore.scaffold import TEMPLATE_DIR

from .conftest import REPO_PLUGINS, ROOT, clean_env, read_jsonl, run_gym

#: name -> (how it is generated, its first tool). word_tally checks the _ -> - of the dist name.
GENERATED = {"tally": ("api", "plus"), "word_tally": ("cli", "add")}
DISTRIBUTIONS = ["gym-tally", "gym-word-tally"]
#: Answers that must reach pyproject.toml intact: beyond the BMP, quotes, a backslash.
DESCRIPTION = 'Counts words 🧮 "exactly", für alle'
AUTHOR = 'José "Pepe" \\ Ñ'


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """Environment for subprocesses: no GYM_* settings, the repository's plugins and the
    generated ones, cookiecutter's replay files kept in tmp."""
    config = tmp_path_factory.mktemp("cookiecutter") / "config.yaml"
    config.write_text(f"replay_dir: {json.dumps(str(config.parent / 'replay'))}\n")
    return clean_env(GYM_LOAD_PLUGINS=",".join([REPO_PLUGINS, *GENERATED]), COOKIECUTTER_CONFIG=str(config))


@pytest.fixture(scope="module")
def generated(tmp_path_factory, cli_env):
    """Both packages generated, installed editable into this venv, and uninstalled after."""
    from cookiecutter.main import cookiecutter

    out = tmp_path_factory.mktemp("generated")
    pip("uninstall", "-y", *DISTRIBUTIONS)  # left over by an interrupted run, if any
    paths = {}
    for name, (how, tool) in GENERATED.items():
        if how == "api":  # the repository-root template, as `cookiecutter cookiecutter-resource` uses it
            path = cookiecutter(str(ROOT / "cookiecutter-resource"), no_input=True, output_dir=str(out),
                                extra_context={"name": name, "tool_name": tool},
                                config_file=cli_env["COOKIECUTTER_CONFIG"])
        else:
            result = run_gym("new", "resource", "--no-input", f"name={name}", f"tool_name={tool}",
                             f"description={DESCRIPTION}", f"author={AUTHOR}", "author_email=",
                             "--output-dir", str(out), env=cli_env)
            assert result.returncode == 0, result.stderr
            path = result.stdout.strip().removeprefix("created ")
        paths[name] = Path(path)
    installed = pip("install", "-q", "--no-deps", "--no-build-isolation",
                    *[arg for path in paths.values() for arg in ("-e", str(path))])
    assert installed.returncode == 0, installed.stderr
    yield paths
    pip("uninstall", "-y", *DISTRIBUTIONS)


def test_generated_layout(generated):
    assert {name: path.name for name, path in generated.items()} == {"tally": "gym-tally",
                                                                     "word_tally": "gym-word-tally"}
    files = sorted(str(p.relative_to(generated["tally"])) for p in generated["tally"].rglob("*") if p.is_file())
    assert files == [".gitignore", "README.md", "gym_tally/__init__.py", "gym_tally/data/example.jsonl",
                     "gym_tally/data/example_rollouts.jsonl", "pyproject.toml", "tests/test_tally.py"]
    readme = (generated["tally"] / "README.md").read_text()
    for hook in ("list_tools", "call_tool", "verify", "setup_session", "teardown_session",
                 "example_dataset", "example_rollouts"):
        assert f"`{hook}(" in readme
    assert "{{" not in readme and "gym collect --agent tally --model replay" in readme
    # author_email= given empty: no email in the (installable) metadata
    project = tomllib.loads((generated["word_tally"] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["description"] == DESCRIPTION and project["authors"] == [{"name": AUTHOR}]


@pytest.mark.parametrize("name", GENERATED)
def test_generated_tests_pass_as_generated(generated, name, cli_env):
    # `pytest gym-<name>` from the directory it was generated in, as the issue and README say
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", generated[name].name],
                            cwd=generated[name].parent, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^10 passed", result.stdout, re.M), result.stdout


def test_plugins_list_shows_them(generated, cli_env):
    result = run_gym("plugins", "list", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name, (_how, tool) in GENERATED.items():
        row = rows[name]
        assert row["kind"] == "resource" and row["error"] is None and row["version"] == "0.1.0"
        assert row["distribution"].replace("_", "-") == "gym-" + name.replace("_", "-")
        assert row["tools"] == [tool]
        assert set(row["hooks"]) == {"list_tools", "call_tool", "verify", "example_dataset", "example_rollouts"}


@pytest.mark.parametrize("name", GENERATED)
def test_collect_with_replay_scores_every_example(generated, name, cli_env, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run_gym("collect", "--agent", name, "--model", "replay", "--output", str(out),
                     "--num-repeats", "2", "-q", env=cli_env)
    assert result.returncode == 0, result.stderr
    tasks = read_jsonl(generated[name] / f"gym_{name}" / "data" / "example.jsonl")
    lines = read_jsonl(out)
    assert len(tasks) >= 3 and len(lines) == 2 * len(tasks)
    tool = GENERATED[name][1]
    for line in lines:
        assert line["error"] is None and line["agent"] == name
        assert isinstance(line["reward"], float) and 0.0 <= line["reward"] <= 1.0
        assert line["reward"] == 1.0 and line["answer_correct"] == 1 and line["has_ground_truth"] == 1
        assert line["verifier_metadata"] == tasks[line["task_index"]]["verifier_metadata"]
        calls = [i for i in line["response"]["output"] if i["type"] == "function_call"]
        assert calls and {c["name"] for c in calls} == {tool}
        outputs = [i for i in line["response"]["output"] if i["type"] == "function_call_output"]
        # the tool ran for real: its outputs are the sums of the numbers asked for
        for call, output in zip(calls, outputs):
            assert json.loads(output["output"]) == {"sum": sum(json.loads(call["arguments"])["numbers"])}
    metrics = json.loads(out.with_name("out.metrics.json").read_text())
    assert metrics["rollouts"] == 2 * len(tasks) and metrics["mean_reward"] == 1.0


# --- refusals: nothing written ------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["name=my-env"], "name 'my-env' is not a valid Python identifier"),
    (["name=2fast"], "name '2fast' is not a valid Python identifier"),
    (["name=class"], "name 'class' is not a valid Python identifier"),
    (["name=foo_"], "name 'foo_' may not end with _: the distribution gym-foo- would not be a valid package name"),
    (["name=weather"], "name 'weather' is already taken by an installed gym plugin"),
    (["name=replay"], "name 'replay' is already taken"),  # model plugins share the namespace
    (["name=ok", "tool_name=do-it"], "tool_name 'do-it' is not a valid Python identifier"),
    (["nmae=typo"], "unknown template field 'nmae' (keys: name, description, author, author_email, tool_name)"),
    (["name"], "expected KEY=VALUE, got 'name'"),
])
def test_gym_new_resource_refuses_bad_answers(args, message, tmp_path, cli_env):
    out = tmp_path / "out"
    result = run_gym("new", "resource", "--no-input", *args, "--output-dir", str(out), env=cli_env)
    assert result.returncode == 2  # a usage error, as click's own
    assert result.stderr.strip() == f"Error: {message}" or message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_freshly_installed_environment_is_taken_too(generated, tmp_path, cli_env):
    result = run_gym("new", "resource", "--no-input", "name=tally", "--output-dir", str(tmp_path), env=cli_env)
    assert result.returncode == 2 and "name 'tally' is already taken" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_not_overwritten(tmp_path, cli_env):
    (tmp_path / "gym-fresh").mkdir()
    (tmp_path / "gym-fresh" / "keep.txt").write_text("mine")
    result = run_gym("new", "resource", "--no-input", "name=fresh", "--output-dir", str(tmp_path), env=cli_env)
    assert result.returncode == 1 and "gym-fresh already exists" in result.stderr
    assert [p.name for p in (tmp_path / "gym-fresh").iterdir()] == ["keep.txt"]


def test_prompted_answers_are_checked_by_the_template_hook(tmp_path, cli_env):
    """Prompted names are only known to cookiecutter: its pre_gen hook refuses them."""
    out = tmp_path / "out"
    bad = run_gym("new", "resource", "--output-dir", str(out), env=cli_env, input="bad-name\n\n\n\n\n")
    assert bad.returncode == 1
    assert "error: name 'bad-name' is not a valid Python identifier" in bad.stderr
    assert "Traceback" not in bad.stderr and not out.exists()
    good = run_gym("new", "resource", "--output-dir", str(out), env=cli_env, input="prompted\nMy env\nMe\n\nlookup\n")
    assert good.returncode == 0, good.stderr
    pyproject = (out / "gym-prompted" / "pyproject.toml").read_text()
    assert 'description = "My env"' in pyproject
    assert 'authors = [{name = "Me", email = "you@example.com"}]' in pyproject  # empty keeps the default
    assert 'TOOL_NAME = "lookup"' in (out / "gym-prompted" / "gym_prompted" / "__init__.py").read_text()


def test_plain_cookiecutter_hook_refuses_a_taken_name(tmp_path, cli_env):
    from cookiecutter.exceptions import FailedHookException
    from cookiecutter.main import cookiecutter

    for name in ("weather", "foo_"):
        with pytest.raises(FailedHookException):
            cookiecutter(str(ROOT / "cookiecutter-resource"), no_input=True, output_dir=str(tmp_path),
                         extra_context={"name": name}, config_file=cli_env["COOKIECUTTER_CONFIG"])
    assert list(tmp_path.iterdir()) == []


def test_the_gymcore_wheel_carries_the_template(tmp_path):
    """A regular (non-editable) install finds the template: it is package data in the wheel,
    and setuptools has nothing to warn about how it is declared."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (src / "README.md").write_text("gymcore\n")
    os.symlink(ROOT / "gymcore", src / "gymcore")
    result = pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    wheel = next((tmp_path / "dist").glob("gymcore-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    template = {f"gymcore/templates/cookiecutter-resource/{p.relative_to(TEMPLATE_DIR)}"
                for p in TEMPLATE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert template and template <= names
    assert "gymcore/templates/cookiecutter-resource/{{cookiecutter.__distribution}}/.gitignore" in names
    assert not any(n.endswith(".pyc") and "templates" in n for n in names)


def test_other_tests_see_only_this_repositorys_plugins(generated, plugins):
    """While tally and word_tally are installed in this venv (as after following "Writing an
    environment"), the rest of the suite still loads only the plugins this repository ships,
    in process and in the `gym` subprocesses it starts: no test depends on what else is
    installed."""
    shipped = set(REPO_PLUGINS.split(","))
    assert {"weather", "openai", "replay"} <= set(plugins.infos) <= shipped
    listed = run_gym("plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"weather", "openai", "replay"} <= {row["name"] for row in json.loads(listed.stdout)} <= shipped
    unknown = run_gym("collect", "--agent", "nope", "--model", "replay", "--output", "unused.jsonl",
                      env={"PATH": os.environ["PATH"]})
    assert "unknown agent 'nope' (installed environments:" in unknown.stderr, unknown.stderr
    assert "weather" in unknown.stderr and "tally" not in unknown.stderr
