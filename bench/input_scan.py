"""What `gym collect` spends on a big input before its first rollout, and what it holds.

Every input row is validated before any rollout starts (so a bad line 900,000 stops the run
before it spends model calls), and the run record stores the input's sha256 (so --resume can
refuse another input). Both stream the file. This generates a realistic ~1 GB task JSONL
(rows of ~2 KB: a system prompt, a user turn, four tools, verifier metadata; kept and reused
if it already has the right size) and measures, in a fresh process each:

* the validating scan (``gymcore.dataset.scan_input``): seconds, MB/s, rows/s;
* the sha256 (``gymcore.runfiles.file_sha256``): seconds, MB/s;
* the peak RSS of each (VmHWM), against the same process before it read anything.

    .venv/bin/python bench/input_scan.py [--size-gb 1.0] [--file results/bench-input.jsonl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent

SYSTEM = ("You are a careful assistant with tools. Think about which tool answers the question, call it "
          "with exact arguments, read its result and answer in one or two sentences. ") * 4
TOOLS = [{"type": "function", "name": name, "description": f"{name.replace('_', ' ')} for the user.", "strict": True,
          "parameters": {"type": "object", "additionalProperties": False, "required": ["q"],
                         "properties": {"q": {"type": "string", "description": "What to look up, verbatim."}}}}
         for name in ("get_weather", "search_docs", "read_file", "run_tests")]


def row(i: int) -> bytes:
    return orjson.dumps({
        "id": f"task-{i:08d}",
        "responses_create_params": {"input": [{"role": "developer", "content": SYSTEM},
                                              {"role": "user", "content": f"What is the weather in city #{i}?"}],
                                    "tools": TOOLS, "temperature": 0.7},
        "verifier_metadata": {"expected_city": f"city #{i}", "tolerance": i % 5},
    }) + b"\n"


def generate(path: Path, size: int) -> int:
    """Write rows until ``size`` bytes; return the row count (reuse a file of that size)."""
    if path.exists() and abs(path.stat().st_size - size) < 64 * 1024:
        with open(path, "rb") as fp:
            return sum(1 for _ in fp)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = rows = 0
    with open(path, "wb", buffering=1 << 20) as fp:
        while written < size:
            data = b"".join(row(rows + k) for k in range(1000))
            fp.write(data)
            written += len(data)
            rows += 1000
    return rows


PROBE = """
import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from gymcore.dataset import scan_input
from gymcore.runfiles import file_sha256
from pathlib import Path
before = hwm()
t0 = time.perf_counter()
if sys.argv[1] == "scan":
    scan = scan_input(sys.argv[2])
    extra = {"rows": scan.rows, "invalid": scan.invalid}
else:
    extra = {"sha256": file_sha256(Path(sys.argv[2]))[:12]}
print(json.dumps({"s": time.perf_counter() - t0, "rss_before_mb": before, "rss_peak_mb": hwm(), **extra}))
"""


def measure(what: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, what, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--file", type=Path, default=ROOT / "results" / "bench-input.jsonl")
    args = parser.parse_args()
    rows = generate(args.file, int(args.size_gb * 1e9))
    size_mb = args.file.stat().st_size / 1e6
    print(f"file: {args.file} {size_mb / 1e3:.2f} GB, {rows:,} rows, {size_mb * 1e3 / rows:.2f} KB/row")
    for what in ("scan", "sha256"):
        m = measure(what, args.file)
        rate = f", {m['rows'] / m['s']:,.0f} rows/s" if what == "scan" else ""
        print(f"{what:>6}: {m['s']:.2f} s, {size_mb / m['s']:,.0f} MB/s{rate}; peak RSS {m['rss_peak_mb']:.0f} MB "
              f"(before reading: {m['rss_before_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
