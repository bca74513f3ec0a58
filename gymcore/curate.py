"""``gym filter``: keep the tasks of a run that are worth training or evaluating on.

"Sample 8, keep the tasks with a 20-80 % pass rate": tasks every rollout solves, or none
does, teach a group-relative trainer nothing. The kept tasks are written as the run's
original input rows (the very bytes of the input file when it is still there and
unchanged), ready for the next ``gym collect``. Failed rollouts are not fails: a task with
fewer scored repeats than ``min_repeats`` is reported as such and kept out, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import orjson

from .errors import UsageError
from .metrics import PASS_THRESHOLD
from .outcomes import read_run, row_of_line
from .runfiles import (RunRecord, file_sha256, read_complete_lines, refuse_to_overwrite, refuse_to_write_over_input,
                       run_record_path)


@attrs.define
class FilterConfig:
    run: Path
    output: Path
    #: keep tasks whose pass rate lies in [low, high]; ``None``: any
    pass_rate: tuple[float, float] | None = None
    drop_zero_variance: bool = False
    #: scored repeats a task needs to be judged; ``None``: the run's ``num_repeats``
    min_repeats: int | None = None
    threshold: float = PASS_THRESHOLD
    overwrite: bool = False


def parse_band(text: str) -> tuple[float, float]:
    """``"0.2:0.8"`` -> ``(0.2, 0.8)``; both ends inclusive, within [0, 1]."""
    try:
        low_text, high_text = text.split(":")
        low, high = float(low_text or 0), float(high_text or 1)
    except ValueError:
        raise UsageError(f"--pass-rate {text!r}: expected LOW:HIGH, e.g. 0.2:0.8") from None
    if not 0 <= low <= high <= 1:
        raise UsageError(f"--pass-rate {text!r}: need 0 <= LOW <= HIGH <= 1")
    return low, high


def _original_rows(record: RunRecord | None) -> Path | None:
    """The run's input file, if it is still there and unchanged."""
    if record is None:
        return None
    path = Path(record.input)
    try:
        return path if path.is_file() and file_sha256(path) == record.input_sha256 else None
    except OSError:
        return None


def curate(config: FilterConfig) -> dict[str, Any]:
    """Write the kept tasks' input rows to ``config.output``; return what each criterion kept."""
    if not config.overwrite:
        refuse_to_overwrite(config.output, hint="pass --overwrite to replace it")
    refuse_to_write_over_input(config.output, config.run)
    record_path = run_record_path(config.run)
    record = RunRecord.load(record_path) if record_path.exists() else None
    min_repeats = config.min_repeats or (record.num_repeats if record else 1)
    run = read_run(config.run)
    counts = {"tasks": len(run.tasks), "too_few_scored_repeats": 0, "outside_pass_rate": 0,
              "zero_variance": 0}
    kept: set[int] = set()
    for task in run.tasks.values():
        if len(task.rewards) < min_repeats:
            counts["too_few_scored_repeats"] += 1
            continue
        rate = task.pass_rate(config.threshold)
        if config.pass_rate is not None and not config.pass_rate[0] <= rate <= config.pass_rate[1]:
            counts["outside_pass_rate"] += 1
            continue
        if config.drop_zero_variance and max(task.rewards) == min(task.rewards):
            counts["zero_variance"] += 1
            continue
        kept.add(task.task_index)
    source = _original_rows(record)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.output.with_name(config.output.name + ".tmp")
    with open(tmp, "wb") as out:
        if source is not None:  # the input's own bytes, in input order
            index = 0
            with open(source, "rb") as fp:
                for raw in fp:
                    if not raw.strip():
                        continue
                    if index in kept:
                        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    index += 1
        else:  # rebuilt from the output lines: the row as the collector read it
            seen: set[int] = set()
            for _line_no, line in read_complete_lines(config.run, repair=False, on_warning=lambda _m: None):
                index = line.get("task_index")
                if index in kept and index not in seen:
                    seen.add(index)
                    out.write(orjson.dumps(row_of_line(line)) + b"\n")
    tmp.replace(config.output)
    return {"run": str(config.run), "output": str(config.output), **counts, "kept": len(kept),
            "min_repeats": min_repeats, "pass_threshold": config.threshold,
            "pass_rate": list(config.pass_rate) if config.pass_rate else None,
            "drop_zero_variance": config.drop_zero_variance,
            "rows_from": str(source) if source else "the run's output lines (the input file is gone or changed)"}
