"""The rollout list and the task table as URL queries: parse, filter, sort, search, paginate.

Every filter lives in the query string, so a view can be shared by its URL. Structured
filters and sorting run over the index's arrays (only parsed rollouts: pages say when
indexing is not finished); full-text search then streams through the candidate lines,
reading only as many as the requested page needs, and remembers where it stopped.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import OrderedDict
from typing import Any, Callable, ClassVar, Mapping

import attrs
import orjson

from .index import RolloutColumns, RolloutIndex

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
ROLLOUT_SORTS = ("line", "reward", "task", "repeat", "turns", "tool_calls", "tokens", "duration")
TASK_SORTS = ("task", "mean", "pass_rate", "n", "spread")
TASK_FLAGS = ("zero_variance", "mixed", "all_pass", "all_fail", "errors")
ERROR_CHOICES = ("", "none", "any")
SEARCH_BATCH = 256


def _parse(args: Mapping[str, str], errors: list[str], name: str, kind: Callable[[str], Any],
           low: float | None = None) -> Any:
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        errors.append(f"ignored {name}={text!r}: not a {'number' if kind is float else 'whole number'}")
        return None
    if kind is float and not math.isfinite(value) or low is not None and value < low:
        errors.append(f"ignored {name}={text!r}: out of range")
        return None
    return value


def _sort(args: Mapping[str, str], errors: list[str], allowed: tuple[str, ...]) -> tuple[str, bool]:
    text = (args.get("sort") or "").strip()
    desc = text.startswith("-")
    name = text.lstrip("-") or allowed[0]
    if name not in allowed:
        errors.append(f"ignored sort={text!r}: sort by one of {', '.join(allowed)}")
        return allowed[0], False
    return name, desc


@attrs.define
class Page:
    """One page of a selection; ``total`` is None while a search has not seen every line."""

    number: int
    per_page: int
    entries: list[int]
    total: int | None
    has_next: bool

    @property
    def pages(self) -> int | None:
        return None if self.total is None else max(1, math.ceil(self.total / self.per_page))

    @property
    def first(self) -> int:
        return (self.number - 1) * self.per_page + 1


def _paging(args: Mapping[str, str], errors: list[str]) -> dict[str, int]:
    return {"page": _parse(args, errors, "page", int, 1) or 1,
            "per_page": min(_parse(args, errors, "per_page", int, 1) or DEFAULT_PER_PAGE, MAX_PER_PAGE)}


@attrs.define
class UrlQuery:
    """What both list pages share: paging, links that keep every parameter, sortable
    headers, and the list of parameters that were ignored."""

    PARAMS: ClassVar[tuple[str, ...]] = ()
    SORTS: ClassVar[tuple[str, ...]] = ()
    DESC_FIRST: ClassVar[tuple[str, ...]] = ()  # columns a first click sorts biggest first

    desc: bool = False
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    errors: list[str] = attrs.field(factory=list)

    def args(self, **changes: Any) -> dict[str, Any]:
        """Non-default parameters (for links), with ``changes`` applied."""
        values = {name: getattr(self, name) for name in self.PARAMS + ("page", "per_page")}
        values["sort"] = ("-" if self.desc else "") + self.sort
        values.update(changes)
        defaults = {"sort": self.SORTS[0], "page": 1, "per_page": DEFAULT_PER_PAGE}
        return {k: v for k, v in values.items() if v not in (None, "") and defaults.get(k) != v}

    def sort_link(self, name: str) -> dict[str, Any]:
        """Clicking a column header: sort by it, flip direction when it already is."""
        if self.sort == name:
            return self.args(sort=("" if self.desc else "-") + name, page=1)
        return self.args(sort=("-" if name in self.DESC_FIRST else "") + name, page=1)


@attrs.define
class RolloutQuery(UrlQuery):
    """The rollout list's URL parameters, validated. Bad values are ignored and reported."""

    reward_min: float | None = None
    reward_max: float | None = None
    task: str = ""
    repeat: int | None = None
    error: str = ""
    tool: str = ""
    turns_min: int | None = None
    turns_max: int | None = None
    q: str = ""
    sort: str = "line"

    FILTERS: ClassVar[tuple[str, ...]] = ("reward_min", "reward_max", "task", "repeat", "error", "tool", "turns_min", "turns_max")
    PARAMS: ClassVar[tuple[str, ...]] = FILTERS + ("q",)
    SORTS: ClassVar[tuple[str, ...]] = ROLLOUT_SORTS
    DESC_FIRST: ClassVar[tuple[str, ...]] = ("reward", "turns", "tokens", "duration", "tool_calls")

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "RolloutQuery":
        errors: list[str] = []
        sort, desc = _sort(args, errors, ROLLOUT_SORTS)
        return cls(
            reward_min=_parse(args, errors, "reward_min", float),
            reward_max=_parse(args, errors, "reward_max", float),
            task=(args.get("task") or "").strip(),
            repeat=_parse(args, errors, "repeat", int, 0),
            error=(args.get("error") or "").strip(),
            tool=(args.get("tool") or "").strip(),
            turns_min=_parse(args, errors, "turns_min", int, 0),
            turns_max=_parse(args, errors, "turns_max", int, 0),
            q=(args.get("q") or "").strip(),
            sort=sort, desc=desc, errors=errors, **_paging(args, errors),
        )

    @property
    def filtered(self) -> bool:
        """True when the selection needs parsed fields (any filter or a sort)."""
        return any(getattr(self, name) not in (None, "") for name in self.FILTERS) or self.sort != "line"

    def selection_key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FILTERS) + (self.sort, self.desc)


