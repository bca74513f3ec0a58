"""A streaming line index of a rollout JSONL, so the viewer never holds the file in memory.

Two passes, both streaming and both run in a background thread so the first page is served
at once: pass 1 finds the byte offset of every line (fast: a newline scan), which is all the
unfiltered list and the one-rollout page need; pass 2 parses each line with orjson and keeps
a few small fields per rollout (reward, task, repeat, turns, tools, tokens, error class) in
flat arrays for the overview, filters and sorting. Pages say how far indexing has got.

When the file grows (``gym collect`` still writing), only the appended bytes are indexed; a
torn last line (no newline yet, not valid JSON) is left for later with a warning; a file
rewritten from scratch is indexed again from the start.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import attrs
import orjson

from ..metrics import PASS_THRESHOLD

log = logging.getLogger("gymcore.viewer")

#: Bytes read at a time; pass 2 holds the index lock for one block, so keep it small.
SCAN_CHUNK = 8 << 20
PARSE_CHUNK = 1 << 20
#: A request waits for indexing to finish only when this little is new (a few rollouts).
WAIT_FOR_BYTES = 4 << 20
#: Bytes compared at the head of the file and before the indexed end, to notice a rewrite.
HEAD_BYTES = 256
#: The failure class of a line that is not a JSON object.
BAD_LINE = "invalid JSON line"
#: Top-level keys of an output line that are never metrics (for files without ``metric_names``).
NOT_METRICS = frozenset({"reward", "task_index", "rollout_index", "turns", "tool_calls", "tool_errors"})


def failure_class(error: Any, reward: Any) -> str | None:
    """The failure class a line counts under, as in the ``*.metrics.json`` summary."""
    if error is None and isinstance(reward, (int, float)):
        return None
    error = error if isinstance(error, dict) else {}
    return f"{error.get('type', 'unknown')}:{error.get('kind', '')}".rstrip(":")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@attrs.define(slots=True)
class Fields:
    """The small per-rollout facts the index keeps; also what a list row shows."""

    reward: float | None = None
    task_index: int | None = None
    rollout_index: int | None = None
    task_label: str | None = None
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tools: tuple[str, ...] = ()
    usage: dict[str, Any] = attrs.field(factory=dict)
    tokens: int = 0
    duration: float | None = None
    error: dict[str, Any] | None = None
    failure: str | None = None
    stop_reason: str | None = None
    agent: str = ""
    model: str = ""
    metrics: dict[str, float] = attrs.field(factory=dict)


#: What :class:`Totals` sums per population (scored, failed).
FIGURES = ("turns", "tool_calls", "tool_errors", "input_tokens", "output_tokens", "cached_tokens", "tokens")


def _figures() -> dict[str, int]:
    return dict.fromkeys(FIGURES, 0)


@attrs.define
class Totals:
    """Running totals over the parsed rollouts, counted as ``gym collect``'s summary counts
    them: a rollout with an error or no reward is a failure, not a zero. Turns, tool calls
    and tokens are summed for scored rollouts (``figures``) and apart for failed lines."""

    rollouts: int = 0
    scored: int = 0
    reward_sum: float = 0.0
    figures: dict[str, int] = attrs.field(factory=_figures)
    failed_figures: dict[str, int] = attrs.field(factory=_figures)
    failures: Counter = attrs.field(factory=Counter)
    per_task: dict[int, list[int]] = attrs.field(factory=dict)  # task -> [scored, passed, failed]

    def add(self, fields: Fields, task: int, threshold: float = PASS_THRESHOLD) -> None:
        self.rollouts += 1
        failed = fields.failure is not None or fields.reward is None
        figures = self.failed_figures if failed else self.figures
        usage = fields.usage
        details = usage.get("input_tokens_details")
        figures["turns"] += fields.turns
        figures["tool_calls"] += fields.tool_calls
        figures["tool_errors"] += fields.tool_errors
        figures["input_tokens"] += _int(usage.get("input_tokens")) or 0
        figures["output_tokens"] += _int(usage.get("output_tokens")) or 0
        figures["cached_tokens"] += _int(details.get("cached_tokens")) or 0 if isinstance(details, dict) else 0
        figures["tokens"] += fields.tokens
        counts = self.per_task.setdefault(task, [0, 0, 0])
        if failed:
            self.failures[fields.failure] += 1
            counts[2] += 1
            return
        self.scored += 1
        self.reward_sum += fields.reward
        counts[0] += 1
        counts[1] += fields.reward >= threshold


def _environment(obj: dict) -> str:
    """The line's environment: gymcore's ``agent``, else NeMo Gym's ``agent_ref.name``."""
    ref = obj.get("agent_ref")
    return str(obj.get("agent") or (ref.get("name") if isinstance(ref, dict) else "") or "")


