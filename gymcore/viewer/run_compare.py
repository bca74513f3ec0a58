"""``gym view A.jsonl --compare B.jsonl``: the pages that put two runs of the same tasks side by side.

The figures are :func:`gymcore.compare.compare_runs`'s, the same computation as ``gym
compare --json``, run in a background thread once per change of either file (or of its
failures sidecar), so a page never waits for it longer than the viewer's ``wait``: while
it runs, pages show the last result (or say it is being computed) and refresh themselves.
A flipped task's rollouts open in the viewer's step-by-step compare, one from each file.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import attrs
from flask import Flask, Response, abort, redirect, render_template, request, url_for

from ..compare import compare_runs, verdict
from ..errors import GymError
from ..outcomes import RunOutcomes, read_run
from .index import RolloutIndex

#: Rows of a task table page.
PER_PAGE = 100
#: Distinct (A, B) points drawn exactly in the scatter; more are binned on a grid.
MAX_EXACT_POINTS = 400
SCATTER_GRID = 20


def _signature(paths: list[Path]) -> tuple:
    """What tells a changed run: inode, size and mtime of each file (None when missing)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@attrs.define
class TaskPair:
    """One task of both runs, for the table and the scatter (None: no scored repeat on that side)."""

    key: str
    label: str
    task_a: int
    task_b: int
    mean_a: float | None
    mean_b: float | None
    scored_a: int
    scored_b: int
    failed_a: int
    failed_b: int
    flip: str | None  # "regression" / "improvement", as compare_runs lists it

    @property
    def difference(self) -> float | None:
        return None if self.mean_a is None or self.mean_b is None else self.mean_b - self.mean_a


def task_pairs(a: RunOutcomes, b: RunOutcomes, result: dict[str, Any]) -> list[TaskPair]:
    """Every task the two runs share, in A's order, marked with compare_runs' flips."""
    flips = {flip["key"]: flip["flip"] for flip in result["flips"]}
    out = []
    for key, ta in a.tasks.items():
        tb = b.tasks.get(key)
        if tb is None:
            continue
        out.append(TaskPair(key, ta.label, ta.task_index, tb.task_index, ta.mean_reward, tb.mean_reward,
                            len(ta.rewards), len(tb.rewards), ta.failed, tb.failed, flips.get(key)))
    return out


@attrs.define
class Point:
    """One drawn circle of the scatter: the tasks of one cell."""

    cell: str
    x: float
    y: float
    r: float
    count: int
    mean_a: float
    mean_b: float
    side: str  # "better" (B above the diagonal), "worse", "same"


@attrs.define
class Scatter:
    """Per-task mean reward of A (x) against B (y), one circle per cell (area ~ task count).

    With few distinct points (rewards of 0, 0.5 and 1) every cell is an exact point; with
    many, points are binned on a ``SCATTER_GRID`` x ``SCATTER_GRID`` grid."""

    low: float
    high: float
    exact: bool
    points: list[Point]
    size: int = 320
    pad: int = 46

    def cell_of(self, pair: TaskPair) -> str | None:
        if pair.mean_a is None or pair.mean_b is None:
            return None
        if self.exact:
            return f"{pair.mean_a!r},{pair.mean_b!r}"
        return f"{self._bin(pair.mean_a)},{self._bin(pair.mean_b)}"

    def _bin(self, value: float) -> int:
        width = (self.high - self.low) / SCATTER_GRID or 1.0
        return min(int((value - self.low) / width), SCATTER_GRID - 1)

    def px(self, value: float) -> float:
        return round(self.pad + (value - self.low) / ((self.high - self.low) or 1.0) * (self.size - 2 * self.pad), 1)

    def py(self, value: float) -> float:
        return round(self.size - self.px(value), 1)

    @property
    def ticks(self) -> list[tuple[float, str]]:
        return [(self.low + (self.high - self.low) * i / 4, f"{self.low + (self.high - self.low) * i / 4:.3g}")
                for i in range(5)]


def scatter(pairs: list[TaskPair]) -> Scatter:
    scored = [p for p in pairs if p.mean_a is not None and p.mean_b is not None]
    values = [v for p in scored for v in (p.mean_a, p.mean_b)]
    low, high = min(values + [0.0]), max(values + [1.0])
    exact = len({(p.mean_a, p.mean_b) for p in scored}) <= MAX_EXACT_POINTS
    chart = Scatter(low, high, exact, [])
    cells: dict[str, list[TaskPair]] = {}
    for pair in scored:
        cells.setdefault(chart.cell_of(pair), []).append(pair)
    biggest = max((len(group) for group in cells.values()), default=1)
    for cell, group in cells.items():
        mean_a = sum(p.mean_a for p in group) / len(group)
        mean_b = sum(p.mean_b for p in group) / len(group)
        side = "better" if mean_b > mean_a else "worse" if mean_b < mean_a else "same"
        radius = round(3 + 11 * math.sqrt(len(group) / biggest), 1)
        chart.points.append(Point(cell, chart.px(mean_a), chart.py(mean_b), radius, len(group), mean_a, mean_b, side))
    chart.points.sort(key=lambda point: -point.count)  # small circles on top of big ones
    return chart


