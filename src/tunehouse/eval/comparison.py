"""Base-vs-fine-tuned comparison: load a test set, run both models on every example, grade, summarize.

The runner talks to models through a small Backend (generate + optional score). `OpenAIBackend` wraps the
official `openai` SDK, so the same code scores a tunehouse model, a model on any OpenAI-compatible server, or
an OpenAI model. Loss/perplexity of the reference come from `/v1/completions` with `echo` + `logprobs`
(lm-evaluation-harness's way) on the prompt rendered in the model's chat format; backends that cannot do
this report them as n/a, with the reason (`ScoreUnavailable`) in the result's notes, instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from tunehouse.eval import metrics as m

Progress = Callable[[str, int, int], None]  # (label, done, total)


def guess_template(model: str) -> str:
    """Chat format from the model id: a tunehouse `ft:{base}:...` id names its base; Gemma or ChatML."""
    base = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else model
    return "gemma" if "gemma" in base.lower() else "chatml"


class EvalError(Exception):
    """Bad test data or a failed model call, with a message fit for the user."""


class EvalStopped(EvalError):
    """The evaluation was asked to stop (the worker running it is shutting down)."""


class ScoreUnavailable(Exception):
    """The backend cannot score reference loss for a model; the message says why (shown next to the n/a)."""


@dataclass
class Example:
    index: int
    line: int
    messages: list[dict]  # the prompt: every message before the reference
    reference: str | None  # the last assistant message, when the example ends with one
    patterns: list[str] | None = None


@dataclass
class Generation:
    text: str
    latency_s: float
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str | None = None


@dataclass
class EvalOptions:
    temperature: float = 0.0
    max_tokens: int | None = None  # None = per example from the reference length (see auto_max_tokens)
    check_json: bool = False
    schema: dict | None = None
    score_loss: bool = True
    template: str = "auto"  # chat format used to render prompts for loss scoring: auto | gemma | chatml | none
    warmup: bool = True  # one untimed 1-token request per model first, so loading it is not counted as latency


class Backend(Protocol):
    def check_model(self, model: str) -> None:
        """Raise EvalError when the model does not exist (fail before running anything)."""

    def generate(self, model: str, messages: list[dict], max_tokens: int, temperature: float) -> Generation: ...

    def score(self, model: str, messages: list[dict], reference: str, template: str) -> tuple[float, int] | None:
        """Sum of NLLs and token count of `reference` as the answer to `messages`, or None if unsupported.

        Raises ScoreUnavailable(reason) when the model cannot be scored at all (e.g. the server refuses).
        """


def load_examples(path: str | Path, max_examples: int | None = None) -> list[Example]:
    """Read a chat JSONL test set; any malformed line is an EvalError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"test file not found: {path}")
    examples: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            examples.append(_parse_example(raw, line_no, len(examples)))
            if max_examples is not None and len(examples) >= max_examples:
                break
    if not examples:
        raise EvalError(f"{path} has no examples")
    return examples


def _parse_example(raw: str, line_no: int, index: int) -> Example:
    where = f"line {line_no}"
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise EvalError(f"{where}: not valid JSON ({e})") from None
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(msgs, list) or not msgs or not all(isinstance(x, dict) and "role" in x for x in msgs):
        raise EvalError(f"{where}: expected an object with a non-empty 'messages' list of {{role, content}}")
    patterns = obj.get("expected_patterns")
    if patterns is not None:
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise EvalError(f"{where}: 'expected_patterns' must be a non-empty list of regex strings")
        try:
            m.compile_patterns(patterns)
        except ValueError as e:
            raise EvalError(f"{where}: {e}") from None
    reference = None
    prompt = msgs
    if msgs[-1]["role"] == "assistant":
        content = msgs[-1].get("content")
        if not isinstance(content, str):
            raise EvalError(f"{where}: the last assistant message has no text content to compare against")
        reference, prompt = content, msgs[:-1]
    if not prompt:
        raise EvalError(f"{where}: no prompt messages before the reference answer")
    if reference is None and patterns is None:
        raise EvalError(f"{where}: needs a final assistant message (the reference) or 'expected_patterns'")
    # Only the fields chat completions accept: `weight` and similar training-only keys would be rejected.
    clean = [{k: v for k, v in x.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}
             for x in prompt]
    return Example(index, line_no, clean, reference, patterns)


def auto_max_tokens(example: Example) -> int:
    """Room for the reference and as much again, so a rambling model is cut short but a right one is not.

    UTF-8 bytes / 3 over-counts English tokens (~4 chars each) and matches CJK (1 char ~ 3 bytes ~ 1 token).
    """
    if example.reference is None:
        return 128
    est = len(example.reference.encode("utf-8")) // 3
    return max(32, min(512, 2 * est + 16))


def _score(backend: Backend, model: str, ex: Example, template: str) -> tuple[tuple[float, int] | None, str | None]:
    """(score, None), or (None, why the loss is n/a)."""
    try:
        score = backend.score(model, ex.messages, ex.reference, template)
    except ScoreUnavailable as e:
        return None, str(e)
    return score, None if score is not None else f"the backend gave no score for the example on line {ex.line}"


@dataclass
class ModelRun:
    model: str
    generations: list[Generation]
    grades: list[m.ExampleGrade]
    scores: list[tuple[float, int] | None]
    metrics: dict = field(default_factory=dict)
    loss_note: str | None = None  # why reference loss is n/a, when a backend said so


