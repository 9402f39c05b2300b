"""POST /v1/completions: legacy text completions, with `echo` + `logprobs` for likelihood scoring.

The prompt is raw text (or token ids, as lm-evaluation-harness's `local-completions` sends with
tokenized_requests), continued as is: no chat template. With `echo`, the returned text starts with the prompt
and the logprobs cover its tokens too (the first, which has no context, gets null as on OpenAI), so
`max_tokens=0, echo=True, logprobs=1` scores a text in one forward pass. `text_offset` indexes the returned text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import closing

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tunehouse.api.completion_requests import CompletionRequest, fit_max_tokens
from tunehouse.api.deps import ProjectDep, SessionDep, SettingsDep
from tunehouse.api.errors import APIError
from tunehouse.api.inference_deps import InferenceDep, admit, load_engine, sse_response
from tunehouse.inference.generate import encode_prompt, generate, run_concurrently, stop_token_ids
from tunehouse.inference.sampling import Sampler, choice_rng, top_entries
from tunehouse.store.models import resolve_model

router = APIRouter(tags=["completions"])


def tokenize(engine, prompt: str | list[int]) -> tuple[list[int], list[int], str, int]:
    """(ids for the model, char offset of each echoed token, echo text, how many leading ids are not echoed)."""
    tok = engine.tokenizer
    if isinstance(prompt, list):
        if max(prompt) >= engine.vocab_size or min(prompt) < 0:
            raise APIError(400, "Invalid value for 'prompt': a token id is out of this model's vocabulary.",
                           param="prompt", code="invalid_value")
        offsets, text = [], ""
        for i in range(len(prompt)):  # offsets from incremental decoding so they index the echoed text
            offsets.append(len(text))
            text = tok.decode(prompt[: i + 1])
        return list(prompt), offsets, text, 0
    ids = encode_prompt(tok, prompt, add_bos=True)
    enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    skip = len(ids) - len(enc["input_ids"])  # a BOS we added for the model is context, not echoed text
    return ids, [a for a, _ in enc["offset_mapping"]], prompt, skip


@router.post("/completions")
async def create_completion(body: CompletionRequest, db: SessionDep, settings: SettingsDep, project: ProjectDep,
                            svc: InferenceDep):
    base, adapter_dir = resolve_model(db, settings, project, body.model)
    engine = await load_engine(svc, base, adapter_dir)
    encoded = [tokenize(engine, p) for p in body.prompts]
    max_tokens = body.requested_max_tokens
    for ids, *_ in encoded:  # a budget that was asked for is never shortened to fit: it fits or is refused
        fit_max_tokens(max_tokens, len(ids), settings.inference_context, prompt_param="prompt")
    params = body.sampling_params(engine.vocab_size, max_tokens)
    ticket = admit(svc)
    generation = CompletionGeneration(svc, engine, adapter_dir, params, body.choices_count, bool(body.echo), encoded)
    meta = {"id": "cmpl-" + uuid.uuid4().hex[:29], "created": int(time.time()), "model": body.model,
            "system_fingerprint": f"tunehouse-{engine.name}", "object": "text_completion"}
    if not body.stream:
        try:
            choices = await run_in_threadpool(generation.choices)
        finally:
            ticket.release()
        return {**meta, "choices": choices, "usage": generation.usage()}
    return sse_response(generation.sse(meta, body.include_usage, ticket))


class CompletionGeneration:
    """One completions request's generation: n choices per prompt, all decoded concurrently (in the engine's
    shared batches), whole or as SSE."""

    def __init__(self, svc, engine, adapter_dir, params, n, echo, encoded):
        self.svc, self.engine, self.adapter_dir, self.params = svc, engine, adapter_dir, params
        self.n, self.echo, self.encoded = n, echo, encoded
        self.stops = stop_token_ids(engine.tokenizer)
        self.completion_tokens = 0

    def usage(self) -> dict:
        prompt = sum(len(e[0]) for e in self.encoded)
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
                "total_tokens": prompt + self.completion_tokens}

    def _prompt_logprobs(self, ids: list[int], skip: int) -> tuple[list[str], list, list]:
        """Echoed prompt tokens, their logprobs (None for a first token without context) and top entries."""
        tok, k = self.engine.tokenizer, self.params.top_logprobs
        lps, tops = [None] * len(ids), [None] * len(ids)
        for pos, row in self.engine.score_rows(ids, self.adapter_dir):
            lps[pos] = float(row[ids[pos]])
            tops[pos] = {tok.decode([t]): lp for t, lp in top_entries(row, k)} if k else {}
        return [tok.decode([t]) for t in ids[skip:]], lps[skip:], tops[skip:]

    def _one(self, index: int) -> Iterator[tuple[str, dict | None, str | None, int]]:
        """(text, logprobs fragment or None, finish_reason, tokens) pieces of choice `index` (prompt index // n),
        echoed prompt first."""
        ids, offsets, prompt_text, skip = self.encoded[index // self.n]
        params = self.params
        base = 0
        if self.echo:
            frag = None
            if params.logprobs:
                toks, lps, tops = self._prompt_logprobs(ids, skip)
                frag = {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
            yield prompt_text, frag, None, 0
            base = len(prompt_text)
        done = 0
        sampler = Sampler(params, choice_rng(params.seed, index))
        for piece in generate(self.engine, ids, self.adapter_dir, params, self.stops, sampler):
            frag = None
            if params.logprobs:
                tok = self.engine.tokenizer
                frag = {"tokens": piece.token_texts, "token_logprobs": [c.logprob for c in piece.tokens],
                        "top_logprobs": [{tok.decode([t]): lp for t, lp in c.top} for c in piece.tokens],
                        "text_offset": []}
                for t in piece.token_texts:
                    frag["text_offset"].append(base + done)
                    done += len(t)
            yield piece.text, frag, piece.finish_reason, len(piece.tokens)

    def _all(self) -> Iterator[tuple[int, tuple]]:
        return run_concurrently([lambda i=i: self._one(i) for i in range(len(self.encoded) * self.n)])

    def choices(self) -> list[dict]:
        count = len(self.encoded) * self.n
        texts, lps, reasons = [""] * count, [None] * count, [None] * count
        with closing(self._all()) as stream:
            for index, (text, frag, finish, used) in stream:
                self.completion_tokens += used
                texts[index] += text
                reasons[index] = finish or reasons[index]
                if frag is not None:
                    lps[index] = frag if lps[index] is None else {k: lps[index][k] + frag[k] for k in frag}
        return [{"text": texts[i], "index": i, "logprobs": lps[i], "finish_reason": reasons[i]} for i in range(count)]

    def sse(self, meta: dict, include_usage: bool, ticket) -> Iterator[str]:
        def chunk(choices: list[dict], usage=None) -> str:
            obj = {**meta, "choices": choices}
            if include_usage:
                obj["usage"] = usage
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        try:
            with closing(self._all()) as stream:
                for index, (text, frag, finish, used) in stream:
                    self.completion_tokens += used
                    if text or frag or finish:
                        yield chunk([{"text": text, "index": index, "logprobs": frag, "finish_reason": finish}])
            if include_usage:
                yield chunk([], self.usage())
            yield "data: [DONE]\n\n"
        finally:
            ticket.release()
