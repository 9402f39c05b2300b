"""Continuous batching shared by the engines: slots with cached prefixes, sequences, and the decode scheduler.

A request's generation loop (generate.py) runs in its own thread and talks to a `Sequence`: `prefill()` and
`step(token)` submit tokens and block until the engine's scheduler thread has run the decode batch holding
them. The scheduler collects what every open sequence submitted, waits a few milliseconds for the sequences
that are still sampling (so one decode serves them all), and hands one group to the engine's `run_batch`.
A group is the sequences of one adapter: llama.cpp applies LoRA to a whole context, so sequences of different
adapters cannot share a decode; groups take turns (round-robin), so one busy adapter cannot starve another.

Slots bound how many sequences decode at once (llama.cpp sequence ids, the KV cache's streams). A released
slot keeps what its KV cache holds; the next sequence of the same adapter whose prompt starts with those
tokens takes the slot with the longest common prefix and only computes the rest (prefix reuse).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("tunehouse.inference")
GATHER_S = 0.01  # how long a ready batch waits for the group's other sequences (one decode step is ~15-60 ms)
IDLE_EXIT_S = 30.0  # the scheduler thread ends after this long with no sequence open and nothing to do
REUSE_UNIT = 32  # prompt tokens: a cached prefix shorter than this does not outweigh slot adjacency


@dataclass
class Slot:
    index: int
    tokens: list[int] = field(default_factory=list)  # what its KV cache holds, in position order
    adapter: str | None = None  # the adapter that computed that KV (a prefix only matches under the same one)
    busy: bool = False


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotPool:
    """Fixed slots; acquire() blocks while all are busy and prefers the free slot sharing the longest prefix."""

    def __init__(self, n: int):
        self.slots = [Slot(i) for i in range(max(1, n))]
        self._cv = threading.Condition()

    @property
    def busy(self) -> int:
        with self._cv:
            return sum(s.busy for s in self.slots)

    def acquire(self, prompt: list[int], adapter: str | None) -> tuple[Slot, int]:
        """(slot, tokens of `prompt` its cache already holds). At least one prompt token is always left to
        compute, since its logits start the generation."""
        with self._cv:
            while all(s.busy for s in self.slots):
                self._cv.wait()
            free = [s for s in self.slots if not s.busy]
            mates = [s.index for s in self.slots if s.busy and s.adapter == adapter]

            def reuse(s: Slot) -> int:
                return common_prefix(s.tokens, prompt) if s.adapter == adapter else 0

            def near(s: Slot) -> int:  # a decode is cheapest when its sequences sit on consecutive slots
                return -min((abs(s.index - m) for m in mates), default=0)

            # a long reusable prefix first (a few template tokens are not worth a scattered batch), then the
            # slot next to the adapter's other sequences, then the longer prefix, then an empty slot (so
            # useful caches survive longer)
            slot = max(free, key=lambda s: (reuse(s) // REUSE_UNIT, near(s), reuse(s), -len(s.tokens)))
            slot.busy = True
            return slot, min(reuse(slot), len(prompt) - 1)

    def release(self, slot: Slot) -> None:
        with self._cv:
            slot.busy = False
            self._cv.notify()


@dataclass
class Call:
    """A function the scheduler thread runs between decodes (KV cache edits), and its outcome."""

    fn: Callable[[], object]
    result: object = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to the waiting caller, who raises it
            self.error = e
        self.done.set()


@dataclass
class Work:
    """Tokens one sequence submitted; the scheduler feeds them (a long prompt over several batches)."""

    seq: Sequence
    tokens: list[int]
    all_logits: bool  # a row for every token (prompt scoring), else only for the last
    fed: int = 0
    rows: np.ndarray | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Sequence:
    """One generation's handle on a slot: prefill, step, score, close (close is idempotent)."""

    def __init__(self, scheduler: BatchScheduler, slot: Slot, adapter: str | None, prompt: list[int], keep: int):
        self.scheduler, self.slot, self.adapter = scheduler, slot, adapter
        self.prompt, self.n_past = prompt, keep  # n_past: tokens in the KV cache (positions 0..n_past-1)
        self.closed = False

    def prefill(self) -> np.ndarray:
        """Compute the prompt beyond the reused prefix; the logits predicting the first new token."""
        return self.scheduler.submit(self, self.prompt[self.n_past:], all_logits=False)[-1]

    def step(self, token: int) -> np.ndarray:
        return self.scheduler.submit(self, [token], all_logits=False)[-1]

    def score(self, tokens: list[int]) -> np.ndarray:
        """Feed tokens and get every one's next-token logits (rows, one per token)."""
        return self.scheduler.submit(self, tokens, all_logits=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.scheduler.close(self)


RunBatch = Callable[[str | None, list[tuple[Work, int, int]]], list[np.ndarray]]


class BatchScheduler:
    """Owns an engine's decoding: one thread turns the open sequences' submissions into batches.

    `run_batch(adapter, [(work, start, count), ...])` feeds work.tokens[start:start+count] of each entry in one
    decode and returns, per entry, the logits rows it asked for (every token's, or the last one's when the
    entry completes a prompt or step, else an empty array). `trim(slot, keep)` drops a slot's cache after
    `keep` tokens and returns how many it really kept (a sliding-window cache may not keep a long prefix).
    """

    def __init__(self, name: str, slots: int, max_tokens: int, run_batch: RunBatch,
                 trim: Callable[[Slot, int], int], gather_s: float = GATHER_S):
        self.name, self.max_tokens, self.gather_s = name, max_tokens, gather_s
        self.pool = SlotPool(slots)
        self._run_batch, self._trim = run_batch, trim
        self._cv = threading.Condition()
        self._pending: list[Work] = []
        self._calls: list[Call] = []
        self._open: dict[str | None, int] = {}  # adapter -> open sequences
        self._last_group: str | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0  # decodes run, and sequences in them: tests and benchmarks read the mean batch size
        self.batched_sequences = 0
        self.max_batch = 0

    # -- sequences -----------------------------------------------------------------------------------------
    def open(self, prompt: list[int], adapter: str | None, reuse: bool = True) -> Sequence:
        """A sequence on a free slot (waits for one); its cache already holds the longest shared prefix."""
        slot, keep = self.pool.acquire(prompt, adapter)
        try:  # the KV cache changes only in the scheduler thread, never during a decode
            keep = self.call(lambda: self._trim(slot, keep if reuse else 0))
        except BaseException:
            self.pool.release(slot)
            raise
        slot.tokens, slot.adapter = prompt[:keep], adapter
        with self._cv:
            self._open[adapter] = self._open.get(adapter, 0) + 1
        return Sequence(self, slot, adapter, prompt, keep)

    def close(self, seq: Sequence) -> None:
        with self._cv:
            self._pending = [w for w in self._pending if w.seq is not seq]
            self._open[seq.adapter] -= 1
            if not self._open[seq.adapter]:
                del self._open[seq.adapter]
            self._cv.notify_all()
        self.pool.release(seq.slot)

    @property
    def open_sequences(self) -> int:
        with self._cv:
            return sum(self._open.values())

    def call(self, fn: Callable[[], object]) -> object:
        """fn() run by the scheduler thread between two decodes; its result (or its exception)."""
        job = self._hand_over(Call(fn), self._calls)
        if job.error is not None:
            raise job.error
        return job.result

    def submit(self, seq: Sequence, tokens: list[int], all_logits: bool) -> np.ndarray:
        if seq.closed:
            raise RuntimeError("the sequence is closed")
        work = self._hand_over(Work(seq, list(tokens), all_logits), self._pending)
        if work.error is not None:
            raise RuntimeError(f"decoding failed: {work.error}") from work.error
        return work.rows

    def _hand_over(self, item, queue: list):
        """Queue item for the scheduler thread (started if needed) and wait until it is done."""
        with self._cv:
            self._ensure_thread()
            queue.append(item)
            self._cv.notify_all()
        item.done.wait()
        return item

    # -- the scheduler thread ------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=f"decode-{self.name}", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            got = self._next_batch()
            if got is None:  # idle: the thread ends (an engine nobody uses can be freed); submit() starts another
                return
            if isinstance(got, Call):
                got.run()
                continue
            group, batch = got
            try:
                rows = self._run_batch(group, batch)
            except Exception as e:  # every waiting request must hear of it, or it would wait forever
                log.exception("decode of %d sequences failed on %s", len(batch), self.name)
                for work, _, _ in batch:
                    work.error = e
                    work.done.set()
                continue
            self.batches += 1
            self.batched_sequences += len(batch)
            self.max_batch = max(self.max_batch, len(batch))
            for (work, start, count), got in zip(batch, rows, strict=True):
                self._deliver(work, start, count, got)

    def _deliver(self, work: Work, start: int, count: int, got: np.ndarray) -> None:
        seq = work.seq
        fed = work.tokens[start:start + count]
        seq.slot.tokens.extend(fed)
        seq.n_past += count
        work.fed = start + count
        if work.fed < len(work.tokens):
            with self._cv:  # the rest of a long prompt goes into a later batch
                self._pending.insert(0, work)
            return
        work.rows = got
        work.done.set()

    def _next_batch(self) -> Call | tuple[str | None, list[tuple[Work, int, int]]] | None:
        with self._cv:
            while True:
                while not self._pending and not self._calls:
                    if not self._cv.wait(IDLE_EXIT_S) and not self._pending and not self._calls \
                            and not self._open:
                        self._thread = None
                        return None
                if self._calls:
                    return self._calls.pop(0)
                group = self._pick_group()
                deadline = time.monotonic() + self.gather_s
                # wait (briefly) until every open sequence of the group has submitted its next tokens
                while (remaining := deadline - time.monotonic()) > 0 and \
                        self._ready(group) < self._open.get(group, 0):
                    self._cv.wait(remaining)
                batch = self._take(group)
                if batch:
                    self._last_group = group
                    return group, batch

    def _ready(self, group: str | None) -> int:
        return len({id(w.seq) for w in self._pending if w.seq.adapter == group})

    def _pick_group(self) -> str | None:
        """Round-robin: the first group with pending work after the one served last (in order of arrival)."""
        groups = list(dict.fromkeys(w.seq.adapter for w in self._pending))
        if self._last_group in groups and len(groups) > 1:
            i = groups.index(self._last_group)
            return groups[(i + 1) % len(groups)]
        return groups[0]

    def _take(self, group: str | None) -> list[tuple[Work, int, int]]:
        """The group's pending work that fits one batch: single-token steps first (they keep streams moving),
        then prompts and scoring chunks in arrival order; a long prompt may be cut (the rest waits)."""
        mine = [w for w in self._pending if w.seq.adapter == group]
        mine.sort(key=lambda w: len(w.tokens) - w.fed > 1)
        batch, room = [], self.max_tokens
        for work in mine:
            left = len(work.tokens) - work.fed
            count = min(left, room) if not work.all_logits else (left if left <= room else 0)
            if count <= 0:
                continue
            batch.append((work, work.fed, count))
            room -= count
            self._pending.remove(work)
            if room <= 0:
                break
        return batch


class SingleSequence:
    """The one-sequence API (prefill, step, end) over an engine's open(): for callers that decode alone
    (tests, the precision checks). Concurrent callers each open() their own Sequence instead."""

    _solo: Sequence | None = None

    def prefill(self, ids: list[int], adapter_dir) -> np.ndarray:
        self.end()
        self._solo = self.open(ids, adapter_dir)
        return self._solo.prefill()

    def step(self, token: int) -> np.ndarray:
        return self._solo.step(token)

    def end(self) -> None:
        if self._solo is not None:
            self._solo.close()
            self._solo = None

    def score_rows(self, ids: list[int], adapter_dir, chunk: int = 64):
        """Yield (position, log-softmax row) predicting ids[position] for position = 1..len(ids)-1, computed
        from scratch on a slot of its own (every position's logits are needed, so no prefix is reused)."""
        from tunehouse.inference.sampling import log_softmax

        if len(ids) < 2:
            return
        seq = self.open(ids, adapter_dir, reuse=False)
        try:
            for start in range(0, len(ids) - 1, chunk):
                rows = seq.score(ids[start:min(start + chunk, len(ids) - 1)])
                for i, row in enumerate(rows):
                    yield start + i + 1, log_softmax(row)
        finally:
            seq.close()
