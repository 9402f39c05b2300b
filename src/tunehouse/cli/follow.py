"""`fine_tuning.jobs.follow`: watch a job until it ends — status, step progress with ETA, loss sparklines, events.

On a terminal it is a rich Live view; piped (logs, CI) it prints each event once as a plain line; with --json it
waits quietly and prints the final job object. It polls the job, then its events (so the events seen are at
least as new as the status), and ends when the job reaches succeeded, failed, cancelled or paused. Exit code 0
only for succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tunehouse.cli.app import console, err_console
from tunehouse.cli.connection import Conn, fail, print_json, raw_json
from tunehouse.store.job_states import FINAL, JobStatus

S = JobStatus
ENDED = FINAL | {S.PAUSED}  # following stops here: a paused job waits for the user
_BLOCKS = "▁▂▃▄▅▆▇█"
_STATUS_STYLE = {S.SUCCEEDED: "green", S.FAILED: "red", S.CANCELLED: "yellow", S.PAUSED: "yellow", S.RUNNING: "cyan"}
# A server restart mid-job is normal (the job survives it); only give up after this long without an answer.
RECONNECT_SECONDS = 30.0


def sparkline(values: list[float], width: int = 32) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return _BLOCKS[3] * len(vals)
    return "".join(_BLOCKS[round((v - lo) / (hi - lo) * (len(_BLOCKS) - 1))] for v in vals)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class FollowState:
    """Everything the view shows, folded from the job object and its events as they arrive."""

    job: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)  # chronological, the latest few hundred
    seen: set[str] = field(default_factory=set)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    step: int = 0
    total_steps: int | None = None
    accuracy: float | None = None
    rewards_accuracy: float | None = None  # DPO: share of pairs whose implicit reward prefers the preferred output
    rate: tuple[int, int] | None = None  # (created_at, step) of the first metrics event, for the ETA
    last_metric_at: int | None = None
    # (step, full validation loss) of the best checkpoint so far: validation-driven auto's events carry it.
    best: tuple[int, float] | None = None

    def add_events(self, new: list[dict]) -> None:
        for event in new:
            self.seen.add(event["id"])
            self.events.append(event)
            data = event.get("data") or {}
            if isinstance(data.get("best_step"), int) and data.get("best_valid_loss") is not None:
                self.best = (data["best_step"], float(data["best_valid_loss"]))
            if event.get("type") == "metrics" and isinstance(data.get("step"), int):
                self.step = max(self.step, data["step"])
                self.total_steps = data.get("total_steps") or self.total_steps
                if data.get("train_loss") is not None:
                    self.train_loss.append(float(data["train_loss"]))
                if data.get("valid_loss") is not None:
                    self.valid_loss.append(float(data["valid_loss"]))
                if data.get("train_mean_token_accuracy") is not None:
                    self.accuracy = float(data["train_mean_token_accuracy"])
                if data.get("train_rewards_accuracy") is not None:
                    self.rewards_accuracy = float(data["train_rewards_accuracy"])
                if self.rate is None:
                    self.rate = (event.get("created_at") or 0, data["step"])
                self.last_metric_at = event.get("created_at")
        del self.events[:-300]

    def eta_seconds(self, now: float) -> float | None:
        """From the job's estimated_finish when the server gives one, else from the observed step rate."""
        status = self.job.get("status")
        if status in ENDED or not self.total_steps:
            return None
        if self.job.get("estimated_finish"):
            return max(0.0, self.job["estimated_finish"] - now)
        if self.rate is None or self.last_metric_at is None:
            return None
        (t0, s0), t1 = self.rate, self.last_metric_at
        if t1 <= t0 or self.step <= s0:
            return None
        per_step = (t1 - t0) / (self.step - s0)
        return max(0.0, (self.total_steps - self.step) * per_step - (now - t1))


def fetch_new_events(client, job_id: str, seen: set[str], max_pages: int) -> list[dict]:
    """Events not seen yet, oldest first; pages back (the API lists newest first) until a seen one."""
    new: list[dict] = []
    after = None
    for _ in range(max_pages):
        query = {"limit": 100} | ({"after": after} if after else {})
        page = raw_json(client.fine_tuning.jobs.with_raw_response.list_events(job_id, **query))
        data = page.get("data") or []
        fresh = [e for e in data if e["id"] not in seen]
        new.extend(fresh)
        if len(fresh) < len(data) or not page.get("has_more") or not data:
            break
        after = data[-1]["id"]
    return list(reversed(new))