def line_fields(obj: Any) -> Fields:
    """Read the indexed fields of one parsed line, tolerating any shape."""
    if not isinstance(obj, dict):
        return Fields(error={"type": BAD_LINE}, failure=BAD_LINE)
    response = obj.get("response") if isinstance(obj.get("response"), dict) else {}
    output = response.get("output") if isinstance(response.get("output"), list) else []
    calls = [item.get("name") for item in output
             if isinstance(item, dict) and item.get("type") == "function_call"]
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    usage = {k: v for k, v in usage.items() if isinstance(v, (int, float, dict)) and not isinstance(v, bool)}
    tokens = _int(usage.get("total_tokens"))
    if tokens is None:
        tokens = (_int(usage.get("input_tokens")) or 0) + (_int(usage.get("output_tokens")) or 0)
    reward = _num(obj.get("reward"))
    error = obj.get("error")
    if error is not None and not isinstance(error, dict):
        error = {"type": "error", "message": str(error)}
    names = obj.get("metric_names")
    if not isinstance(names, list):
        names = [k for k, v in obj.items() if k not in NOT_METRICS and isinstance(v, (int, float))]
    metrics = {}
    for name in names:
        value = _num(obj.get(name)) if isinstance(name, str) else None
        if value is not None:
            metrics[name] = value
    timing = obj.get("timing") if isinstance(obj.get("timing"), dict) else {}
    label = obj.get("id")
    turns = _int(obj.get("turns"))
    tool_calls = _int(obj.get("tool_calls"))
    return Fields(
        reward=reward,
        task_index=_int(obj.get("task_index")),
        rollout_index=_int(obj.get("rollout_index")),
        task_label=str(label) if isinstance(label, (str, int)) and not isinstance(label, bool) else None,
        turns=turns if turns is not None else sum(1 for item in output if isinstance(item, dict)
                                                  and item.get("type") == "message") + len(calls),
        tool_calls=tool_calls if tool_calls is not None else len(calls),
        tool_errors=_int(obj.get("tool_errors")) or 0,
        tools=tuple(sorted({str(name) for name in calls if name})),
        usage=usage,
        tokens=tokens,
        duration=_num(timing.get("total_s")),
        error=error,
        failure=failure_class(error, reward),
        stop_reason=obj.get("stop_reason") if isinstance(obj.get("stop_reason"), str) else None,
        agent=_environment(obj),
        model=str(obj.get("model") or ""),
        metrics=metrics,
    )


class Columns:
    """Offsets and per-line fields as flat arrays: ~60 bytes a rollout, whatever its size.

    Pass 1 appends an entry per non-blank line (offset, length, line number, placeholder
    fields); pass 2 fills the fields in. Entries ``< parsed`` have their fields."""

    def __init__(self) -> None:
        self.start = array("q")
        self.length = array("q")
        self.lineno = array("q")
        self.lines = 0
        self.parsed = 0

    def add_line(self, start: int, length: int, lineno: int) -> None:
        self.start.append(start)
        self.length.append(length)
        self.lineno.append(lineno)
        self.lines += 1


