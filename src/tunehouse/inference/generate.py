"""The decoding loop every engine shares: prefill, sample, detokenize incrementally, stop.

An engine only turns token ids into next-token logits (`prefill`, `step`, `end`); this loop owns sampling,
stop tokens, stop strings (never emitted, even when split across tokens) and the finish reason, so the fast
and reference engines behave identically apart from their arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    try:
        if params.max_tokens <= 0:
            yield Piece("", finish_reason="length")
            return
        logits = engine.prefill(prompt_ids, adapter_dir)
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
            logits = engine.step(choice.token)
    finally:
        engine.end()


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None