@attrs.define
class Outcome:
    """One finished computation: the comparison (or why there is none) and its task table."""

    signature: tuple
    result: dict[str, Any] | None = None
    error: str | None = None
    pairs: list[TaskPair] = attrs.field(factory=list)
    chart: Scatter | None = None


@attrs.define
class State:
    """What a page shows: the latest outcome (maybe of older files) and whether a newer one is coming."""

    outcome: Outcome | None
    computing: bool

    @property
    def stale(self) -> bool:
        return self.computing and self.outcome is not None


class Comparison:
    """compare_runs() of A and B, computed in a background thread once per change of the
    files (output and failures sidecar of each), separately with and without ``intersect``."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = a, b
        self.files = [a, a.with_name(a.stem + ".failures.jsonl"), b, b.with_name(b.stem + ".failures.jsonl")]
        self.lock = threading.Lock()
        self.done: dict[bool, Outcome] = {}
        self.workers: dict[bool, threading.Thread] = {}
        self.computations = 0  # how many times compare_runs ran (once per change)

    def get(self, intersect: bool, wait: float | None) -> State:
        """The comparison as of now, starting its computation when the files changed since
        the last one; waits up to ``wait`` seconds for it (``None``: until done)."""
        signature = _signature(self.files)
        with self.lock:
            worker = self.workers.get(intersect)
            current = self.done.get(intersect)
            if (current is None or current.signature != signature) and (worker is None or not worker.is_alive()):
                worker = threading.Thread(target=self._compute, args=(intersect, signature), daemon=True,
                                          name=f"compare {self.a.name} {self.b.name}")
                self.workers[intersect] = worker
                worker.start()
        if worker is not None and (wait is None or wait > 0):
            worker.join(wait)
        with self.lock:
            outcome = self.done.get(intersect)
            busy = worker is not None and worker.is_alive()
        return State(outcome, busy or outcome is None or outcome.signature != _signature(self.files))

    def _compute(self, intersect: bool, signature: tuple) -> None:
        outcome = Outcome(signature)
        try:
            run_a, run_b = read_run(self.a), read_run(self.b)
            outcome.result = compare_runs(run_a, run_b, intersect=intersect)
            outcome.pairs = task_pairs(run_a, run_b, outcome.result)
            outcome.chart = scatter(outcome.pairs)
        except GymError as exc:
            outcome.error = str(exc)
        except Exception as exc:  # never let a bad file kill the page: say what happened
            outcome.error = f"comparing the runs failed: {exc!r}"
        with self.lock:
            self.computations += 1
            self.done[intersect] = outcome


def repeats_of(index: RolloutIndex, task: int | None) -> list[tuple[int, int, float | None]]:
    """(repeat, line, reward) of each indexed rollout of a task, by repeat."""
    if task is None:
        return []
    cols = index.cols
    with index.lock:
        rows = list(index.task_rows.get(task, ()))
    return sorted((cols.repeat[e], cols.lineno[e], index.fields_at(e, cols)["reward"]) for e in rows)


def pick_pair(repeats_a: list, repeats_b: list) -> tuple[int | None, int | None]:
    """The two lines that show a task's difference: A's best against B's worst when B is
    worse on it, A's worst against B's best when B is better, first repeats otherwise."""
    def mean(rows: list) -> float | None:
        values = [reward for _, _, reward in rows if reward is not None]
        return sum(values) / len(values) if values else None

    def extreme(rows: list, top: bool) -> int | None:
        scored = [(reward, repeat, line) for repeat, line, reward in rows if reward is not None]
        return min(scored, key=lambda r: (-r[0] if top else r[0], r[1]))[2] if scored else None

    a, b = mean(repeats_a), mean(repeats_b)
    if a is None or b is None or a == b:
        return (repeats_a[0][1] if repeats_a else None), (repeats_b[0][1] if repeats_b else None)
    return extreme(repeats_a, b < a), extreme(repeats_b, b > a)


TABLE_SORTS = {"difference": lambda p: (p.difference is None, p.difference or 0.0, p.task_a),
               "task": lambda p: p.task_a,
               "a": lambda p: (p.mean_a is None, p.mean_a or 0.0, p.task_a),
               "b": lambda p: (p.mean_b is None, p.mean_b or 0.0, p.task_a)}
SHOW = {"all": lambda p: True, "flips": lambda p: p.flip is not None,
        "regressions": lambda p: p.flip == "regression", "improvements": lambda p: p.flip == "improvement",
        "changed": lambda p: p.difference not in (None, 0.0), "left_out": lambda p: p.difference is None}


class RunPair:
    """The second run of ``gym view A --compare B``: its index (for rollouts and repeats) and the comparison."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a_path = a
        self.b_path = Path(b).resolve()
        self.index = RolloutIndex(self.b_path)
        self.comparison = Comparison(a, self.b_path)

    def refresh(self, wait: float | None) -> None:
        self.index.refresh(wait)


