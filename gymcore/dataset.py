"""Reading task rows from JSONL, with errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import attrs
import jsonlines
import orjson

from .data import FAILURE_KEYS, OUTPUT_KEYS, ROW_PARAMS_KEY, Task
from .errors import InputError
from .jsonvalues import row_problem
from .nemo_gym import agent_ref_problem

_OUTPUT_KEYS = frozenset(OUTPUT_KEYS)
_FAILURE_KEYS = frozenset(FAILURE_KEYS) | {"error"}


def output_columns(row: dict[str, Any]) -> list[str]:
    """The keys of ``row`` that gymcore writes itself into an output line: its own keys and
    the metrics its ``metric_names`` lists (the row is, or was made from, an output line),
    and a failures-sidecar line's keys when the row has them all (it is one: a column of a
    task's own named ``message`` stays). They are not the task: a rerun writes fresh values."""
    if _OUTPUT_KEYS.isdisjoint(row):  # the usual row: one set operation
        return []
    names = [key for key in row if key in _OUTPUT_KEYS]
    metrics = row.get("metric_names")
    if isinstance(metrics, list):
        names += [m for m in metrics if isinstance(m, str) and m in row and m not in Task.KNOWN_KEYS
                  and m not in _OUTPUT_KEYS]
    if _FAILURE_KEYS.issubset(row):
        names += FAILURE_KEYS
    return names


