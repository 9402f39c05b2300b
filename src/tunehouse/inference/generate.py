"""The decoding loop every engine shares: prefill, sample, detokenize incrementally, stop.

An engine only turns token ids into next-token logits: `engine.open(prompt, adapter)` gives a sequence with
`prefill()`, `step(token)` and `close()` (batching.Sequence; concurrent sequences share the engine's decode
batches). This loop owns sampling, stop tokens, stop strings (never emitted, even when split across tokens) and
the finish reason, so the fast and reference engines behave identically apart from their arithmetic.
`run_concurrently` runs several such loops (a request's n choices or prompts) at once so they batch together.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunehouse.inference.sampling import Sampler, SamplingParams, TokenChoice


@dataclass
class Piece:
    """What one decoding step adds: text now safe to show, the tokens behind it, and the end when it comes."""

    text: str
    tokens: list[TokenChoice] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" | "length" on the last piece


def stop_token_ids(tokenizer, engine_eos: list[int] | None = None) -> set[int]:
    """End-of-sequence ids: the tokenizer's EOS plus the chat end-of-turn markers it knows."""
    ids = set(engine_eos or [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for marker in ("<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if marker in vocab:
            ids.add(int(vocab[marker]))
    return ids


def encode_prompt(tokenizer, text: str, add_bos: bool) -> list[int]:
    """Token ids of a prompt. The chat rendering carries its own special tokens; raw completion prompts get a
    BOS when the tokenizer uses one and the text does not start with it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if add_bos and bos is not None and (not ids or ids[0] != bos) and _adds_bos(tokenizer):
        ids = [bos, *ids]
    return ids


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def generate(engine, prompt_ids: list[int], adapter_dir: Path | None, params: SamplingParams,
             stop_ids: set[int], sampler: Sampler | None = None) -> Iterator[Piece]:
    """Yield Pieces until a stop token, a stop string or max_tokens; the last one has finish_reason set."""
    tok = engine.tokenizer
    sampler = sampler or Sampler(params)
    stops = [s for s in params.stop if s]
    hold = max((len(s) for s in stops), default=1) - 1  # chars that might begin a stop string
    out_ids: list[int] = []
    shown = 0  # characters of the decoded completion already yielded
    prev_text = ""
    if params.max_tokens <= 0:
        yield Piece("", finish_reason="length")
        return
    seq = engine.open(prompt_ids, adapter_dir)
    try:
        logits = seq.prefill()
        while True:
            choice = sampler.choose(logits)
            if choice.token in stop_ids:
                yield Piece(prev_text[shown:], finish_reason="stop")
                return
            out_ids.append(choice.token)
            text = tok.decode(out_ids, skip_special_tokens=True)
            token_text = text[len(prev_text):] if text.startswith(prev_text) else text
            prev_text = text
            cut = _find_stop(text, stops, max(0, shown - hold))
            if cut is not None:
                yield Piece(text[shown:cut], [choice], [token_text], finish_reason="stop")
                return
            if len(out_ids) >= params.max_tokens:
                yield Piece(text[shown:], [choice], [token_text], finish_reason="length")
                return
            # Hold back a possible stop-string prefix and any half-decoded UTF-8 character.
            safe = len(text) - (hold if stops else 0)
            while safe > shown and text[safe - 1] == "\ufffd":
                safe -= 1
            safe = max(safe, shown)
            yield Piece(text[shown:safe], [choice], [token_text])
            shown = safe
            logits = seq.step(choice.token)
    finally:
        seq.close()  # frees the slot at once, also when the consumer stops early (a client that went away)


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


_DONE = object()


def run_concurrently(streams: list[Callable[[], Iterable]]) -> Iterator[tuple[int, object]]:
    """Run each stream (a function returning an iterator, e.g. one choice's `generate`) in its own thread and
    yield (stream index, item) as items arrive, so the streams decode in the same batches. Items of one stream
    keep their order. Closing this iterator (or an error in any stream) stops the others at their next item
    and closes their generators, which frees their slots."""
    if len(streams) == 1:  # no thread needed
        it = iter(streams[0]())
        try:
            for item in it:
                yield 0, item
        finally:
            if hasattr(it, "close"):
                it.close()
        return
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker(i: int, make: Callable[[], Iterable]) -> None:
        try:
            it = make()
            try:
                for item in it:
                    if stop.is_set():
                        break
                    out.put((i, item))
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            out.put((i, _DONE))
        except BaseException as e:  # re-raised in the consumer's thread
            out.put((i, e))

    threads = [threading.Thread(target=worker, args=(i, s), daemon=True, name=f"choice-{i}")
               for i, s in enumerate(streams)]
    for t in threads:
        t.start()
    try:
        running = len(streams)
        while running:
            i, item = out.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        stop.set()
        for t in threads:
            t.join()