def register(app: Flask, pair: RunPair, *, wait: float | None) -> None:
    """Add the A-vs-B pages to the viewer app of A."""
    app.extensions["gym_view_b"] = pair
    pair.refresh(wait)

    @app.before_request
    def _refresh_b() -> None:
        if request.endpoint and (request.endpoint.startswith("ab_") or request.args.get("b_run")):
            pair.refresh(wait)

    @app.context_processor
    def _ab_globals() -> dict[str, Any]:
        return {"ab": pair}

    def _state() -> tuple[State, bool, dict[str, Any]]:
        intersect = request.args.get("intersect") in ("1", "true", "yes")
        state = pair.comparison.get(intersect, wait)
        return state, intersect, ({"intersect": 1} if intersect else {})

    @app.get("/ab")
    def ab_overview() -> tuple[str, int]:
        state, intersect, args = _state()
        page_no = max(request.args.get("page", 1, type=int) or 1, 1)
        outcome = state.outcome
        flips, page, keys = [], None, []
        if outcome is not None and outcome.result is not None:
            all_flips = outcome.result["flips"]
            flips = all_flips[(page_no - 1) * 50: page_no * 50]
            page = _page(page_no, 50, len(all_flips))
            keys = ["mean_reward"] + [key for key in outcome.result["a"]
                                      if key.startswith("pass@") and key in outcome.result["b"]]
        html = render_template("ab.html", state=state, outcome=outcome, flips=flips, page=page, args=args,
                               intersect=intersect, verdict=verdict, figure_keys=keys)
        return html, 200 if outcome is not None else 202

    @app.get("/ab/tasks")
    def ab_tasks() -> tuple[str, int]:
        state, intersect, args = _state()
        outcome = state.outcome
        show = request.args.get("show", "all")
        show = show if show in SHOW else "all"
        sort = request.args.get("sort", "difference")
        desc = sort.startswith("-")
        sort = sort.lstrip("-") if sort.lstrip("-") in TABLE_SORTS else "difference"
        cell = request.args.get("cell") or None
        page_no = max(request.args.get("page", 1, type=int) or 1, 1)
        rows, page = [], None
        if outcome is not None and outcome.result is not None:
            chosen = [p for p in outcome.pairs if SHOW[show](p) and (cell is None or outcome.chart.cell_of(p) == cell)]
            chosen.sort(key=TABLE_SORTS[sort], reverse=desc)
            rows = chosen[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]
            page = _page(page_no, PER_PAGE, len(chosen))
        query = {**args, **({"show": show} if show != "all" else {}), **({"cell": cell} if cell else {}),
                 **({"sort": ("-" if desc else "") + sort} if (sort, desc) != ("difference", False) else {})}
        return render_template("ab_tasks.html", state=state, outcome=outcome, rows=rows, page=page, args=args,
                               query=query, show=show, shows=list(SHOW), sort=sort, desc=desc, cell=cell,
                               intersect=intersect), 200 if outcome is not None else 202

    @app.get("/ab/pair")
    def ab_pair() -> Response:
        """A task's rollouts side by side: A's and B's repeat that show its difference."""
        task_a, task_b = request.args.get("a_task", type=int), request.args.get("b_task", type=int)
        if task_a is None or task_b is None:
            abort(404, "name the task in each run: /ab/pair?a_task=N&b_task=M")
        a_index = app.extensions["gym_view"].index
        a_index.refresh(None if wait is None else max(wait, 2.0))  # repeats need pass 2 of both files
        pair.index.refresh(None if wait is None else max(wait, 2.0))
        line_a, line_b = pick_pair(repeats_of(a_index, task_a), repeats_of(pair.index, task_b))
        if line_a is None or line_b is None:
            missing = pair.a_path.name if line_a is None else pair.b_path.name
            abort(404, f"{missing} has no indexed rollout of task {task_a if line_a is None else task_b} "
                       "(still indexing? reload in a moment)")
        return redirect(url_for("compare", a=line_a, b=line_b, b_run="B"))

    @app.get("/ab/b/rollouts/<int:line>.json")
    def ab_b_rollout_json(line: int) -> Response:
        pair.index.wait_for_line(line)
        entry = pair.index.entry_for_line(line)
        if entry is None:
            abort(404, f"{pair.b_path.name} has no rollout on line {line}")
        return Response(pair.index.read([entry])[0], mimetype="application/json")

    @app.get("/api/ab")
    def ab_api() -> tuple[Response, int]:
        """Exactly ``gym compare A B --json`` (202 while it is computed, 409 when the runs cannot be compared)."""
        state, _intersect, _args = _state()
        outcome = state.outcome
        if outcome is None:
            return app.json.response({"computing": True}), 202
        if outcome.error is not None:
            return app.json.response({"error": outcome.error}), 409
        response = app.json.response(outcome.result)
        if state.stale:
            response.headers["X-Gym-Stale"] = "computing a newer comparison"
        return response, 200


def _page(number: int, per_page: int, total: int) -> Any:
    from .query import Page

    return Page(number, per_page, [], total, number * per_page < total)