def validate_row(row: Any, path: str, line: int | None, dropped: set[str] | None = None) -> Task:
    """Check one parsed row and build its :class:`Task`; raise :class:`InputError`.

    Columns gymcore writes itself (:func:`output_columns`) are left out of the task, and
    their names added to ``dropped`` (for one warning per input). A row nested deeper than
    gymcore can write back out is an error."""
    if not isinstance(row, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(row).__name__}")
    own = output_columns(row)
    if own and isinstance(row.get(ROW_PARAMS_KEY), dict):  # an output line: the row's own params
        row = {**row, "responses_create_params": row[ROW_PARAMS_KEY]}
    if own:
        row = {k: v for k, v in row.items() if k not in own}
        if dropped is not None:
            dropped.update(own)
    params = row.get("responses_create_params")
    if params is None:
        raise InputError(path, line, "missing", field="responses_create_params")
    if not isinstance(params, dict):
        raise InputError(path, line, f"expected an object, got {type(params).__name__}", field="responses_create_params")
    value = params.get("input")
    if value is None:
        raise InputError(path, line, "missing", field="responses_create_params.input")
    if isinstance(value, list):
        for i, item in enumerate(value):  # field names are built only for an error: this runs per row
            if not isinstance(item, dict):
                raise InputError(path, line, f"expected an object, got {type(item).__name__}",
                                 field=f"responses_create_params.input[{i}]")
            content = item.get("content")
            if content is None or isinstance(content, str):
                continue
            if not isinstance(content, list):
                raise InputError(path, line, "expected a string or a list of parts",
                                 field=f"responses_create_params.input[{i}].content")
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise InputError(path, line, f"expected an object, got {type(part).__name__}",
                                     field=f"responses_create_params.input[{i}].content[{j}]")
    elif not isinstance(value, str):
        raise InputError(path, line, "expected a string or a list of items", field="responses_create_params.input")
    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InputError(path, line, "expected a list", field="responses_create_params.tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise InputError(path, line, f"expected an object, got {type(tool).__name__}",
                                 field=f"responses_create_params.tools[{i}]")
    meta = row.get("verifier_metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InputError(path, line, "expected an object or null", field="verifier_metadata")
    unwritable = row_problem(row)
    if unwritable is not None:
        raise InputError(path, line, unwritable[1], field=unwritable[0])
    ref = row.get("agent_ref")
    if ref is not None:  # the row's environment (NeMo Gym's key); which ones exist is checked per run
        bad = agent_ref_problem(ref)
        if bad is not None:
            raise InputError(path, line, bad[1], field=bad[0])
    return Task(
        responses_create_params=params,
        verifier_metadata=meta,
        extra={k: v for k, v in row.items() if k not in Task.KNOWN_KEYS},
    )


#: How many invalid rows a report lists one by one before it says "... and N more".
MAX_REPORTED = 20
_BOM = b"\xef\xbb\xbf"


def _open(path: str | Path):
    name = str(path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(name, None, "no such file") from None
    except IsADirectoryError:
        raise InputError(name, None, "is a directory, not a JSONL file") from None
    except OSError as exc:
        raise InputError(name, None, f"cannot open: {exc.strerror}") from None


class _Rows:
    """The non-blank lines of a file (a leading BOM dropped), remembering the line number
    of the last one handed out: ``jsonlines`` parses, this says where."""

    def __init__(self, fp):
        self.fp, self.line_no = fp, 0

    def __iter__(self):
        for self.line_no, raw in enumerate(self.fp, start=1):
            if self.line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if raw.strip():
                yield raw


def iter_rows(path: str | Path, limit: int | None = None,
              dropped: set[str] | None = None) -> Iterator[tuple[int, int, Task | InputError]]:
    """Yield ``(row_index, line number, Task or InputError)`` for every non-empty line, the
    first ``limit`` of them; never raises for a bad row, so one pass can report them all.
    ``dropped`` collects the names of the columns left out (see :func:`validate_row`).

    ``row_index`` counts non-empty lines from 0, valid or not: it is a row's ``task_index``,
    so skipping invalid rows (``--skip-invalid``) never renumbers the valid ones, and a
    resumed run finds its rows where it left them. Blank lines are not rows.
    """
    name = str(path)
    fp = _open(path)
    if limit is not None and limit <= 0:
        fp.close()
        return
    row_index = 0
    with fp:
        rows = _Rows(fp)
        reader = jsonlines.Reader(rows, loads=orjson.loads)
        while True:
            try:
                row = reader.read()
            except EOFError:
                return
            except jsonlines.InvalidLineError as exc:
                item: Task | InputError = InputError(name, rows.line_no, f"not valid JSON ({exc.__cause__ or exc})")
            else:
                try:
                    item = validate_row(row, name, rows.line_no, dropped)
                except InputError as exc:
                    item = exc
            yield row_index, rows.line_no, item
            row_index += 1
            if limit is not None and row_index >= limit:
                return


def iter_tasks(path: str | Path, limit: int | None = None) -> Iterator[tuple[int, Task]]:
    """Yield ``(line number, task)`` for the first ``limit`` rows; raise the first
    :class:`InputError`. Blank lines are skipped."""
    for _row, line_no, item in iter_rows(path, limit):
        if isinstance(item, InputError):
            raise item
        yield line_no, item


@attrs.define
class InputScan:
    """What one validating pass over an input found: counts, and the first errors."""

    path: str
    rows: int = 0
    valid: int = 0
    errors: list[InputError] = attrs.field(factory=list)
    invalid: int = 0
    #: columns gymcore writes itself, found in rows and left out of their tasks
    dropped: set[str] = attrs.field(factory=set)
    #: environment a valid row names in ``agent_ref`` -> (rows naming it, its first line)
    agent_refs: dict[str, list[int]] = attrs.field(factory=dict)
    #: valid rows without ``agent_ref`` (they run in ``--agent``), and the first one's line
    without_agent_ref: int = 0
    first_without_agent_ref: int | None = None

    def report(self) -> str:
        """Every reported error on its own line, then ``... and N more``."""
        lines = [str(error) for error in self.errors]
        if self.invalid > len(self.errors):
            lines.append(f"... and {self.invalid - len(self.errors)} more")
        return "\n".join(lines)

    def dropped_warning(self) -> str | None:
        """The one warning about :attr:`dropped` columns, or ``None``."""
        if not self.dropped:
            return None
        own = [n for n in OUTPUT_KEYS + FAILURE_KEYS if n in self.dropped]
        metrics = sorted(self.dropped.difference(own))
        return (f"{self.path}: left out of the tasks, as columns gymcore writes itself (is this a previous "
                f"output or failures file?): {', '.join(own + metrics)}; the output has fresh values")


def scan_input(path: str | Path, limit: int | None = None, max_reported: int = MAX_REPORTED) -> InputScan:
    """Validate the first ``limit`` rows, streaming (memory stays flat on a 1 GB file), and
    keep the first ``max_reported`` errors."""
    scan = InputScan(str(path))
    for scan.rows, (_row, line, item) in enumerate(iter_rows(path, limit, scan.dropped), start=1):
        if isinstance(item, InputError):
            scan.invalid += 1
            if len(scan.errors) < max_reported:
                scan.errors.append(item)
        else:
            scan.valid += 1
            ref = item.extra.get("agent_ref") if item.extra else None
            if ref is None:
                scan.without_agent_ref += 1
                if scan.first_without_agent_ref is None:
                    scan.first_without_agent_ref = line
            else:
                seen = scan.agent_refs.setdefault(ref["name"], [0, line])
                seen[0] += 1
    return scan
