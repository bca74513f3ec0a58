"""Which lines of the failures sidecar still stand.

``gym collect`` appends a line to ``<stem>.failures.jsonl`` for every rollout that fails,
and ``--resume`` retries those rollouts, so the sidecar is a history: a record whose
(task_index, rollout_index) now has a line in the output was redone; of several records
for one rollout only the last can still stand. Counting every line would count a rollout
that now has a reward as failed, and a rollout retried twice as two failures.
"""

from __future__ import annotations

from collections import Counter

import attrs

from .index import FailureIndex, RolloutIndex

OUTSTANDING = "outstanding"
REDONE = "redone"
RETRIED = "retried"
IN_OUTPUT = "in_output"  # the output has a line for it, itself a failure (counted there)


@attrs.define
class FailureState:
    """The sidecar's parsed lines, each outstanding, redone or retried."""

    outstanding: list[int] = attrs.field(factory=list)  # sidecar entries, in file order
    redone: dict[int, int] = attrs.field(factory=dict)  # sidecar entry -> output line that redid it
    in_output: dict[int, int] = attrs.field(factory=dict)  # sidecar entry -> failed output line for it
    retried: dict[int, int] = attrs.field(factory=dict)  # sidecar entry -> sidecar line of the later record
    classes: Counter = attrs.field(factory=Counter)  # outstanding failures by class
    per_task: Counter = attrs.field(factory=Counter)  # outstanding failures by task_index
    records: int = 0

    def state(self, entry: int) -> tuple[str, int | None]:
        """``(state, line)``: the output line that redid it, or the sidecar line of the later try."""
        if entry in self.redone:
            return REDONE, self.redone[entry]
        if entry in self.in_output:
            return IN_OUTPUT, self.in_output[entry]
        if entry in self.retried:
            return RETRIED, self.retried[entry]
        return OUTSTANDING, None

    def history(self) -> dict[str, int]:
        return {"records": self.records, "outstanding": len(self.outstanding), "redone": len(self.redone),
                "retried": len(self.retried) + len(self.in_output)}


def failure_state(index: RolloutIndex, failures: FailureIndex) -> FailureState:
    """Sort the sidecar's parsed lines against the output's parsed lines. A line without a
    task_index and rollout_index cannot be matched, so it stands."""
    result = FailureState()
    if not failures.exists and failures.identity is None:
        return result
    with failures.lock:
        fcols = failures.cols
        n = fcols.parsed
        keys = list(zip(fcols.task[:n], fcols.repeat[:n]))
        classes = fcols.klass[:n]
        flines = fcols.lineno[:n]
    result.records = n
    last: dict[tuple[int, int], int] = {}
    for entry, key in enumerate(keys):
        if key[0] >= 0 and key[1] >= 0:
            last[key] = entry
    with index.lock:
        cols = index.cols
        redone_by = {}
        for key in last:
            for e in index.task_rows.get(key[0], ()):
                if e < cols.parsed and cols.repeat[e] == key[1]:
                    redone_by[key] = (cols.lineno[e], cols.failure[e] == 0)
                    break
    for entry, key in enumerate(keys):
        if key in redone_by:
            line, scored = redone_by[key]
            (result.redone if scored else result.in_output)[entry] = line
        elif key in last and last[key] != entry:
            result.retried[entry] = flines[last[key]]
        else:
            result.outstanding.append(entry)
            result.classes[classes[entry]] += 1
            if key[0] >= 0:
                result.per_task[key[0]] += 1
    return result
