"""Token counting for validation: which texts of an example are counted, and how (real tokenizer or estimate).

A counter is BATCHED: `count_tokens(texts: list[str]) -> list[int]`, so a fast tokenizer encodes thousands of
strings per call. Without a tokenizer we estimate 4 characters per token (English prose with Gemma's and
OpenAI's tokenizers is 3.5-4.5), and every report says the counts are estimates.

Chat examples are counted the way tunehouse.data.render lays out the Gemma format: each message costs its
content (plus the JSON of its tool calls) plus a fixed overhead for its turn markers, `<start_of_turn>role\\n`
(3 tokens) and `<end_of_turn>\\n` (2 tokens); system/developer text is folded into the first user turn (1 token
for the blank line); one `<bos>` per example; an example's `tools` JSON is counted once. Trained tokens are the
contents of assistant messages with weight != 0 plus their `<end_of_turn>` (1 token), as render's masks do.

A preference (DPO) pair is two sequences, as tunehouse.data.render.preference_chats builds them: prompt +
preferred output and prompt + non-preferred output. The prompt is tokenized once and counted in both; its
assistant turns are context (untrained); each output's content and `<end_of_turn>` are trained, whatever its
weight (`pair_sequences`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

CountTokens = Callable[[list[str]], list[int]]

CHARS_PER_TOKEN = 4
BOS_TOKENS = 1
TURN_OVERHEAD = 5  # <start_of_turn> role \n ... <end_of_turn> \n
FOLDED_OVERHEAD = 1  # system/developer: "\n\n" inside the first user turn
TRAINED_OVERHEAD = 1  # <end_of_turn> after a trained assistant message


def estimate_tokens(texts: list[str]) -> list[int]:
    """~4 characters per token, at least 1 token for a non-empty text."""
    return [(len(t) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN for t in texts]


def counter_from_tokenizer(tokenizer: Any) -> CountTokens:
    """A batched counter from a Hugging Face tokenizer (duck-typed: no transformers import here).

    Uses the Rust `tokenizers` backend's encode_batch when there is one (several times faster than the
    Python wrapper), without special tokens: the overheads above account for those.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch"):
        # encode_batch_fast (tokenizers >= 0.21) skips character offsets, which counting does not need.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)

        def count(texts: list[str]) -> list[int]:
            return [len(e) for e in encode(texts, add_special_tokens=False)] if texts else []
        return count

    def count_slow(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return count_slow


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


# Segment kinds: a trained text, an untrained one, and an untrained one that usually repeats across examples
# (system/developer prompts, tool schemas), whose count the validator caches instead of re-tokenizing. In a
# preference pair, TRAINED is the preferred output and NON_PREFERRED the non-preferred one (trained as well,
# in the pair's second sequence); the other kinds are the prompt, which is in both sequences.
UNTRAINED, TRAINED, SHARED, NON_PREFERRED = 0, 1, 2, 3


def _message_segments(m: dict, out: list[tuple[str, int]], kind: int | None = None) -> int:
    """Append (text, kind) segments of one message; return its fixed overhead in tokens.

    `kind` forces the kind of a non-system message (preference prompts and outputs); None derives it from
    the role and weight, as for chat.
    """
    role = m.get("role")
    if role in ("system", "developer"):
        out.append((_text(m.get("content")), SHARED))
        return FOLDED_OVERHEAD
    if kind is None:
        kind = TRAINED if role == "assistant" and m.get("weight", 1) != 0 else UNTRAINED
    out.append((_text(m.get("content")), kind))
    calls = m.get("tool_calls") or m.get("function_call")
    if calls:
        out.append((json.dumps(calls, ensure_ascii=False), kind))
    return TURN_OVERHEAD


def example_segments(example: dict, fmt: str) -> tuple[list[tuple[str, int]], int, int]:
    """(segments [(text, kind)], overhead tokens, trained overhead tokens) of a VALID chat or completion example.

    Preference pairs are two sequences: see preference_segments.
    """
    if fmt == "preference":
        raise ValueError("a preference pair is two sequences: use preference_segments")
    segments: list[tuple[str, int]] = []
    overhead, trained_overhead = BOS_TOKENS, 0
    if fmt == "completion":
        segments = [(example["prompt"], UNTRAINED), (example["completion"], TRAINED)]
        return segments, overhead, 0
    messages, tools = example["messages"], example.get("tools")
    if tools:
        segments.append((json.dumps(tools, ensure_ascii=False), SHARED))
    for m in messages:
        overhead += _message_segments(m, segments)
        if m.get("role") == "assistant" and m.get("weight", 1) != 0:
            trained_overhead += TRAINED_OVERHEAD
    # The trained <end_of_turn> is one of the turn's own overhead tokens, so `overhead` already counts it.
    return segments, overhead, trained_overhead


def preference_segments(example: dict) -> tuple[list[tuple[str, int]], int]:
    """(segments [(text, kind)], prompt overhead tokens) of a VALID preference pair.

    Prompt segments are UNTRAINED or SHARED (its assistant turns are context, as render makes them weight 0);
    the preferred output's are TRAINED, the non-preferred output's NON_PREFERRED. The overhead is the prompt's
    (`<bos>` and its turn markers); pair_sequences adds each output's own turn markers.
    """
    inp = example["input"]
    segments: list[tuple[str, int]] = []
    if inp.get("tools"):
        segments.append((json.dumps(inp["tools"], ensure_ascii=False), SHARED))
    overhead = BOS_TOKENS
    for m in inp["messages"]:
        overhead += _message_segments(m, segments, UNTRAINED)
    for name, kind in (("preferred_output", TRAINED), ("non_preferred_output", NON_PREFERRED)):
        output = example.get(name) or example.get(name.replace("output", "completion"))
        for m in output:  # exactly one message in a valid pair
            _message_segments(m, segments, kind)
    return segments, overhead


def pair_sequences(prompt: int, preferred: int, non_preferred: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((tokens, trained tokens) of prompt + preferred, the same of prompt + non-preferred).

    prompt: the prompt's tokens with its overhead; preferred / non_preferred: the tokens of each output's
    texts. Each output adds its turn markers (TURN_OVERHEAD), of which its `<end_of_turn>` is trained.
    """
    return ((prompt + TURN_OVERHEAD + preferred, preferred + TRAINED_OVERHEAD),
            (prompt + TURN_OVERHEAD + non_preferred, non_preferred + TRAINED_OVERHEAD))
