"""The benchmarks still run: each script, on a small workload, as `make bench` runs it. They
print figures and assert their own line counts; nothing here looks at a timing."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT

BENCH = ROOT / "bench"


def bench(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=BENCH, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_run_prints_a_table_row_per_scenario():
    out = bench("run.py", "--only", "0ms p64 1k")
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("0ms p64 1k | ")]
    assert len(rows) == 1 and rows[0][1] == "1000", out
    assert "scenario | rollouts | rollouts/s" in out


def test_raw_floor_runs_the_same_rollouts(fake_openai):
    figures = json.loads(bench("raw_floor.py", "--url", fake_openai.url, "--rollouts", "200", "--parallel", "8",
                               "--json"))
    assert figures["rollouts"] == 200 and figures["cpu_s"] > 0
    assert fake_openai.count == 400  # two model calls per rollout, as gymcore makes them
    second = fake_openai.requests[-1]["body"]["input"]
    assert second[-1]["type"] == "function_call_output" and second[-2]["type"] == "function_call"


def test_profile_groups_the_samples_by_owner():
    out = bench("profile.py", "--rollouts", "300")
    assert "aiohttp" in out and "gymcore + plugins" in out, out
    shares = [float(line.split()[-1].rstrip("%")) for line in out.splitlines()
              if line.startswith("  ") and line.rstrip().endswith("%")]
    assert shares and all(0 <= share <= 100 for share in shares)


def test_serve_vs_embedded_compares_both_modes():
    out = bench("serve_vs_embedded.py", "--rollouts", "100", "--latency-ms", "0", "--repeats", "1")
    assert "served/embedded CPU per rollout" in out, out
    modes = [line.split()[0] for line in out.splitlines() if line.strip().startswith(("embedded ", "served "))]
    assert modes == ["embedded", "served"], out


def test_viewer_bench_serves_a_generated_file(tmp_path):
    out = bench("viewer.py", "--rollouts", "300", "--file", str(tmp_path / "view.jsonl"))
    assert "300 rollouts" in out and "viewer peak RSS" in out, out


def test_input_scan_bench_validates_a_generated_file(tmp_path):
    out = bench("input_scan.py", "--size-gb", "0.002", "--file", str(tmp_path / "input.jsonl"))
    assert "scan:" in out and "sha256:" in out, out


def test_reliability_trial_loses_and_duplicates_nothing():
    figures = json.loads(bench("reliability.py", "--tasks", "6", "--repeats", "2", "--kills", "3", "--json"))
    assert figures["rollouts"] == 12 and figures["kills"] + figures["runs that finished before the kill"] == 3
    assert (figures["lost"], figures["duplicated"], figures["garbled"], figures["failures scored"]) == (0, 0, 0, 0)


def test_tokens_bench_prints_both_modes_and_the_ratio():
    out = bench("tokens.py", "--rollouts", "100", "--repeat", "1", "--prompt-tokens", "300")
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("without tokens |", "--return-tokens |"))]
    assert [row[1] for row in rows] == ["100", "100"], out
    assert float(rows[1][-1]) > float(rows[0][-1])  # the token arrays are in the output
    assert "ratio --return-tokens / without:" in out


def test_environments_bench_measures_each_environment_and_the_sandbox():
    out = bench("environments.py", "--repeats", "1", "--calls", "3")
    rows = [line.split()[0] for line in out.splitlines()[1:] if line and not line.startswith(("math sandbox", " "))]
    assert rows == ["weather", "reasoning", "math"], out
    assert "math sandbox, 3 calls of print(6 * 7)" in out


def test_collector_api_bench_prints_both_ratios():
    out = bench("collector_api.py", "--quick")
    assert "ratio API/CLI" in out and "--parallel auto" in out, out


def test_scale_bench_holds_its_rollouts_in_flight_over_replicas():
    figures = json.loads(bench("scale.py", "--parallel", "100", "--latency-ms", "300", "--rollouts", "200",
                               "--replicas", "2", "--json"))
    assert figures["done"] == 200 and figures["failed"] == 0 and figures["exit_code"] == 0, figures
    assert sum(figures["requests_per_replica"]) == 400, figures  # 2 calls a rollout
    assert min(figures["requests_per_replica"]) >= 100, figures  # both replicas used
    assert figures["fds_max"] >= 100 and figures["rss_peak_mb"] > 0, figures