def render(state: FollowState, now: float) -> Group:
    job = state.job
    status = job.get("status", "?")
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text(job.get("id", ""), style="bold"),
        Text(status, style=f"bold {_STATUS_STYLE.get(status, 'white')}"),
        Text(f"model {job.get('model', '')}"),
        Text(f"-> {job['fine_tuned_model']}" if job.get("fine_tuned_model") else "", style="green"),
    )
    parts: list = [head]
    if state.total_steps:
        eta = state.eta_seconds(now)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=state.total_steps, completed=state.step, width=40),
            Text(f"step {state.step}/{state.total_steps}  {100 * state.step / state.total_steps:.0f}%"),
            Text(f"ETA {fmt_duration(eta)}" if eta is not None else "", style="cyan"),
        )
        parts.append(bar)
    if state.train_loss:
        loss = Text(f"train loss {state.train_loss[-1]:.4f} ")
        loss.append(sparkline(state.train_loss), style="magenta")
        if state.valid_loss:
            loss.append(f"   valid loss {state.valid_loss[-1]:.4f} ")
            loss.append(sparkline(state.valid_loss, 16), style="blue")
        if state.accuracy is not None:
            loss.append(f"   token acc {state.accuracy:.3f}")
        if state.rewards_accuracy is not None:
            loss.append(f"   rewards acc {state.rewards_accuracy:.3f}")
        if state.best is not None:
            loss.append(f"   best: step {state.best[0]} (valid loss {state.best[1]:.4f})", style="green")
        parts.append(loss)
    events = Table.grid(padding=(0, 1))
    for event in state.events[-8:]:
        style = {"warn": "yellow", "error": "red"}.get(event.get("level", ""), "dim")
        events.add_row(Text(_clock(event.get("created_at")), style="dim"), Text(event.get("message", ""), style=style))
    parts.append(events)
    return Group(*parts)


def _clock(ts) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if isinstance(ts, int | float) else ""


def _poll(client, state: FollowState, max_pages: int) -> list[dict]:
    job = raw_json(client.fine_tuning.jobs.with_raw_response.retrieve(state.job["id"]))
    new = fetch_new_events(client, job["id"], state.seen, max_pages)
    state.job = job
    state.add_events(new)
    return new


def follow_job(conn: Conn, job_id: str, interval: float = 1.0) -> int:
    """Follow until the job ends; returns the exit code (0 only if it succeeded)."""
    import openai

    client = conn.client()
    state = FollowState()
    with conn.errors():  # an unknown id or no server: one line, exit 1, before any view is drawn
        state.job = raw_json(client.fine_tuning.jobs.with_raw_response.retrieve(job_id))
    live_view = console.is_terminal and not conn.as_json
    plain = not live_view and not conn.as_json
    live = Live(render(state, time.time()), console=console, refresh_per_second=4) if live_view else None
    settled = False
    last_ok, max_pages = time.monotonic(), 50  # the first poll reads the whole history (up to 5000 events)
    try:
        if live:
            live.start()
        while True:
            try:
                with conn.errors():
                    try:
                        new = _poll(client, state, max_pages)
                    except openai.APIConnectionError:
                        if time.monotonic() - last_ok > RECONNECT_SECONDS:
                            raise
                        new = None
            finally:
                if live:
                    live.update(render(state, time.time()))
            if new is not None:
                last_ok, max_pages = time.monotonic(), 5
                if plain:
                    for event in new:
                        line = f"[{_clock(event.get('created_at'))}] {event.get('message', '')}"
                        console.print(escape(line), soft_wrap=True, highlight=False)
            if state.job.get("status") in ENDED:
                if settled:
                    break
                # One more poll: the worker may write its last events just after the final status.
                settled = True
                time.sleep(min(interval, 0.5))
                continue
            time.sleep(interval)
    except KeyboardInterrupt:
        if live:
            live.stop()
        err_console.print(f"Stopped following {job_id}; the job keeps running on the server.")
        return 130
    finally:
        if live:
            live.stop()
    return _finish(conn, state)


def _finish(conn: Conn, state: FollowState) -> int:
    job = state.job
    status = job.get("status")
    if conn.as_json:
        print_json(job)
        return 0 if status == S.SUCCEEDED else 1
    if status == S.SUCCEEDED:
        tokens = job.get("trained_tokens")
        extra = f" ({tokens} trained tokens)" if tokens else ""
        console.print(f"[green]Job {job['id']} succeeded[/]: {escape(str(job.get('fine_tuned_model')))}{extra}")
        if state.best is not None:
            console.print(f"  the fine-tuned model is the checkpoint of step {state.best[0]}: best validation "
                          f"loss {state.best[1]:.4f}")
        return 0
    if status == S.FAILED:
        error = job.get("error") or {}
        detail = f"{error.get('message', 'no details')} (code: {error.get('code')})"
        fail(f"job {job['id']} failed: {detail}")
    if status == S.PAUSED:
        err_console.print(
            f"Job {job['id']} is paused at step {state.step}; continue it with "
            f"`tunehouse fine_tuning.jobs.resume -i {job['id']}`"
        )
        return 1
    err_console.print(f"Job {job['id']} was {status}.")
    return 1