class LineIndex:
    """Pass 1 and the refresh logic, shared by the rollout file and its failures sidecar.

    Subclasses say how to parse one line (:meth:`_parse_entry`) and what to reset."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.generation = 0
        self.pending = 0  # bytes the running (or last) indexing pass started with
        self.scanning = False  # pass 1 is running
        self._scanned = threading.Condition(self.lock)
        self._worker: threading.Thread | None = None
        self._reset()

    # -- state ---------------------------------------------------------------------------

    def _new_columns(self) -> Columns:
        return Columns()

    def _reset(self) -> None:
        self.generation += 1
        self.cols = self._new_columns()
        self.scanned_to = 0  # every byte before this is indexed
        self.size_seen = -1  # the file size at the end of the last pass
        self.identity: tuple[int, int] | None = None
        self.head = b""  # the first bytes and the last indexed bytes, to notice a rewrite
        self.tail = b""
        self.next_lineno = 1
        self.open_line = False  # the last entry had no newline yet
        self.torn: tuple[int, int] | None = None  # (line number, bytes) of an incomplete last line
        self.bad_lines: list[int] = []
        self.n_bad = 0

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def indexing(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def status(self) -> dict[str, Any]:
        cols = self.cols
        return {
            "path": str(self.path), "lines": cols.lines, "parsed": cols.parsed,
            "bytes_indexed": self.scanned_to, "bytes": max(self.size_seen, 0),
            "done": not self.indexing and cols.parsed == cols.lines,
            "torn_line": self.torn and {"line": self.torn[0], "bytes": self.torn[1]},
            "bad_lines": self.n_bad,
        }

    # -- refresh -------------------------------------------------------------------------

    def refresh(self, wait: float | None = 0.0) -> None:
        """Index whatever changed since last time, in the background. A small change (a few
        appended rollouts) is waited for, up to ``wait`` seconds, so a reload shows it; a
        big one is not: pages show what is indexed so far. ``wait=None``: always wait until
        done (tests). Cheap when nothing changed: one ``stat``."""
        with self.lock:
            if not self.indexing:
                st = self._stat()
                if self._changed(st):
                    self.pending = max(st.st_size - self.scanned_to, 0) if st else 0
                    self._worker = threading.Thread(target=self._run, name=f"index {self.path.name}", daemon=True)
                    self._worker.start()
            worker = self._worker
        if worker is not None and (wait is None or wait > 0 and self.pending <= WAIT_FOR_BYTES):
            worker.join(wait)

    def _stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except OSError:
            return None

    def _changed(self, st: os.stat_result | None) -> bool:
        if st is None:
            return self.identity is not None
        return (st.st_dev, st.st_ino) != self.identity or st.st_size != self.size_seen

    def _rewritten(self, st: os.stat_result) -> bool:
        """True when the file is not the one indexed so far plus appended bytes: another
        file, shorter, or different at its head or just before where indexing stopped."""
        if (st.st_dev, st.st_ino) != self.identity or st.st_size < self.scanned_to:
            return True
        try:
            with open(self.path, "rb") as fp:
                if fp.read(len(self.head)) != self.head:
                    return True
                fp.seek(self.scanned_to - len(self.tail))
                if fp.read(len(self.tail)) != self.tail:
                    return True
                # what follows an entry that had no newline must start with one
                return self.open_line and st.st_size > self.scanned_to and fp.read(1) != b"\n"
        except OSError:
            return True

    def _run(self) -> None:
        try:
            for _ in range(1000):  # bounded: a file that never stops changing still yields
                st = self._stat()
                with self.lock:
                    if st is None:
                        if self.identity is not None:
                            self._reset()
                        return
                    if self.identity is None or self._rewritten(st):
                        if self.identity is not None:
                            log.warning("%s was rewritten; indexing it again", self.path)
                        self._reset()
                        self.identity = (st.st_dev, st.st_ino)
                    if st.st_size == self.size_seen:
                        return
                with self.lock:
                    self.scanning = True
                try:
                    self._scan(st.st_size)
                finally:
                    with self.lock:
                        self.scanning = False
                        self._scanned.notify_all()
                self._parse_pending()
                with self.lock, open(self.path, "rb") as fp:
                    self.size_seen = st.st_size
                    self.head = fp.read(min(HEAD_BYTES, self.scanned_to))
                    fp.seek(max(0, self.scanned_to - HEAD_BYTES))
                    self.tail = fp.read(self.scanned_to - fp.tell())
        except Exception:  # never let the viewer die with its index thread
            log.exception("indexing %s failed", self.path)

    # -- pass 1: line offsets ------------------------------------------------------------

    def _scan(self, end: int) -> None:
        # readinto one reused buffer: no fresh memory per chunk, so ~1 GB/s on a warm file.
        cols = self.cols
        pos = self.scanned_to  # file offset of buf[0]
        buf = bytearray(SCAN_CHUNK)
        carry = b""
        first = True
        with open(self.path, "rb", buffering=0) as fp:
            while pos < end:
                fp.seek(pos)
                got = fp.readinto(memoryview(buf)[: min(len(buf), end - pos)])
                if not got:
                    break
                i = 0
                with self.lock:
                    if cols is not self.cols:
                        return
                    if first and self.open_line and buf[0] == 10:
                        i, self.open_line = 1, False  # the newline that ends the open entry
                    first = False
                    find = buf.find
                    while (j := find(b"\n", i, got)) >= 0:
                        if j - i > 8 or (j > i and buf[i:j].strip()):
                            cols.add_line(pos + i, j - i, self.next_lineno)
                        self.next_lineno += 1
                        i = j + 1
                    self.scanned_to = pos + i
                    self._scanned.notify_all()
                if i == 0 and got == len(buf):  # a line longer than the buffer
                    buf = bytearray(2 * len(buf))
                    continue
                if pos + got >= end:
                    carry = bytes(buf[i:got])
                    break
                pos += i
        with self.lock:
            if cols is not self.cols:
                return
            if not carry.strip():
                self.torn = None
                return
            try:
                orjson.loads(carry)
            except orjson.JSONDecodeError:
                if self.torn != (self.next_lineno, len(carry)):
                    log.warning("%s:%d: incomplete last line (%d bytes, no newline yet); ignored for now",
                                self.path, self.next_lineno, len(carry))
                self.torn = (self.next_lineno, len(carry))
                return
            # A complete object without a trailing newline: a file that just ends that way.
            cols.add_line(self.scanned_to, len(carry), self.next_lineno)
            self.next_lineno += 1
            self.scanned_to += len(carry)
            self.open_line = True
            self.torn = None

    # -- pass 2: fields ------------------------------------------------------------------

    def _parse_pending(self) -> None:
        cols = self.cols
        buf = bytearray(PARSE_CHUNK)
        with open(self.path, "rb", buffering=0) as fp:
            k = cols.parsed
            while k < cols.lines:
                n, base = cols.lines, cols.start[k]
                m = k + 1
                while m < n and cols.start[m] + cols.length[m] - base <= PARSE_CHUNK:
                    m += 1
                size = cols.start[m - 1] + cols.length[m - 1] - base
                if size > len(buf):
                    buf = bytearray(size)
                fp.seek(base)
                view = memoryview(buf)
                if fp.readinto(view[:size]) != size:
                    return  # shorter than indexed: rewritten; the next refresh starts over
                with self.lock:
                    if cols is not self.cols:
                        return
                    for e in range(k, m):
                        offset = cols.start[e] - base
                        try:
                            obj = orjson.loads(view[offset: offset + cols.length[e]])
                        except orjson.JSONDecodeError:
                            obj = None
                        if not isinstance(obj, dict):
                            self.n_bad += 1
                            if len(self.bad_lines) < 20:
                                self.bad_lines.append(cols.lineno[e])
                            log.warning("%s:%d: not a JSON object; skipped", self.path, cols.lineno[e])
                            obj = None
                        self._parse_entry(cols, obj)
                    cols.parsed = m
                k = m

    def _parse_entry(self, cols: Columns, obj: dict | None) -> None:
        """Append the fields of the next entry (``cols.parsed``) to the subclass's columns."""
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------

    def wait_for_line(self, lineno: int, timeout: float = 2.0) -> None:
        """Wait (briefly: pass 1 runs at disk speed) until line ``lineno`` has been found or
        pass 1 is over, so a deep link into a file still being indexed works at once."""
        with self.lock:
            self._scanned.wait_for(lambda: self.next_lineno > lineno or not self.scanning, timeout)

    def wait_for_entries(self, count: int, timeout: float = 2.0) -> None:
        """Like :meth:`wait_for_line`, for the first ``count`` entries (an unfiltered page)."""
        with self.lock:
            self._scanned.wait_for(lambda: self.cols.lines >= count or not self.scanning, timeout)

    def entry_for_line(self, lineno: int, cols: Columns | None = None) -> int | None:
        """The entry holding file line ``lineno`` (1-based), or None."""
        from bisect import bisect_left

        cols = cols or self.cols
        n = cols.lines
        e = bisect_left(cols.lineno, lineno, 0, n)
        return e if e < n and cols.lineno[e] == lineno else None

    def read(self, entries: Iterable[int], cols: Columns | None = None) -> list[bytes]:
        """The raw bytes of each entry (one open, one ``pread`` each)."""
        cols = cols or self.cols
        out = []
        with open(self.path, "rb") as fp:
            fd = fp.fileno()
            for e in entries:
                out.append(os.pread(fd, cols.length[e], cols.start[e]))
        return out

    def load(self, entry: int, cols: Columns | None = None) -> Any:
        """The parsed line of an entry (None when it is not valid JSON)."""
        try:
            return orjson.loads(self.read([entry], cols)[0])
        except orjson.JSONDecodeError:
            return None


