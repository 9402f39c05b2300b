"""Evaluation inside a fine-tuning job: the final adapter vs its base on the job's validation file.

The worker calls `evaluate_job(...)` in its own process after training succeeds, then records
`evaluation_event(result)` as a job event and the written report.json as a result file. Models are addressed
directly as (base model, adapter dir) through tunehouse.inference, so no server, API key or registered model id
is needed, and the answers come from the same engines, chat rendering and stop rules as /v1/chat/completions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tunehouse.config import Settings
from tunehouse.data.render import render_chat, render_prompt
from tunehouse.eval.comparison import EvalError, EvalOptions, EvalResult, EvalStopped, Generation, evaluate
from tunehouse.eval.report import fmt, fmt_delta, write_report

# Validation files can be large; the job's evaluation answers at most this many examples (per model).
MAX_JOB_EVAL_EXAMPLES = 100


class InProcessBackend:
    """Backend over tunehouse.inference in this process; model names map to (base model, adapter dir or None).

    `should_stop` is polled at every token: a worker shutting down must not first answer the whole test set.
    Examples run `default_concurrency` (the engines' slots) at a time, decoding in shared batches.
    """

    def __init__(self, settings: Settings, models: dict[str, tuple[str, Path | None]], service=None,
                 should_stop: Callable[[], bool] | None = None):
        from tunehouse.inference.service import InferenceService

        self.models = models
        self.service = service or InferenceService(settings)
        self.should_stop = should_stop or (lambda: False)
        self.default_concurrency = max(1, settings.inference_slots)

    def _check_stop(self) -> None:
        if self.should_stop():
            raise EvalStopped("the worker is shutting down")

    def check_model(self, model: str) -> None:
        if model not in self.models:
            raise EvalError(f"model '{model}' is not one of {', '.join(self.models)}")
        _, adapter = self.models[model]
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise EvalError(f"{adapter} is not a PEFT adapter directory")

    def _engine(self, model: str):
        base, adapter = self.models[model]
        return self.service.engine(base, adapter), adapter

    def generate(self, model: str, messages: list[dict], max_tokens: int, temperature: float) -> Generation:
        from tunehouse.inference.generate import encode_prompt, generate, stop_token_ids
        from tunehouse.inference.sampling import SamplingParams

        t0 = time.perf_counter()
        engine, adapter = self._engine(model)
        ids = encode_prompt(engine.tokenizer, render_prompt(messages, family=engine.family), add_bos=False)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        text, n, finish = [], 0, None
        with closing(generate(engine, ids, adapter, params, stop_token_ids(engine.tokenizer))) as pieces:
            for piece in pieces:
                self._check_stop()
                text.append(piece.text)
                n += len(piece.tokens)
                finish = piece.finish_reason or finish
        return Generation("".join(text), time.perf_counter() - t0, n, len(ids), finish)

    def score(self, model: str, messages: list[dict], reference: str, template: str,
              tools: list[dict] | None = None) -> tuple[float, int] | None:
        """NLL of the reference and its end-of-turn marker, token boundaries found as training finds them.

        The same call scores a chat example's reference and each output of a preference pair (with the pair's
        `tools` in the prompt); `template` is ignored: the engine knows its model's chat format.
        """
        from tunehouse.inference.generate import encode_prompt

        engine, adapter = self._engine(model)
        text, spans = render_chat([*messages, {"role": "assistant", "content": reference}], tools,
                                  family=engine.family)
        start, end = spans[-1]
        prefix = encode_prompt(engine.tokenizer, text[:start], add_bos=False)
        ids = encode_prompt(engine.tokenizer, text[:end], add_bos=False)
        if len(ids) <= len(prefix):
            return None
        nll = 0.0
        with closing(engine.score_rows(ids, adapter)) as rows:
            for pos, row in rows:
                self._check_stop()
                if pos >= len(prefix):
                    nll -= float(row[ids[pos]])
        return nll, len(ids) - len(prefix)


def evaluate_job(
    settings: Settings,
    base_model: str,
    adapter_dir: Path,
    validation_file: Path,
    out_dir: Path,
    model_id: str | None = None,
    max_examples: int = MAX_JOB_EVAL_EXAMPLES,
    service=None,
    options: EvalOptions | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Evaluate the adapter against its base on `validation_file`; writes report.json/report.md/PNGs to out_dir.

    A DPO job's validation file of preference pairs is scored pair by pair (preference accuracy and margin).
    Raises EvalError when the file cannot serve as a test set (e.g. examples without a final assistant message),
    EvalStopped as soon as `should_stop()` is true.
    """
    name = model_id or f"{base_model}+{Path(adapter_dir).name}"
    backend = InProcessBackend(settings, {name: (base_model, Path(adapter_dir)), base_model: (base_model, None)},
                               service, should_stop)
    result = evaluate(backend, name, base_model, validation_file, options or EvalOptions(), max_examples)
    write_report(result, out_dir)
    return result


def evaluation_event(result: EvalResult) -> tuple[str, dict]:
    """(message, data) for the job event, e.g. "Evaluation on 20 validation examples: exact match 45.0% vs
    0.0% for gemma-3-270m (+45.0 pts); reference loss 0.412 vs 2.954", or for a DPO job's preference pairs
    "Evaluation on 20 validation pairs: preference accuracy 85.0% vs 40.0% for gemma-3-270m (+45.0 pts);
    preference margin 3.120 vs -0.512"."""
    s = result.summary()
    parts = _preference_parts(result, s) if result.is_preference else _answer_parts(result, s)
    parts += result.notes()  # why a loss (or, for pairs, the preference scores) is n/a
    message = f"Evaluation on {result.n} validation {result.unit}: " + "; ".join(parts)
    return message, {"n": result.n, "model": s["model"], "baseline": s["baseline"], "baseline_model": result.baseline}


def _preference_parts(result: EvalResult, s: dict) -> list[str]:
    a, b = s["model"]["preference_accuracy"], s["baseline"]["preference_accuracy"]
    if a is None:
        return []
    k = "preference_accuracy"
    return [f"preference accuracy {fmt(k, a)} vs {fmt(k, b)} for {result.baseline} ({fmt_delta(k, a, b)})",
            f"preference margin {fmt('preference_margin', s['model']['preference_margin'])} vs "
            f"{fmt('preference_margin', s['baseline']['preference_margin'])}"]


def _answer_parts(result: EvalResult, s: dict) -> list[str]:
    parts = []
    for key in ("pattern_pass", "exact_match", "contains"):
        a, b = s["model"].get(key), s["baseline"].get(key)
        if a is not None:
            label = {"pattern_pass": "expected patterns", "exact_match": "exact match", "contains": "contains"}[key]
            parts.append(f"{label} {fmt(key, a)} vs {fmt(key, b)} for {result.baseline} ({fmt_delta(key, a, b)})")
            break
    if s["model"].get("loss") is not None:
        parts.append(f"reference loss {fmt('loss', s['model']['loss'])} vs {fmt('loss', s['baseline']['loss'])}")
    return parts
