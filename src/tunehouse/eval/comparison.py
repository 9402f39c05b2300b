"""Base-vs-fine-tuned comparison: load a test set, run both models on every example, grade, summarize.

The runner talks to models through a small Backend (generate + optional score). `OpenAIBackend` wraps the
official `openai` SDK, so the same code scores a tunehouse model, a model on any OpenAI-compatible server, or
an OpenAI model. Loss/perplexity of the reference come from `/v1/completions` with `echo` + `logprobs`
(lm-evaluation-harness's way) on the prompt rendered in the model's chat format; backends that cannot do
this report them as n/a, with the reason (`ScoreUnavailable`) in the result's notes, instead of failing.

A test file of preference pairs (DPO's format) is scored instead of answered: see `tunehouse.eval.preference`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tunehouse.data.formats import detect_format
from tunehouse.eval import metrics as m

if TYPE_CHECKING:  # preference builds on this module's types; importing it here at run time would be a cycle
    from tunehouse.eval.preference import PairScore, PreferencePair

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
    # Examples in flight at once (the server batches them); None = the backend's default_concurrency (tunehouse:
    # its engine's slots), 1 = one by one. Results and their order do not depend on it.
    concurrency: int | None = None


class Backend(Protocol):
    def check_model(self, model: str) -> None:
        """Raise EvalError when the model does not exist (fail before running anything)."""

    def generate(self, model: str, messages: list[dict], max_tokens: int, temperature: float) -> Generation: ...

    def score(self, model: str, messages: list[dict], reference: str, template: str,
              tools: list[dict] | None = None) -> tuple[float, int] | None:
        """Sum of NLLs and token count of `reference` as the answer to `messages`, or None if unsupported.

        `tools` (a preference pair's `input.tools`) are rendered into the prompt as training renders them.
        Raises ScoreUnavailable(reason) when the model cannot be scored at all (e.g. the server refuses).
        """


_NOUNS = {"chat": "chat example", "preference": "preference pair"}


def load_test_set(path: str | Path, max_examples: int | None = None) -> list[Example] | list[PreferencePair]:
    """Read a JSONL test set of chat examples or of preference pairs (one format per file, set by its first
    line); a malformed line, or one of the other format, is an EvalError naming the line."""
    from tunehouse.eval.preference import parse_pair

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"test file not found: {path}")
    items: list = []
    kind, first = None, 0
    with path.open(encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            obj = _parse_json(raw, line_no)
            shown = detect_format(obj)
            if kind is None:
                kind, first = ("preference" if shown == "preference" else "chat"), line_no
            elif shown in _NOUNS and shown != kind:
                raise EvalError(f"line {line_no}: a {_NOUNS[shown]} in a file of {_NOUNS[kind]}s (line {first} is "
                                "one); a test file holds one format")
            parse = parse_pair if kind == "preference" else _parse_example
            items.append(parse(obj, line_no, len(items)))
            if max_examples is not None and len(items) >= max_examples:
                break
    if not items:
        raise EvalError(f"{path} has no examples")
    return items


def load_examples(path: str | Path, max_examples: int | None = None) -> list[Example]:
    """Read a chat JSONL test set; any malformed line is an EvalError naming the line."""
    items = load_test_set(path, max_examples)
    if not isinstance(items[0], Example):
        raise EvalError(f"{path} holds preference pairs, not chat examples")
    return items


def _parse_json(raw: str, line_no: int) -> object:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise EvalError(f"line {line_no}: not valid JSON ({e})") from None


def clean_messages(messages: list[dict]) -> list[dict]:
    """Only the fields chat completions accept: `weight` and similar training-only keys would be rejected."""
    return [{k: v for k, v in x.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}
            for x in messages]


def _parse_example(obj: object, line_no: int, index: int) -> Example:
    where = f"line {line_no}"
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
    return Example(index, line_no, clean_messages(prompt), reference, patterns)


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
    loss_note: str | None = None  # why reference loss (preference scores, for pairs) is n/a, when a backend said so
    pair_scores: list[PairScore | None] | None = None  # per preference pair; None for chat examples


def run_model(
    backend: Backend, model: str, examples: list[Example], options: EvalOptions, progress: Progress | None = None,
    label: str = "",
) -> ModelRun:
    """Answer (and score) every example, `options.concurrency` at a time; results stay in example order."""
    backend.check_model(model)
    state = {"can_score": options.score_loss and options.template != "none", "done": 0}
    lock = threading.Lock()
    if options.warmup:
        backend.generate(model, examples[0].messages, 1, options.temperature)

    def one(ex: Example) -> tuple[Generation, tuple[float, int] | None, str | None]:
        gen = backend.generate(model, ex.messages, options.max_tokens or auto_max_tokens(ex), options.temperature)
        score, note = None, None
        if state["can_score"] and ex.reference is not None:
            score, note = _score(backend, model, ex, options.template)
            if score is None:  # one unsupported answer means the backend cannot score at all: stop asking
                state["can_score"] = False
        with lock:
            state["done"] += 1
            if progress:
                progress(label or model, state["done"], len(examples))
        return gen, score, note

    workers = max(1, options.concurrency or getattr(backend, "default_concurrency", 1))
    if workers == 1:
        results = [one(ex) for ex in examples]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval") as pool:
            results = list(pool.map(one, examples))  # map keeps the examples' order
    gens = [g for g, _, _ in results]
    scores = [s for _, s, _ in results]
    loss_note = next((n for _, _, n in results if n is not None), None)
    grades = [m.grade_answer(g.text, ex.reference, ex.patterns, options.check_json, options.schema)
              for g, ex in zip(gens, examples, strict=True)]
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
    examples: list[Example] | list[PreferencePair]
    model_run: ModelRun
    baseline_run: ModelRun
    options: EvalOptions
    job: dict | None = None  # the fine-tuning job the model came from, when known
    loss_curve: list[dict] | None = None  # rows of the job's fine-tune-results CSV

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def is_preference(self) -> bool:
        """True when the test set was preference pairs (scored, not answered)."""
        return self.model_run.pair_scores is not None

    @property
    def unit(self) -> str:
        """What the test set counts, for messages: "pairs" or "examples"."""
        return "pairs" if self.is_preference else "examples"

    def summary(self) -> dict:
        """What `--json` prints: {"model": {metrics}, "baseline": {metrics}, "n": int}, plus "notes": [str]
        saying why a metric is n/a when one is (the documented shape stays exact in the common case)."""
        out = {"model": self.model_run.metrics, "baseline": self.baseline_run.metrics, "n": self.n}
        notes = self.notes()
        return out | {"notes": notes} if notes else out

    def notes(self) -> list[str]:
        """Why a metric is n/a, e.g. "reference loss n/a for m: the server answered 404 ... to /v1/completions"."""
        what = "preference scores" if self.is_preference else "reference loss"
        return [f"{what} n/a for {run.model}: {run.loss_note}"
                for run in (self.model_run, self.baseline_run) if run.loss_note]

    def rows(self) -> list[dict]:
        """One dict per example (per pair: both models' log-probs, see preference.pair_rows)."""
        if self.is_preference:
            from tunehouse.eval.preference import pair_rows

            return pair_rows(self.examples, self.model_run, self.baseline_run)
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
        """The tuned model's failures: regressions (baseline passed) first, then highest reference loss.

        For pairs: the pairs the model ranks wrong, regressions first, then the most negative margin."""
        if self.is_preference:
            from tunehouse.eval.preference import worst_pairs

            return worst_pairs(self.rows(), k)
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
            "test_format": "preference" if self.is_preference else "chat",
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

    A file of preference pairs is scored (preference.run_pairs), not answered. `baseline_backend` serves the
    baseline from another server (e.g. an OpenAI `ft:` model compared with its tunehouse replacement); by
    default both models come from `backend`.
    """
    options = options or EvalOptions()
    baseline_backend = baseline_backend or backend
    examples = load_test_set(test_file, max_examples)
    backend.check_model(model)
    baseline_backend.check_model(baseline)
    if isinstance(examples[0], Example):
        run = run_model
    else:
        from tunehouse.eval.preference import run_pairs as run
    model_run = run(backend, model, examples, options, progress, "model")
    baseline_options = options
    if baseline_backend is not backend and options.template == "auto":
        # Another server's model id says nothing reliable about its chat format (a tunehouse Gemma may be
        # registered as "gpt-4o-mini-..."), and the two losses only compare when both score the same text:
        # the baseline is scored in the model's format.
        baseline_options = replace(options, template=guess_template(model))
    baseline_run = run(baseline_backend, baseline, examples, baseline_options, progress, "baseline")
    return EvalResult(model, baseline, str(test_file), examples, model_run, baseline_run, options)

