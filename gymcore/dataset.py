"""Reading task rows from JSONL, with errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import jsonlines
import orjson

from .data import Task
from .errors import InputError


def validate_row(row: Any, path: str, line: int) -> Task:
    """Check one parsed row and build its :class:`Task`; raise :class:`InputError`."""
    if not isinstance(row, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(row).__name__}")
    params = row.get("responses_create_params")
    if params is None:
        raise InputError(path, line, "missing", field="responses_create_params")
    if not isinstance(params, dict):
        raise InputError(path, line, f"expected an object, got {type(params).__name__}", field="responses_create_params")
    value = params.get("input")
    if value is None:
        raise InputError(path, line, "missing", field="responses_create_params.input")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise InputError(path, line, f"expected an object, got {type(item).__name__}",
                                 field=f"responses_create_params.input[{i}]")
    elif not isinstance(value, str):
        raise InputError(path, line, "expected a string or a list of items", field="responses_create_params.input")
    tools = params.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InputError(path, line, "expected a list", field="responses_create_params.tools")
    meta = row.get("verifier_metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InputError(path, line, "expected an object or null", field="verifier_metadata")
    return Task(
        responses_create_params=params,
        verifier_metadata=meta,
        extra={k: v for k, v in row.items() if k not in Task.KNOWN_KEYS},
    )


class _CountingLines:
    """Iterate a file's lines, remembering the number of the last one handed out."""

    def __init__(self, fp):
        self.fp, self.line = fp, 0

    def __iter__(self):
        for raw in self.fp:
            self.line += 1
            yield raw


def iter_tasks(path: str | Path, limit: int | None = None) -> Iterator[tuple[int, Task]]:
    """Yield ``(line number, task)`` for the first ``limit`` rows; blank lines are skipped."""
    name = str(path)
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise InputError(name, None, "no such file") from None
    except IsADirectoryError:
        raise InputError(name, None, "is a directory, not a JSONL file") from None
    except OSError as exc:
        raise InputError(name, None, f"cannot open: {exc.strerror}") from None
    if limit is not None and limit <= 0:
        fp.close()
        return
    count = 0
    with fp:
        lines = _CountingLines(fp)
        reader = jsonlines.Reader(lines, loads=orjson.loads)
        rows = reader.iter(skip_empty=True)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except jsonlines.InvalidLineError as exc:
                cause = exc.__cause__ or exc
                raise InputError(name, exc.lineno or lines.line, f"not valid JSON ({cause})") from None
            yield lines.line, validate_row(row, name, lines.line)
            count += 1
            if limit is not None and count >= limit:
                return


def count_tasks(path: str | Path, limit: int | None = None) -> int:
    """Validate every row up to ``limit`` (streaming) and return how many there are."""
    n = 0
    for n, _ in enumerate(iter_tasks(path, limit), start=1):
        pass
    return n
