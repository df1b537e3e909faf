"""Jobs that wait for other jobs: where a new job with parents starts, shared by both
stores (the SQLite ops and the PostgreSQL steps).

A job enqueued with ``depends_on`` starts ``waiting`` on the parents that have not
finished, one ``onewriter_job_deps`` row each, and a count of them (``waiting_on``).
Housekeeping (every claim, and ``maintain()``) takes the rows whose parent has finished
and counts the child down: ready at zero, or cancelled at once if that parent ended dead
or cancelled and the child asked for that. Counting down is an update of the child's
row, so on PostgreSQL two instances resolving two parents of one child at once cannot
both miss the last one; a cancelled child is itself a finished parent at the next step,
so a cancellation runs down the whole tree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .model import FINISHED

FAILED = frozenset({"dead", "cancelled"})
#: Dependencies resolved per statement, and statements per housekeeping step at most.
RESOLVE_STEP = 500
RESOLVE_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class Placement:
    """How a new job with parents starts: its state, how many parents it waits on
    (``open``, each a dependency row), and the error when it starts cancelled."""

    state: str
    open: list[int]
    error: str | None


def place(parents: list[int], states: dict[int, str], on_parent_failure: str) -> Placement:
    """Where a job whose ``parents`` are in ``states`` starts (a parent missing from
    ``states`` was pruned: it was done)."""
    if on_parent_failure == "cancel":
        for parent in parents:
            if states.get(parent) in FAILED:
                return Placement("cancelled", [], f"parent job {parent} ended {states[parent]}")
    waiting = [p for p in parents if p in states and states[p] not in FINISHED]
    return Placement("waiting" if waiting else "ready", waiting, None)


def job_values(placement: Placement | None) -> dict[str, Any]:
    """The values ``ENQUEUE`` binds beyond the job's options."""
    if placement is None:
        return {"state": "ready", "waiting_on": 0, "error": None}
    return {"state": placement.state, "waiting_on": len(placement.open), "error": placement.error}


def batch_parents(group_ids: list[list[int]], outcomes: list[list[Any]]) -> str:
    """The parents of a batch's callback: every job the batch enqueued (or found by its
    unique key), as the JSON array an encoded job carries."""
    ids = {i for ids in group_ids for i in ids} | {int(o[0]) for o in outcomes}
    return json.dumps(sorted(ids))


def parents_of(job: dict[str, Any]) -> list[int]:
    """The parent ids of an encoded job (a JSON array, or none)."""
    text = job.get("depends_on")
    return [] if text is None else list(json.loads(text))
