"""The README's commands work when a new user runs them one after another."""

from __future__ import annotations

import re
from collections import Counter

from .conftest import ROOT


def test_each_readme_collect_example_writes_its_own_output():
    """An existing output is refused without --resume or --overwrite, so two examples that
    share one path would make the second fail. `make demo` writes results/weather.jsonl too."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = re.findall(r"gym collect (?:[^\n]|\\\n)*", "\n".join(blocks))
    outputs = [m for command in commands for m in re.findall(r"(?:--output |\+output_jsonl_fpath=)(\S+)", command)]
    demo = re.search(r"^DEMO_OUT \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert len(outputs) >= 5, commands
    assert [path for path, n in Counter(outputs + [demo]).items() if n > 1] == []
