"""The fine-tuning job state machine: every status a job can have and the one table of allowed transitions.

    validating_files -> queued -> running -> succeeded | failed | cancelled
    paused (from queued or running) -> queued (resume)

Pure (no SQL, no sqlite): every status change in the store is an UPDATE guarded by `status IN (sources)` built
from this table (`status_guard`), so a transition the table does not allow can never be written, whoever races
whom. Clients (the CLI's follow) read FINAL from here instead of spelling the statuses again.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobStatus
# from -> the statuses it may change to. A worker's finish may find its job back in `queued` (resumed by the
# user while the worker was still training it, see leases.control_state), hence queued -> succeeded.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.VALIDATING_FILES: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.QUEUED, S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.PAUSED: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
FINAL: frozenset[JobStatus] = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


class TransitionError(ValueError):
    """A status change the table does not allow: a programming error in the store, never the user's."""


def sources(to: JobStatus, only_from: tuple[JobStatus, ...] | None = None) -> tuple[JobStatus, ...]:
    """The statuses from which `to` may be entered (restricted to `only_from`, each of which must be allowed)."""
    allowed = tuple(s for s in JobStatus if to in TRANSITIONS[s])
    if only_from is None:
        return allowed
    bad = [s for s in only_from if s not in allowed]
    if bad:
        raise TransitionError(f"job status {', '.join(bad)} -> {to} is not an allowed transition")
    return only_from


def status_guard(to: JobStatus, only_from: tuple[JobStatus, ...] | None = None) -> tuple[str, list[str]]:
    """SQL condition and parameters that let an UPDATE of `jobs` set status `to` only from an allowed status."""
    allowed = sources(to, only_from)
    return f"status IN ({', '.join('?' * len(allowed))})", [str(s) for s in allowed]