class Selector:
    """Runs queries against one index, caching recent selections and search progress."""

    def __init__(self, index: RolloutIndex, cache_size: int = 16):
        self.index = index
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._selections: OrderedDict[tuple, list[int]] = OrderedDict()
        self._searches: OrderedDict[tuple, list] = OrderedDict()

    def _remember(self, cache: OrderedDict, key: tuple, value: Any) -> Any:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        return value

    def tasks_named(self, text: str) -> set[int]:
        """Task indices a ``task=`` filter means: an index, or a task's id/label."""
        found = {t for t, label in list(self.index.task_labels.items()) if label == text}
        if text.lstrip("-").isdigit():
            found.add(int(text))
        return found

    def select(self, query: RolloutQuery, cols: RolloutColumns) -> range | array:
        """The entries matching the structured filters, in the requested order."""
        if not query.filtered:
            return range(cols.lines - 1, -1, -1) if query.desc else range(cols.lines)
        key = (self.index.generation, cols.parsed, query.selection_key())
        with self._lock:
            if key in self._selections:
                return self._selections[key]
        entries: Any = range(cols.parsed)
        if query.reward_min is not None:
            low, reward = query.reward_min, cols.reward
            entries = [e for e in entries if reward[e] >= low]  # NaN (no reward) never matches
        if query.reward_max is not None:
            high, reward = query.reward_max, cols.reward
            entries = [e for e in entries if reward[e] <= high]
        if query.task:
            tasks, task = self.tasks_named(query.task), cols.task
            entries = [e for e in entries if task[e] in tasks]
        if query.repeat is not None:
            repeat, value = cols.repeat, query.repeat
            entries = [e for e in entries if repeat[e] == value]
        if query.error:
            failure = cols.failure
            if query.error == "none":
                entries = [e for e in entries if failure[e] == 0]
            elif query.error == "any":
                entries = [e for e in entries if failure[e] != 0]
            else:
                code = self.index.failure_code(query.error)
                entries = [e for e in entries if failure[e] == code] if code is not None else []
        if query.tool:
            tools, name = cols.tools, query.tool
            entries = [e for e in entries if name in tools[e]]
        if query.turns_min is not None:
            turns, low = cols.turns, query.turns_min
            entries = [e for e in entries if turns[e] >= low]
        if query.turns_max is not None:
            turns, high = cols.turns, query.turns_max
            entries = [e for e in entries if turns[e] <= high]
        entries = list(entries)
        if query.sort != "line":
            column = getattr(cols, query.sort)
            present, missing = [], []
            for e in entries:  # rollouts without the value (no reward, no timing) go last
                (missing if column[e] != column[e] else present).append(e)
            entries = sorted(present, key=column.__getitem__, reverse=query.desc) + missing
        elif query.desc:
            entries.reverse()
        # cached as a flat array: 8 bytes an entry rather than a list of int objects
        return self._remember(self._selections, key, array("q", entries))

    def page(self, query: RolloutQuery, cols: RolloutColumns) -> Page:
        candidates = self.select(query, cols)
        start = (query.page - 1) * query.per_page
        if not query.q:
            total = len(candidates)
            return Page(query.page, query.per_page, list(candidates[start:start + query.per_page]), total,
                        start + query.per_page < total)
        matches, exhausted = self.search(query, cols, candidates, start + query.per_page + 1)
        return Page(query.page, query.per_page, matches[start:start + query.per_page],
                    len(matches) if exhausted else None, len(matches) > start + query.per_page)

    def search(self, query: RolloutQuery, cols: RolloutColumns, candidates: range | array,
               wanted: int) -> tuple[list[int], bool]:
        """Stream candidate lines until ``wanted`` match the text (case-insensitive, also
        as it appears JSON-escaped inside strings); resumes where the last page stopped."""
        key = (self.index.generation, cols.lines if not query.filtered else cols.parsed, query.selection_key(),
               query.q.lower())
        with self._lock:
            state = self._searches.get(key)
            if state is None:
                state = [[], 0, threading.Lock()]  # matches, next candidate, one scanner at a time
        self._remember(self._searches, key, state)
        needles = {query.q.lower().encode(), orjson.dumps(query.q)[1:-1].lower()}
        matches, _, scanning = state
        with scanning:
            pos = state[1]
            while len(matches) < wanted and pos < len(candidates):
                batch = candidates[pos: pos + SEARCH_BATCH]
                for entry, data in zip(batch, self.index.read(batch, cols)):
                    text = data.lower()
                    if any(needle in text for needle in needles):
                        matches.append(entry)
                pos += len(batch)
                state[1] = pos
        return matches, pos >= len(candidates)