class RolloutColumns(Columns):
    """Offsets plus the fields filters and sorting need, appended by pass 2 in entry order."""

    def __init__(self) -> None:
        super().__init__()
        self.reward = array("d")  # NaN: no reward
        self.task = array("q")
        self.repeat = array("q")
        self.turns = array("q")
        self.tool_calls = array("q")
        self.tokens = array("q")
        self.duration = array("d")  # NaN: no timing
        self.failure = array("l")  # code into RolloutIndex.failure_names; 0: none
        self.tools: list[tuple[str, ...]] = []

    def add_fields(self, reward: float, task: int, repeat: int, turns: int, tool_calls: int, tokens: int,
                   duration: float, failure: int, tools: tuple[str, ...]) -> None:
        self.reward.append(reward)
        self.task.append(task)
        self.repeat.append(repeat)
        self.turns.append(turns)
        self.tool_calls.append(tool_calls)
        self.tokens.append(tokens)
        self.duration.append(duration)
        self.failure.append(failure)
        self.tools.append(tools)


class RolloutIndex(LineIndex):
    """The index of a rollout file, with running totals for the overview."""

    cols: RolloutColumns
    #: a rollout passes when its reward is at least this: the run's ``--pass-threshold``
    #: (set by the viewer from the run record before the first refresh)
    threshold: float = PASS_THRESHOLD

    def _new_columns(self) -> RolloutColumns:
        return RolloutColumns()

    def _reset(self) -> None:
        super()._reset()
        self.totals = Totals()
        self.failure_names: list[str | None] = [None]
        self._failure_codes: dict[str, int] = {}
        self._tool_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._task_keys: dict[Any, int] = {}
        self.task_rows: dict[int, list[int]] = {}
        self.task_labels: dict[int, str] = {}
        self.tool_counts: Counter = Counter()  # calls per tool
        self.metric_sums: dict[str, list[float]] = {}  # name -> [sum, count]
        self.usage_sums: dict[str, float] = {}
        self.timing_sums: dict[str, list[float]] = {}
        self.models: Counter = Counter()
        self.agents: Counter = Counter()
        self.environments: dict[str, list[float]] = {}  # name -> [rollouts, scored, reward sum, passed]

    def failure_code(self, name: str) -> int | None:
        return self._failure_codes.get(name)

    def _task_of(self, fields: Fields, obj: dict) -> int:
        if fields.task_index is not None:
            return fields.task_index
        # No task_index (e.g. a NeMo Gym file): the row's id, else its input, names the task.
        key = fields.task_label
        if key is None:
            params = obj.get("responses_create_params")
            key = orjson.dumps(params.get("input") if isinstance(params, dict) else None,
                               option=orjson.OPT_SORT_KEYS)
        return self._task_keys.setdefault(key, len(self._task_keys))

    def _parse_entry(self, cols: RolloutColumns, obj: dict | None) -> None:
        if obj is None:
            cols.add_fields(math.nan, -1, -1, -1, -1, -1, math.nan, self._code(BAD_LINE), ())
            return
        fields = line_fields(obj)
        task = self._task_of(fields, obj)
        rows = self.task_rows.setdefault(task, [])
        repeat = fields.rollout_index if fields.rollout_index is not None else len(rows)
        rows.append(len(cols.reward))
        if fields.task_label is not None:
            self.task_labels.setdefault(task, fields.task_label)
        self.totals.add(fields, task, self.threshold)
        cols.add_fields(math.nan if fields.reward is None else fields.reward, task, repeat, fields.turns,
                        fields.tool_calls, fields.tokens, math.nan if fields.duration is None else fields.duration,
                        0 if fields.failure is None else self._code(fields.failure),
                        self._tool_sets.setdefault(fields.tools, fields.tools))
        timing = obj.get("timing")
        if isinstance(timing, dict):
            for key, value in timing.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    total = self.timing_sums.setdefault(key, [0.0, 0])
                    total[0] += value
                    total[1] += 1
        for name, value in fields.metrics.items():
            total = self.metric_sums.setdefault(name, [0.0, 0])
            total[0] += value
            total[1] += 1
        for key, value in fields.usage.items() if fields.failure is None and fields.reward is not None else ():
            if isinstance(value, dict):  # the scored rollouts' token details, as the overview's tokens
                for sub, number in value.items():
                    if isinstance(number, (int, float)) and not isinstance(number, bool):
                        self.usage_sums[f"{key}.{sub}"] = self.usage_sums.get(f"{key}.{sub}", 0) + number
        response = obj.get("response")
        if isinstance(response, dict) and isinstance(response.get("output"), list):
            for item in response["output"]:
                if isinstance(item, dict) and item.get("type") == "function_call":
                    self.tool_counts[str(item.get("name"))] += 1
        self.models[fields.model] += 1
        self.agents[fields.agent] += 1
        env = self.environments.setdefault(fields.agent, [0, 0, 0.0, 0])
        env[0] += 1
        if fields.failure is None and fields.reward is not None:
            env[1] += 1
            env[2] += fields.reward
            env[3] += fields.reward >= self.threshold

    def _code(self, name: str) -> int:
        code = self._failure_codes.get(name)
        if code is None:
            code = self._failure_codes[name] = len(self.failure_names)
            self.failure_names.append(name)
        return code

    def fields_at(self, e: int, cols: RolloutColumns | None = None) -> dict[str, Any]:
        """The indexed fields of a parsed entry, as plain values."""
        cols = cols or self.cols
        reward = cols.reward[e]
        return {"line": cols.lineno[e], "reward": None if math.isnan(reward) else reward,
                "task": cols.task[e], "repeat": cols.repeat[e], "turns": cols.turns[e],
                "failure": self.failure_names[cols.failure[e]]}

    def passed(self, reward: float) -> bool:
        return not math.isnan(reward) and reward >= self.threshold


