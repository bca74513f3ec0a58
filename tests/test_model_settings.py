"""Where a new user learns how to point gym at a model: ``--help`` names the settings, the
errors name where they come from, and a missing API key is said before the run starts
(not found out from the server's 401)."""

from __future__ import annotations

from .conftest import SECRET_KEY, clean_env, read_jsonl, run_gym


def test_collect_help_names_every_model_setting():
    result = run_gym("collect", "--help", env=clean_env())
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "env.yaml", "policy_api_key", "policy_base_url",
                 "policy_model_name"):
        assert name in text, name


def test_no_model_error_names_env_yaml(tmp_path):
    for command in (["collect", "--agent", "weather", "--output", str(tmp_path / "o.jsonl")],
                    ["serve", "--agent", "weather", "--port", "0"]):
        result = run_gym(*command, env=clean_env(), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        error = result.stderr.splitlines()[-1]
        assert "no model" in error and "GYM_MODEL" in error and "policy_model_name in ./env.yaml" in error


def test_a_missing_key_for_a_remote_host_is_said_before_any_rollout(tmp_path):
    out = tmp_path / "o.jsonl"
    for base_url in (None, "https://api.openai.com/v1", "http://192.0.2.1:8000/v1"):
        env = clean_env(**({"OPENAI_BASE_URL": base_url} if base_url else {}))
        for model in ("openai:gpt-4.1-mini", "openai-chat:gpt-4.1-mini"):
            result = run_gym("collect", "--agent", "weather", "--model", model, "--output", str(out),
                             "--limit", "1", "-q", env=env, cwd=tmp_path, timeout=60)
            assert result.returncode == 1, result.stderr
            error = result.stderr.splitlines()[-1]
            assert error.startswith("Error: ") and "no API key" in error, result.stderr
            assert (base_url or "https://api.openai.com/v1") in error
            assert "OPENAI_API_KEY" in error and "policy_api_key in ./env.yaml" in error
            assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
    served = run_gym("serve", "--agent", "weather", "--model", "openai:gpt-4.1-mini", "--port", "0",
                     env=clean_env(), cwd=tmp_path, timeout=60)
    assert served.returncode == 1 and "no API key" in served.stderr and "serving on" not in served.stdout


def test_a_local_server_needs_no_key(tmp_path, fake_openai):
    out = tmp_path / "o.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "openai:m", "--output", str(out), "--limit", "2",
                     "-q", env=clean_env(OPENAI_BASE_URL=fake_openai.url), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line["reward"] for line in read_jsonl(out)] == [1.0, 1.0]
    assert fake_openai.requests and all("Authorization" not in r["headers"] for r in fake_openai.requests)


def test_a_key_from_env_yaml_counts(tmp_path):
    """policy_api_key in ./env.yaml is a key: the run starts (and fails to reach the
    unroutable address, as a rollout failure), and the key is printed nowhere."""
    (tmp_path / "env.yaml").write_text(f"policy_base_url: http://192.0.2.1:9/v1\npolicy_api_key: {SECRET_KEY}\n"
                                       "policy_model_name: m\n")
    out = tmp_path / "o.jsonl"
    result = run_gym("collect", "--agent", "weather", "--output", str(out), "--limit", "1", "-q",
                     "--max-retries", "0", "--timeout", "2", env=clean_env(), cwd=tmp_path, timeout=60)
    assert "no API key" not in result.stderr
    assert result.returncode == 1 and len(read_jsonl(tmp_path / "o.failures.jsonl")) == 1, result.stderr
    for path in tmp_path.iterdir():
        if path.name != "env.yaml":
            assert SECRET_KEY not in path.read_text()
    assert SECRET_KEY not in result.stdout + result.stderr