@attrs.define
class TaskRow:
    task: int
    label: str | None
    entries: list[int]
    rewards: list[float | None]
    repeats: list[int]
    lines: list[int]
    failures: int  # failed repeats: lines with an error, plus outstanding sidecar records
    sidecar_failures: int  # of which in the failures sidecar (no line in the output)
    mean: float | None
    pass_rate: float | None
    spread: float | None  # max - min reward over the scored repeats
    flags: tuple[str, ...]

    def _extreme(self, pick: Callable[..., Any]) -> int | None:
        scored = [(r, line) for r, line in zip(self.rewards, self.lines) if r is not None]
        return pick(scored, key=lambda pair: pair[0])[1] if scored else None

    @property
    def best_line(self) -> int | None:
        return self._extreme(max)

    @property
    def worst_line(self) -> int | None:
        return self._extreme(min)


def task_rows(index: RolloutIndex, cols: RolloutColumns, sidecar: Mapping[int, int] | None = None) -> list[TaskRow]:
    """One row per task over the parsed rollouts, in task order. ``sidecar``: outstanding
    failures per task_index from the failures sidecar; a task whose repeats all failed has
    no line in the output but still gets a row."""
    out = []
    sidecar = sidecar or {}
    reward, repeat, failure, lineno = cols.reward, cols.repeat, cols.failure, cols.lineno
    with index.lock:
        groups = {task: list(rows) for task, rows in index.task_rows.items()}
        labels = dict(index.task_labels)
    for task in sidecar:
        groups.setdefault(task, [])
    for task, rows in sorted(groups.items()):
        rows.sort(key=repeat.__getitem__)
        rewards = [None if math.isnan(reward[e]) else reward[e] for e in rows]
        scored = [r for r in rewards if r is not None]
        in_file = sum(1 for e in rows if failure[e])
        failures = in_file + sidecar.get(task, 0)
        passed = sum(1 for r in scored if index.passed(r))
        flags = []
        if len(scored) >= 2 and max(scored) == min(scored):
            flags.append("zero_variance")
        if 0 < passed < len(scored):
            flags.append("mixed")
        if scored and passed == len(scored):
            flags.append("all_pass")
        if scored and passed == 0:
            flags.append("all_fail")
        if failures:
            flags.append("errors")
        out.append(TaskRow(
            task=task, label=labels.get(task), entries=rows, rewards=rewards, repeats=[repeat[e] for e in rows],
            lines=[lineno[e] for e in rows], failures=failures, sidecar_failures=sidecar.get(task, 0),
            mean=sum(scored) / len(scored) if scored else None,
            pass_rate=passed / len(scored) if scored else None,
            spread=max(scored) - min(scored) if scored else None, flags=tuple(flags)))
    return out


@attrs.define
class TaskQuery(UrlQuery):
    """The task table's URL parameters."""

    PARAMS: ClassVar[tuple[str, ...]] = ("flag", "task")
    SORTS: ClassVar[tuple[str, ...]] = TASK_SORTS
    DESC_FIRST: ClassVar[tuple[str, ...]] = ("mean", "pass_rate", "n", "spread")

    flag: str = ""
    task: str = ""
    sort: str = "task"

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "TaskQuery":
        errors: list[str] = []
        sort, desc = _sort(args, errors, TASK_SORTS)
        flag = (args.get("flag") or "").strip()
        if flag and flag not in TASK_FLAGS:
            errors.append(f"ignored flag={flag!r}: one of {', '.join(TASK_FLAGS)}")
            flag = ""
        return cls(flag=flag, task=(args.get("task") or "").strip(), sort=sort, desc=desc, errors=errors,
                   **_paging(args, errors))

    def apply(self, rows: list[TaskRow]) -> tuple[list[TaskRow], Page]:
        if self.flag:
            rows = [row for row in rows if self.flag in row.flags]
        if self.task:
            rows = [row for row in rows if str(row.task) == self.task or row.label == self.task]
        if self.sort != "task":
            def key(row: TaskRow) -> Any:
                return len(row.entries) + row.sidecar_failures if self.sort == "n" else getattr(row, self.sort)

            present = [row for row in rows if key(row) is not None]
            missing = [row for row in rows if key(row) is None]
            rows = sorted(present, key=key, reverse=self.desc) + missing
        elif self.desc:
            rows = rows[::-1]
        start = (self.page - 1) * self.per_page
        chosen = rows[start:start + self.per_page]
        return chosen, Page(self.page, self.per_page, [], len(rows), start + self.per_page < len(rows))