class FailureColumns(Columns):
    def __init__(self) -> None:
        super().__init__()
        self.klass: list[str] = []
        self.task = array("q")  # -1: the line names no task_index
        self.repeat = array("q")  # -1: no rollout_index


class FailureIndex(LineIndex):
    """The ``<stem>.failures.jsonl`` sidecar: one line per rollout that failed for good.

    Any shape is accepted; the class comes from ``class``, else ``error.type:kind``."""

    cols: FailureColumns

    def _new_columns(self) -> FailureColumns:
        return FailureColumns()

    def _reset(self) -> None:
        super()._reset()
        self.classes: Counter = Counter()
        self._names: dict[str, str] = {}

    def _parse_entry(self, cols: FailureColumns, obj: dict | None) -> None:
        record = failure_record(obj)
        name = record["class"]
        name = self._names.setdefault(name, name)
        cols.klass.append(name)
        cols.task.append(-1 if record["task_index"] is None else record["task_index"])
        cols.repeat.append(-1 if record["rollout_index"] is None else record["rollout_index"])
        self.classes[name] += 1


def failure_record(obj: Any) -> dict[str, Any]:
    """What the failures tab shows of one sidecar line, whatever its shape."""
    if not isinstance(obj, dict):
        return {"class": BAD_LINE, "message": "", "task_index": None, "rollout_index": None, "attempts": None}
    error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
    name = obj.get("class")
    if not isinstance(name, str) or not name:
        name = failure_class(error, None) if error else "unknown"
    message = obj.get("message", error.get("message", ""))
    return {"class": name, "message": message if isinstance(message, str) else orjson.dumps(message).decode(),
            "task_index": _int(obj.get("task_index")), "rollout_index": _int(obj.get("rollout_index")),
            "attempts": obj.get("attempts")}