def run_model(
    backend: Backend, model: str, examples: list[Example], options: EvalOptions, progress: Progress | None = None,
    label: str = "",
) -> ModelRun:
    backend.check_model(model)
    gens, grades, scores = [], [], []
    loss_note = None
    can_score = options.score_loss and options.template != "none"
    if options.warmup:
        backend.generate(model, examples[0].messages, 1, options.temperature)
    for i, ex in enumerate(examples):
        max_tokens = options.max_tokens or auto_max_tokens(ex)
        gen = backend.generate(model, ex.messages, max_tokens, options.temperature)
        gens.append(gen)
        grades.append(m.grade_answer(gen.text, ex.reference, ex.patterns, options.check_json, options.schema))
        score = None
        if can_score and ex.reference is not None:
            score, loss_note = _score(backend, model, ex, options.template)
            # One unsupported answer means the backend cannot score at all: stop asking.
            can_score = score is not None
        scores.append(score)
        if progress:
            progress(label or model, i + 1, len(examples))
    valid_scores = [s for s in scores if s is not None]
    # Loss is only meaningful when every example with a reference was scored.
    n_ref = sum(ex.reference is not None for ex in examples)
    pooled = valid_scores if valid_scores and len(valid_scores) == n_ref else None
    run = ModelRun(model, gens, grades, scores, loss_note=loss_note if pooled is None else None)
    run.metrics = m.summarize(
        grades,
        [g.latency_s for g in gens],
        [g.completion_tokens for g in gens],
        [g.prompt_tokens for g in gens],
        pooled,
    )
    return run


@dataclass
class EvalResult:
    model: str
    baseline: str
    test_file: str
    examples: list[Example]
    model_run: ModelRun
    baseline_run: ModelRun
    options: EvalOptions
    job: dict | None = None  # the fine-tuning job the model came from, when known
    loss_curve: list[dict] | None = None  # rows of the job's fine-tune-results CSV

    @property
    def n(self) -> int:
        return len(self.examples)

    def summary(self) -> dict:
        """What `--json` prints: {"model": {metrics}, "baseline": {metrics}, "n": int}, plus "notes": [str]
        saying why a metric is n/a when one is (the documented shape stays exact in the common case)."""
        out = {"model": self.model_run.metrics, "baseline": self.baseline_run.metrics, "n": self.n}
        notes = self.notes()
        return out | {"notes": notes} if notes else out

    def notes(self) -> list[str]:
        """Why a metric is n/a, e.g. "reference loss n/a for m: the server answered 404 ... to /v1/completions"."""
        return [f"reference loss n/a for {run.model}: {run.loss_note}"
                for run in (self.model_run, self.baseline_run) if run.loss_note]

    def rows(self) -> list[dict]:
        out = []
        for i, ex in enumerate(self.examples):
            row = {"index": ex.index, "line": ex.line, "prompt": ex.messages, "reference": ex.reference,
                   "expected_patterns": ex.patterns}
            for key, run in (("model", self.model_run), ("baseline", self.baseline_run)):
                g, gen, sc = run.grades[i], run.generations[i], run.scores[i]
                row[key] = {
                    "answer": gen.text, "passed": g.passed, "exact_match": g.exact_match, "contains": g.contains,
                    "pattern_pass": g.pattern_pass, "json_valid": g.json_valid, "json_schema": g.json_schema,
                    "loss": (sc[0] / sc[1]) if sc and sc[1] else None, "latency_s": gen.latency_s,
                    "completion_tokens": gen.completion_tokens, "finish_reason": gen.finish_reason, **g.details,
                }
            out.append(row)
        return out

    def worst_failures(self, k: int = 5) -> list[dict]:
        """The tuned model's failures: regressions (baseline passed) first, then highest reference loss."""
        failed = [r for r in self.rows() if not r["model"]["passed"]]
        failed.sort(key=lambda r: (not r["baseline"]["passed"], -(r["model"]["loss"] or 0.0)))
        return failed[:k]

    def to_json(self) -> dict:
        return {
            **self.summary(),
            "model_id": self.model,
            "baseline_id": self.baseline,
            "test_file": self.test_file,
            "options": {"temperature": self.options.temperature, "max_tokens": self.options.max_tokens or "auto",
                        "json": self.options.check_json, "schema": self.options.schema is not None,
                        "template": self.options.template},
            "job": self.job,
            "examples": self.rows(),
        }


def evaluate(
    backend: Backend,
    model: str,
    baseline: str,
    test_file: str | Path,
    options: EvalOptions | None = None,
    max_examples: int | None = None,
    progress: Progress | None = None,
    baseline_backend: Backend | None = None,
) -> EvalResult:
    """Run `model` and `baseline` on every example of `test_file` with the same options.

    `baseline_backend` serves the baseline from another server (e.g. an OpenAI `ft:` model compared with its
    tunehouse replacement); by default both models come from `backend`.
    """
    options = options or EvalOptions()
    baseline_backend = baseline_backend or backend
    examples = load_examples(test_file, max_examples)
    backend.check_model(model)
    baseline_backend.check_model(baseline)
    model_run = run_model(backend, model, examples, options, progress, "model")
    baseline_options = options
    if baseline_backend is not backend and options.template == "auto":
        # Another server's model id says nothing reliable about its chat format (a tunehouse Gemma may be
        # registered as "gpt-4o-mini-..."), and the two losses only compare when both score the same text:
        # the baseline is scored in the model's format.
        baseline_options = replace(options, template=guess_template(model))
    baseline_run = run_model(baseline_backend, baseline, examples, baseline_options, progress, "baseline")
    return EvalResult(model, baseline, str(test_file), examples, model_run, baseline_run, options)

