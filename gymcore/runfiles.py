"""The files of one collection run, and how a run starts, resumes, or refuses to.

For ``--output results/run.jsonl``:

* ``results/run.jsonl``: one scored rollout per line (the output);
* ``results/run.failures.jsonl``: one line per rollout that failed for infrastructure
  reasons (the task row, ``task_index``, ``rollout_index``, ``class``, ``message``,
  ``attempts``, ``invocation``, ``error``), never mixed into the output;
* ``results/run.run.json``: what the run is (input file and its sha256, agent, model,
  request overrides, ``max_steps``, ``num_repeats``, ``limit``, gymcore version), written
  before the first rollout, so ``--resume`` can refuse to mix two different runs;
* ``results/run.metrics.json``: the summary of the whole output, rewritten at the end;
* ``results/run.input.jsonl``: only when the input was a stream (``--input -``, a FIFO):
  the copy of it that the run reads and resumes from (:mod:`gymcore.input_spool`);
* ``results/run.lock``: present while a run holds the output (:mod:`gymcore.runlock`).

Lines are appended with one unbuffered ``write`` each, so a ``kill -9`` can tear only the
last line; a torn last line has no newline, and resuming cuts it off with a warning.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs
import jsonlines
import orjson

from . import __version__
from .data import Rollout, components_mismatch, converter, fail_unwritable, shadowed_columns
from .errors import GymError
from .jsonvalues import OPTIONS, unwritable_fields
from .metrics import failure_class


def sidecar(output: Path, suffix: str) -> Path:
    """``results/run.jsonl`` + ``.failures.jsonl`` -> ``results/run.failures.jsonl``."""
    return output.with_name(output.stem + suffix)


def metrics_path(output: Path) -> Path:
    return sidecar(output, ".metrics.json")


def failures_path(output: Path) -> Path:
    return sidecar(output, ".failures.jsonl")


def run_record_path(output: Path) -> Path:
    return sidecar(output, ".run.json")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=OPTIONS)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON through a temporary file and a rename: a reader (or a
    crash) sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    os.replace(tmp, path)


def warn(message: str) -> None:
    print(f"gym: warning: {message}", file=sys.stderr, flush=True)


class JsonlAppender:
    """Appends JSON lines to a file through ``jsonlines``, flushed per line (no per-line
    fsync: the OS has the line as soon as the flush returns, which is what survives a crash
    of this process). The 1 MiB buffer makes a line and its newline one ``write`` call, so a
    ``kill -9`` can tear only the last line, which resume cuts off. Opened lazily, so a run
    without failures leaves no failures file."""

    BUFFER = 1 << 20

    def __init__(self, path: Path, mode: str = "ab"):
        self.path, self.mode = path, mode
        self._fp: Any = None
        self._writer: Any = None
        self.lines = 0

    def write(self, obj: Any) -> None:
        if self._writer is None:
            self.open()
        self._writer.write(obj)
        self.lines += 1

    def open(self) -> "JsonlAppender":
        """Create (or truncate, or open for appending, per ``mode``) the file now."""
        if self._fp is None:
            self._fp = open(self.path, self.mode, buffering=self.BUFFER)
            self._writer = jsonlines.Writer(self._fp, dumps=dumps, flush=True)
        return self

    def close(self) -> None:
        if self._fp is not None:
            self._writer.close()
            self._fp.close()
            self._fp = self._writer = None


def read_complete_lines(path: Path, *, repair: bool,
                        on_warning: Callable[[str], None] = warn) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, parsed object)`` for every complete line of a JSONL file that
    this process or a killed one appended to.

    A last line without its newline was torn by a crash: it is skipped with a warning and,
    with ``repair``, cut off the file (so appending goes on from a clean line end). Any
    other line that is not a JSON object means the file was not written by gymcore (or was
    edited): a :class:`GymError` naming the line.
    """
    with open(path, "rb") as fp:
        offset = 0
        for line_no, raw in enumerate(fp, start=1):
            if not raw.endswith(b"\n"):
                what = f"{path}:{line_no}: the last line is incomplete ({len(raw)} bytes, no newline), " \
                       "torn by an interrupted write"
                if repair:
                    fp.close()
                    os.truncate(path, offset)
                    on_warning(f"{what}; removed it")
                else:
                    on_warning(f"{what}; skipped it")
                return
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise GymError(f"{path}:{line_no}: not a JSON line ({exc}); was this file edited?") from None
            if not isinstance(obj, dict):
                raise GymError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
            yield line_no, obj


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (a 1 GB input costs well under a second)."""
    with open(path, "rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


@attrs.define
class RunRecord:
    """What a run is; stored as ``<stem>.run.json``. Two invocations are the same run when
    the :attr:`IDENTITY` fields agree; ``limit`` and ``num_repeats`` may grow."""

    input: str
    input_sha256: str
    agent: str
    model: str
    overrides: dict[str, Any]
    max_steps: int
    num_repeats: int
    limit: int | None
    judge_model: str | None = None  # a judge scores differently: part of what the run is
    return_tokens: bool = False  # --return-tokens: every rollout of the run has token ids, or none
    gymcore_version: str = __version__
    invocations: int = 1
    #: the copy beside the output that a piped input was spooled to (see ``input_spool``)
    input_copy: str | None = None
    #: ``--seed-repeats``: each request carried ``seed = rollout_index``
    seed_repeats: bool = False
    #: ``--pass-threshold`` (not part of what the run is: it only changes what is counted a
    #: pass; ``gym view`` reads it here)
    pass_threshold: float = 1.0
    #: the environments the rows run in (``agent_ref``, else ``agent``): derived from the
    #: input and ``agent``, so not compared on resume
    environments: list[str] | None = None

    IDENTITY = ("input_sha256", "agent", "model", "overrides", "max_steps", "judge_model", "return_tokens",
                "seed_repeats")
    _LABELS = {"input_sha256": "input file", "agent": "agent", "model": "model", "judge_model": "judge model",
               "overrides": "request overrides", "max_steps": "max steps", "return_tokens": "return tokens",
               "seed_repeats": "--seed-repeats"}

    @classmethod
    def load(cls, path: Path) -> "RunRecord":
        try:
            data = orjson.loads(path.read_bytes())
            fields = {f.name for f in attrs.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in fields})
        except (OSError, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise GymError(f"{path}: cannot read the run record ({exc})") from None

    def save(self, path: Path) -> None:
        write_json_atomic(path, attrs.asdict(self))

    def differences(self, new: "RunRecord") -> list[str]:
        """What ``new`` changes about this run, one phrase each (empty: the same run)."""
        out = []
        for name in self.IDENTITY:
            old_value, new_value = getattr(self, name), getattr(new, name)
            if _canonical(old_value) == _canonical(new_value):
                continue
            if name == "input_sha256":
                out.append(f"the input file differs (sha256 {old_value[:12]}... of {self.input} when the run "
                           f"started, {new_value[:12]}... of {new.input} now)"
                           + (f"; the run read the copy {self.input_copy}: resume with --input {self.input_copy} "
                              "or --input -" if self.input_copy and not new.input_copy else ""))
            else:
                out.append(f"{self._LABELS[name]}: {old_value!r} then, {new_value!r} now")
        return out


def recorded_pass_threshold(output: Path, default: float = 1.0) -> float:
    """The ``--pass-threshold`` of the run that wrote ``output``, from its run record
    (``default`` when there is none), so ``gym verify`` counts passes as the run did."""
    try:
        value = orjson.loads(run_record_path(output).read_bytes()).get("pass_threshold")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


@attrs.define
class ResumeState:
    """What a resumed run found: the rollouts done (task_index -> bitmask of rollout
    indices: compact for millions of rollouts), and how many earlier failures are still
    not done (they are retried)."""

    done: dict[int, int] = attrs.field(factory=dict)
    lines: int = 0
    failed_before: int = 0
    invocation: int = 1

    def is_done(self, task_index: int, rollout_index: int) -> bool:
        return bool(self.done.get(task_index, 0) >> rollout_index & 1)

    def count_done(self, rows: int, repeats: int) -> int:
        """Rollouts done among task indices ``< rows`` and rollout indices ``< repeats``."""
        mask = (1 << repeats) - 1
        return sum((bits & mask).bit_count() for t, bits in self.done.items() if t < rows)


RESUME_HINT = "pass --resume to continue that run, or --overwrite to replace it (its failures and run record too)"


def refuse_to_overwrite(output: Path, hint: str = RESUME_HINT) -> None:
    """Raise unless neither the output nor its failures sidecar exists yet."""
    for path in (output, failures_path(output)):
        if path.exists():
            raise GymError(f"{path} already exists: {hint}")


def refuse_to_write_over_input(output: Path, input_path: Path) -> None:
    """An output (or a sidecar of it) that is the file being read would be truncated or
    appended to while it is read, whatever ``--overwrite`` says about the output: refuse."""
    for path in (output, failures_path(output), run_record_path(output), metrics_path(output)):
        try:
            same = path.exists() and input_path.exists() and path.samefile(input_path)
        except OSError:
            continue
        if same:
            raise GymError(f"{path} is the input file {input_path}: writing there would destroy it; "
                           "pick another --output")


def failure_record(rollout: Rollout, invocation: int) -> dict[str, Any]:
    """A failures-sidecar line: the task row, which rollout, why it failed, and the episode
    so far when there is one (``response``), so the turn that led to the failure can be read."""
    error = rollout.error or {}
    line = converter.unstructure(rollout.task)
    line["task_index"] = rollout.task_index
    line["rollout_index"] = rollout.rollout_index
    line["agent"] = rollout.agent
    line["model"] = rollout.model
    line["class"] = failure_class(error)
    line["message"] = error.get("message")
    line["attempts"] = error.get("attempts", 1)
    line["invocation"] = invocation
    line["elapsed_s"] = round(rollout.timing.total_s, 3)
    line["error"] = error
    if rollout.response is not None:
        line["response"] = rollout.response
    if rollout.model_version is not None:
        line["model_version"] = rollout.model_version
    return line


class RolloutSink:
    """Where finished rollouts go: a scored one to the output, a failed one to the failures
    sidecar. Never raises for a value orjson refuses: checks upstream (input rows, verdicts)
    leave only a model reply nested too deep and the like, and such a rollout becomes a
    failure of class ``unwritable:<field>``, so the run and its resume go on. Warns once per
    name when a metric replaces an input column of the same name in the output line."""

    def __init__(self, output: JsonlAppender, failures: JsonlAppender, invocation: int,
                 on_warning: Callable[[str], None] = warn):
        self.output, self.failures, self.invocation = output, failures, invocation
        self.on_warning = on_warning
        self._shadowed: set[str] = set()
        self._told_sum = False

    def write(self, rollout: Rollout) -> None:
        """Write ``rollout`` where it belongs; a rollout that cannot be written is made a
        failure in place (``rollout.error`` set), so stats counted after this see it."""
        if rollout.error is None:
            self._note_shadowed(rollout)
            mismatch = components_mismatch(rollout) if not self._told_sum else None
            if mismatch:
                self._told_sum = True
                self.on_warning(mismatch + " (said once per run)")
            line = converter.unstructure(rollout)
            try:
                self.output.write(line)
                return
            except TypeError:  # orjson.JSONEncodeError; nothing was written
                fail_unwritable(rollout, line)
        record = failure_record(rollout, self.invocation)
        try:
            self.failures.write(record)
        except TypeError:  # a part of the record orjson refuses (a plugin changed the task): leave it out
            bad = unwritable_fields(record)
            self.failures.write({k: v for k, v in record.items() if k not in bad} | {"unwritable_fields": bad})

    def _note_shadowed(self, rollout: Rollout) -> None:
        names = [n for n in shadowed_columns(rollout) if n not in self._shadowed]
        if names:
            self._shadowed.update(names)
            self.on_warning(f"input column(s) {', '.join(names)} of task {rollout.task_index} have the name of a "
                            "metric verify returned: the output line has verify's value (said once per name)")


def resume(output: Path, record: RunRecord, on_line: Callable[[dict[str, Any]], None]) -> ResumeState:
    """Check that ``record`` is the run that wrote ``output``, repair a torn last line, and
    scan what is done; ``on_line`` sees every rollout already in the output."""
    state = ResumeState()
    record_path = run_record_path(output)
    if not record_path.exists():
        if output.exists() or failures_path(output).exists():
            raise GymError(f"cannot resume {output}: no run record {record_path.name} beside it, so nothing "
                           "says which run wrote it; use another --output, or --overwrite to replace it")
        return state  # nothing was started: a fresh run
    previous = RunRecord.load(record_path)
    differences = previous.differences(record)
    if differences:
        raise GymError(f"cannot resume {output}: it is another run: " + "; ".join(differences)
                       + ". Use another --output for a new run, or --overwrite to replace this one")
    if record.num_repeats < previous.num_repeats:
        raise GymError(f"cannot resume {output} with --num-repeats {record.num_repeats}: the run has "
                       f"{previous.num_repeats} per task (a resumed run may raise it, not lower it)")
    state.invocation = previous.invocations + 1
    if output.exists():
        for line_no, line in read_complete_lines(output, repair=True):
            check_rollout_line(output, line_no, line)
            task_index, rollout_index = line["task_index"], line["rollout_index"]
            state.done[task_index] = state.done.get(task_index, 0) | 1 << rollout_index
            state.lines += 1
            on_line(line)
    failures = failures_path(output)
    if failures.exists():
        pending = set()
        for _line_no, line in read_complete_lines(failures, repair=True):
            key = _key(line)
            if key is not None and not state.is_done(*key):
                pending.add(key)
        state.failed_before = len(pending)
    return state


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def rollout_line_problem(line: dict[str, Any]) -> tuple[str, str] | None:
    """The first field of a stored rollout line that gymcore could not have written, as
    ``(field, what is wrong)``; ``None`` when the line reads back as a rollout. Checks what
    resume and ``gym verify`` use, so an edited or foreign file is a clear error, not a crash."""
    for name in ("task_index", "rollout_index"):
        value = line.get(name)
        if type(value) is not int or value < 0:
            return name, "missing" if value is None else f"expected a whole number >= 0, got {value!r}"
    if line.get("reward") is not None and not _is_number(line["reward"]):
        return "reward", f"expected a number or null, got {line['reward']!r}"
    response = line.get("response")
    if response is not None:
        if not isinstance(response, dict):
            return "response", f"expected an object or null, got {type(response).__name__}"
        if not isinstance(response.get("output"), list):
            return "response.output", "expected a list of items"
        if response.get("usage") is not None and not isinstance(response["usage"], dict):
            return "response.usage", f"expected an object, got {type(response['usage']).__name__}"
    for name in ("turns", "tool_calls", "tool_errors"):
        if line.get(name) is not None and type(line[name]) is not int:
            return name, f"expected a whole number, got {line[name]!r}"
    for name in ("error", "timing"):
        if line.get(name) is not None and not isinstance(line[name], dict):
            return name, f"expected an object or null, got {type(line[name]).__name__}"
    for key, value in (line.get("timing") or {}).items():
        if not _is_number(value):
            return f"timing.{key}", f"expected a number, got {value!r}"
    names = line.get("metric_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        return "metric_names", "expected a list of names"
    return None


def check_rollout_line(path: Path, line_no: int, line: dict[str, Any]) -> None:
    """Raise a :class:`GymError` naming file, line and field unless ``line`` is a rollout."""
    problem = rollout_line_problem(line)
    if problem is not None:
        field, what = problem
        raise GymError(f"{path}:{line_no}: field {field!r}: {what} (not a rollout as gym collect writes "
                       "them; was this file edited?)")


def _key(line: dict[str, Any]) -> tuple[int, int] | None:
    task_index, rollout_index = line.get("task_index"), line.get("rollout_index")
    if type(task_index) is int and type(rollout_index) is int and task_index >= 0 and rollout_index >= 0:
        return task_index, rollout_index
    return None
