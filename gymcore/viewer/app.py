"""``gym view``: a Flask app over one rollout JSONL and its sidecars.

Only the named file, its ``.failures.jsonl``, ``.metrics.json`` and ``.run.json`` are ever read: no
route takes a path. Everything from the file is model output, so templates autoescape it
and the Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import orjson
from flask import Flask, Response, abort, render_template, request, url_for

from .charts import histogram, int_bins, number, value_bins
from .episode import align, episode, pretty_json, snippets
from .failures import FailureState, failure_state
from .index import FailureIndex, RolloutColumns, RolloutIndex, failure_record, line_fields
from .query import (ERROR_CHOICES, ROLLOUT_SORTS, TASK_FLAGS, Page, RolloutQuery, Selector, TaskQuery,
                    task_rows)
from .. import local_hosts
from .summary import Overview, overview, overview_json

#: How long a request waits for new lines to be indexed before it answers with what is there.
DEFAULT_WAIT_S = 0.25
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


def sidecar(path: Path, suffix: str) -> Path:
    """``run.jsonl`` -> ``run.failures.jsonl`` / ``run.metrics.json``."""
    return path.with_name(path.stem + suffix)


def run_pass_threshold(path: Path) -> float:
    """The ``--pass-threshold`` of the run that wrote ``path`` (its run record, else its
    summary), else the default: what passes in the viewer is what passed in the run."""
    from ..metrics import PASS_THRESHOLD

    for suffix in (".run.json", ".metrics.json"):
        try:
            data = orjson.loads(sidecar(path, suffix).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        value = data.get("pass_threshold") if isinstance(data, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return PASS_THRESHOLD


class Viewer:
    """The app's state: the file's index, the failures sidecar's index, small caches."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self.index = RolloutIndex(self.path)
        self.failures = FailureIndex(sidecar(self.path, ".failures.jsonl"))
        self.metrics_path = sidecar(self.path, ".metrics.json")
        self.index.threshold = run_pass_threshold(self.path)
        self.selector = Selector(self.index)
        self._cache: dict[str, tuple[tuple, Any]] = {}
        self._lock = threading.Lock()

    def refresh(self, wait: float | None) -> None:
        self.index.refresh(wait)
        if self.failures.exists or self.failures.identity is not None:
            self.failures.refresh(wait)

    def cached(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, recomputed only when more lines have been parsed since (in the file or
        in its failures sidecar)."""
        cols, fcols = self.index.cols, self.failures.cols
        key = (self.index.generation, cols.parsed, cols.lines, self.failures.generation, fcols.parsed)
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = fn()
        with self._lock:
            self._cache[name] = (key, value)
        return value

    def collect_summary(self) -> dict[str, Any] | None:
        """The run's ``*.metrics.json`` written by ``gym collect``, when it is there."""
        try:
            if self.metrics_path.stat().st_size > 1 << 20:
                return None
            data = orjson.loads(self.metrics_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def failure_state(self) -> FailureState:
        """The sidecar's records sorted against the file: outstanding, redone, retried."""
        return self.cached("failure_state", lambda: failure_state(self.index, self.failures))

    def repeats(self) -> int | None:
        """The run's ``num_repeats`` as its ``.metrics.json`` says, when it does."""
        value = (self.collect_summary() or {}).get("num_repeats")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def missing(self) -> str | None:
        """What to say when the file is gone (deleted or moved while the viewer runs)."""
        if self.path.is_file():
            return None
        return f"{self.path} is not there any more (deleted or moved?); this page comes back when it is"


def _fmt(value: Any, digits: int = 3) -> str:
    """Numbers for people: 0.875, 1,234, 12.3k; None as an em dash."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) < 0.01:  # two significant digits, no exponent: 0.000055
            return f"{float(f'{value:.2g}'):f}".rstrip("0").rstrip(".")
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _ident(value: Any) -> str:
    """An index or id as it is (no thousands separator); None as an em dash."""
    return "—" if value is None else str(value)


def _reward_class(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "rw-none"
    return "rw-pass" if value >= 1.0 else "rw-fail" if value <= 0.0 else "rw-mid"


def _short(text: Any, length: int = 160) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= length else text[: length - 1] + "…"


def create_app(path: str | Path, *, wait: float | None = DEFAULT_WAIT_S,
               trusted_hosts: frozenset[str] | None = frozenset(local_hosts.LOCAL_HOSTS),
               compare: str | Path | None = None) -> Flask:
    """The viewer app for one file. ``wait``: how long a request waits for indexing
    (``None``: until done, for tests). ``trusted_hosts``: Host names accepted (the
    default refuses DNS-rebinding requests; see :mod:`gymcore.local_hosts`); ``None``
    accepts any. ``compare``: a second run of the same tasks, which adds the A-vs-B pages
    (:mod:`.run_compare`)."""
    app = Flask(__name__)
    app.json.sort_keys = False
    viewer = Viewer(path)
    app.extensions["gym_view"] = viewer
    app.jinja_env.filters.update(fmt=_fmt, ident=_ident, reward_class=_reward_class, short=_short)
    index = viewer.index
    viewer.refresh(wait)
    if compare is not None:
        from .run_compare import RunPair, register

        register(app, RunPair(viewer.path, Path(compare)), wait=wait)

    @app.before_request
    def _refresh() -> Any:
        if not local_hosts.host_is_trusted(request.headers.get("Host"), trusted_hosts):
            abort(400, "this viewer does not answer to that Host")
        if request.endpoint == "static":
            return None
        viewer.refresh(wait)
        gone = viewer.missing()
        if gone is not None:
            return _gone(gone)
        return None

    def _gone(message: str) -> tuple[Any, int]:
        if request.path.startswith("/api/"):
            return app.json.response({"error": message}), 404
        return render_template("error.html", message=message, title="File not found"), 404

    @app.errorhandler(FileNotFoundError)
    def _vanished(error: FileNotFoundError) -> tuple[Any, int]:
        # the file went between the check above and reading it
        return _gone(f"{error.filename or viewer.path} is not there any more (deleted or moved?)")

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"viewer": viewer, "status": index.status(), "has_failures": viewer.failures.exists,
                "page_url": lambda endpoint, args, **changes: url_for(endpoint, **{**args, **changes})}

    @app.errorhandler(404)
    def _not_found(error: Any) -> tuple[str, int]:
        return render_template("error.html", message=getattr(error, "description", "not found")), 404

    def _overview(cols: RolloutColumns) -> Overview:
        repeats = viewer.repeats()
        return viewer.cached(f"overview {repeats}", lambda: overview(index, cols, viewer.failure_state(), repeats))

    @app.get("/")
    def overview_page() -> str:
        cols = index.cols
        view = _overview(cols)
        reward_bins = [(number(a) if a == b else f"{number(a)}–{number(b)}", n,
                        url_for("rollouts", reward_min=repr(a), reward_max=repr(b)))
                       for a, b, n in value_bins(view.rewards)]
        turn_bins = [(str(a) if a == b else f"{a}–{b}", n, url_for("rollouts", turns_min=a, turns_max=b))
                     for a, b, n in int_bins(view.turns)]
        return render_template("overview.html", ov=view, reward_chart=histogram(reward_bins),
                               turns_chart=histogram(turn_bins), summary=viewer.collect_summary(),
                               failure_classes=dict(viewer.failure_state().classes.most_common()))

    @app.get("/rollouts")
    def rollouts() -> str:
        query = RolloutQuery.from_args(request.args)
        if not query.filtered and not query.q:
            index.wait_for_entries(query.page * query.per_page + 1)
        cols = index.cols
        page = viewer.selector.page(query, cols)
        rows = []
        for entry, data in zip(page.entries, index.read(page.entries, cols)):
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            fields = line_fields(obj)
            task = cols.task[entry] if entry < cols.parsed and cols.task[entry] >= 0 else fields.task_index
            prompt, answer = snippets(obj)
            rows.append({"line": cols.lineno[entry], "fields": fields, "task": task,
                         "label": fields.task_label, "prompt": prompt, "answer": answer, "bad": obj is None})
        with index.lock:
            tools = sorted(index.tool_counts)
            failure_names = [name for name in index.failure_names if name]
        return render_template("rollouts.html", query=query, page=page, rows=rows, tools=tools,
                               failure_names=failure_names, error_choices=ERROR_CHOICES, sorts=ROLLOUT_SORTS,
                               partial=query.filtered and cols.parsed < cols.lines)

    def _entry(line: int, in_index: RolloutIndex = index) -> int:
        in_index.wait_for_line(line)
        entry = in_index.entry_for_line(line)
        if entry is None:
            abort(404, f"{in_index.path.name} has no rollout on line {line}")
        return entry

    @app.get("/rollouts/<int:line>")
    def rollout(line: int) -> str:
        cols = index.cols
        entry = _entry(line)
        raw = index.read([entry], cols)[0]
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return render_template("bad_line.html", line=line, error=str(exc), text=raw.decode("utf-8", "replace"))
        ep = episode(obj)
        task = cols.task[entry] if entry < cols.parsed else ep.fields.task_index
        with index.lock:
            rows = list(index.task_rows.get(task, ())) if task is not None else []
        siblings = sorted((cols.repeat[e], cols.lineno[e], index.fields_at(e, cols)["reward"]) for e in rows)
        return render_template("rollout.html", ep=ep, line=line, task=task, siblings=siblings,
                               prev_line=cols.lineno[entry - 1] if entry > 0 else None,
                               next_line=cols.lineno[entry + 1] if entry + 1 < cols.lines else None)

    @app.get("/rollouts/<int:line>.json")
    def rollout_json(line: int) -> Response:
        raw = index.read([_entry(line)])[0]
        return Response(raw, mimetype="application/json")

    @app.get("/compare")
    def compare() -> str:
        picks = [int(v) for v in request.args.getlist("pick") if v.strip().isdigit()]
        a = request.args.get("a", type=int) or (picks[0] if picks else None)
        b = request.args.get("b", type=int) or (picks[1] if len(picks) > 1 else None)
        # b_run=B: line b is in the second run (gym view A --compare B), line a in A
        other = app.extensions.get("gym_view_b") if request.args.get("b_run") else None
        if request.args.get("b_run") and other is None:
            abort(404, "there is no second run: start `gym view A.jsonl --compare B.jsonl`")
        if a is None or b is None:
            return render_template("compare.html", a=a, b=b, sides=None, b_run=other)
        b_index = other.index if other is not None else index
        sides = []
        for line, in_index in ((a, index), (b, b_index)):
            obj = in_index.load(_entry(line, in_index))
            sides.append(episode(obj if obj is not None else {}))
        rows, first = align(sides[0].steps, sides[1].steps)
        input_same = [i.signature() for i in sides[0].input] == [i.signature() for i in sides[1].input]
        names = list(dict.fromkeys([n for n, _ in sides[0].metrics] + [n for n, _ in sides[1].metrics]))
        metrics_a, metrics_b = dict(sides[0].metrics), dict(sides[1].metrics)
        metrics = [(n, metrics_a.get(n), metrics_b.get(n), metrics_a.get(n) != metrics_b.get(n)) for n in names]
        repeats = None
        if other is not None:
            from .run_compare import repeats_of

            repeats = (repeats_of(index, sides[0].fields.task_index), repeats_of(b_index, sides[1].fields.task_index))
        return render_template("compare.html", a=a, b=b, sides=sides, rows=rows, first=first,
                               input_same=input_same, metrics=metrics, b_run=other, repeats=repeats)

    @app.get("/tasks")
    def tasks() -> str:
        query = TaskQuery.from_args(request.args)
        cols = index.cols
        all_rows = viewer.cached("tasks", lambda: task_rows(index, cols, viewer.failure_state().per_task))
        rows, page = query.apply(all_rows)
        return render_template("tasks.html", query=query, rows=rows, page=page, flags=TASK_FLAGS,
                               threshold=index.threshold,
                               partial=cols.parsed < cols.lines)

    @app.get("/failures")
    def failures() -> str:
        sidecar_index = viewer.failures
        if not sidecar_index.exists:
            abort(404, f"no failures sidecar ({sidecar_index.path.name}) next to {index.path.name}")
        state = viewer.failure_state()
        cols = sidecar_index.cols
        klass = (request.args.get("class") or "").strip()
        task = request.args.get("task", type=int)
        show_all = request.args.get("show") == "all"
        page_no = max(request.args.get("page", 1, type=int) or 1, 1)
        shown = range(state.records) if show_all else state.outstanding
        entries = [e for e in shown if e < cols.parsed  # the sidecar may have been rewritten since
                   and (not klass or cols.klass[e] == klass) and (task is None or cols.task[e] == task)]
        start = (page_no - 1) * 50
        chosen = entries[start:start + 50]
        records = []
        for entry, data in zip(chosen, sidecar_index.read(chosen, cols)):
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = data.decode("utf-8", "replace")
            kind, where = state.state(entry)
            records.append({"line": cols.lineno[entry], **failure_record(obj), "raw": pretty_json(obj),
                            "state": kind, "where": where})
        page = Page(page_no, 50, chosen, len(entries), start + 50 < len(entries))
        classes = Counter(cols.klass[:min(state.records, cols.parsed)]) if show_all else state.classes
        args = {k: v for k, v in (("class", klass), ("task", task), ("show", "all" if show_all else ""))
                if v not in (None, "")}
        return render_template("failures.html", records=records, page=page, klass=klass, show_all=show_all,
                               args=args, classes=classes.most_common(), history=state.history(),
                               in_file=index.totals.failures.total(), status_f=sidecar_index.status())

    @app.get("/api/status")
    def api_status() -> Response:
        data = index.status()
        data["failures"] = viewer.failures.status() if viewer.failures.exists else None
        return app.json.response(data)

    @app.get("/api/overview")
    def api_overview() -> Response:
        cols = index.cols
        return app.json.response(overview_json(_overview(cols)))

    return app


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 7860, *,
          echo: Callable[[str], None] = print, compare: str | Path | None = None) -> None:
    """Run the viewer in werkzeug's threaded server until interrupted (of two runs, A
    against B, when ``compare`` names the second)."""
    from werkzeug.serving import make_server

    app = create_app(path, trusted_hosts=local_hosts.trusted_hosts(host), compare=compare)
    server = make_server(host, port, app, threaded=True)
    shown = f"[{host}]" if ":" in host else host
    if compare is None:
        echo(f"gym view: serving {Path(path)} at http://{shown}:{server.port}/  (Ctrl-C to stop)")
    else:
        echo(f"gym view: serving {Path(path)} (A) against {Path(compare)} (B) at "
             f"http://{shown}:{server.port}/ab  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
