"""Preference pairs (DPO's training format) as a test set: each pair is scored, not answered.

A pair is `{"input": {"messages": [...], "tools"?}, "preferred_output": [msg], "non_preferred_output": [msg]}`
(or the `*_completion` spellings). Each output is rendered after the prompt exactly as DPO training renders it
(`data.render.preference_chats`: the chat format's turns, the output's content then its tool calls), and its
log-probability is summed over its tokens plus the end-of-turn marker, through `Backend.score` (on a server:
`/v1/completions` with `echo` + `logprobs`, the reference loss's path). A pair is ranked right when the
preferred output is strictly more likely. Nothing is generated: the metric needs only the two scores per pair,
and answers to the prompts are what a chat test file measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunehouse.data.formats import check_preference
from tunehouse.data.render import assistant_text, preference_chats
from tunehouse.eval import metrics as m
from tunehouse.eval.comparison import (
    Backend,
    EvalError,
    EvalOptions,
    ModelRun,
    Progress,
    ScoreUnavailable,
    clean_messages,
)


@dataclass
class PreferencePair:
    index: int
    line: int
    messages: list[dict]  # the prompt: input.messages, training-only keys dropped
    preferred: str  # the preferred output's text as training renders it (content, then tool calls)
    non_preferred: str
    tools: list[dict] | None = None  # input.tools, rendered into the prompt as training does


@dataclass
class PairScore:
    """One model's log-probabilities of both outputs of a pair, each summed over its tokens + end-of-turn."""

    logp_preferred: float
    logp_non_preferred: float
    preferred_tokens: int
    non_preferred_tokens: int

    @property
    def margin(self) -> float:
        return self.logp_preferred - self.logp_non_preferred

    @property
    def correct(self) -> bool:
        return self.logp_preferred > self.logp_non_preferred  # a tie is not a preference


def parse_pair(obj: object, line_no: int, index: int) -> PreferencePair:
    """One JSONL line of a preference file; every malformation is an EvalError naming the line."""
    where = f"line {line_no}"
    if not isinstance(obj, dict):
        raise EvalError(f"{where}: expected a JSON object with 'input', 'preferred_output' and "
                        "'non_preferred_output'")
    problems = check_preference(obj)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise EvalError(f"{where}: {problems[0][1]}{more}")
    try:
        preferred, rejected = preference_chats(obj)
        texts = assistant_text(preferred["messages"][-1]), assistant_text(rejected["messages"][-1])
    except ValueError as e:  # e.g. two output messages: DPO trains on exactly one per side
        raise EvalError(f"{where}: {e}") from None
    if texts[0] == texts[1]:
        raise EvalError(f"{where}: the preferred and non-preferred outputs are identical; no model can rank them")
    return PreferencePair(index, line_no, clean_messages(preferred["messages"][:-1]), texts[0], texts[1],
                          obj["input"].get("tools") or None)


def score_pair(backend: Backend, model: str, pair: PreferencePair,
               template: str) -> tuple[PairScore | None, str | None]:
    """(score, None), or (None, why the pair could not be scored)."""
    sides = []
    for text in (pair.preferred, pair.non_preferred):
        try:
            score = backend.score(model, pair.messages, text, template, pair.tools)
        except ScoreUnavailable as e:
            return None, str(e)
        if score is None:
            return None, f"the backend gave no score for the pair on line {pair.line}"
        sides.append(score)
    (nll_pref, n_pref), (nll_non, n_non) = sides
    return PairScore(-nll_pref, -nll_non, n_pref, n_non), None


def run_pairs(backend: Backend, model: str, pairs: list[PreferencePair], options: EvalOptions,
              progress: Progress | None = None, label: str = "") -> ModelRun:
    """Score both outputs of every pair with `model` (the ModelRun has no generations or grades).

    As for reference loss, a backend that cannot score one pair cannot score any: it is not asked again, and
    the metrics are n/a with the reason in `loss_note` (a partial accuracy would not compare with the other
    model's). `options.template` is the chat format the outputs are rendered in on a server.
    """
    backend.check_model(model)
    scores: list[PairScore | None] = []
    note = None
    for i, pair in enumerate(pairs):
        score = None
        if note is None:
            score, note = score_pair(backend, model, pair, options.template)
        scores.append(score)
        if progress:
            progress(label or model, i + 1, len(pairs))
    done = [s for s in scores if s is not None]
    complete = note is None and len(done) == len(pairs)
    run = ModelRun(model, [], [], [(-s.logp_preferred, s.preferred_tokens) if s else None for s in scores],
                   loss_note=note, pair_scores=scores)
    run.metrics = m.summarize_pairs(
        [(s.logp_preferred, s.logp_non_preferred) for s in done] if complete else None,
        [(-s.logp_preferred, s.preferred_tokens) for s in done] if complete else None,
    )
    return run


def _side(score: PairScore | None) -> dict:
    """One model's numbers on one pair for report.json (None where it could not score)."""
    if score is None:
        return {"logp_preferred": None, "logp_non_preferred": None, "margin": None, "correct": None,
                "preferred_tokens": None, "non_preferred_tokens": None, "loss": None}
    return {"logp_preferred": score.logp_preferred, "logp_non_preferred": score.logp_non_preferred,
            "margin": score.margin, "correct": score.correct, "preferred_tokens": score.preferred_tokens,
            "non_preferred_tokens": score.non_preferred_tokens,
            "loss": -score.logp_preferred / score.preferred_tokens if score.preferred_tokens else None}


def pair_rows(pairs: list[PreferencePair], model_run: ModelRun, baseline_run: ModelRun) -> list[dict]:
    """Per pair: the prompt, both outputs, and each model's log-probs, margin and verdict."""
    return [{"index": p.index, "line": p.line, "prompt": p.messages, "preferred": p.preferred,
             "non_preferred": p.non_preferred, "model": _side(model_run.pair_scores[i]),
             "baseline": _side(baseline_run.pair_scores[i])}
            for i, p in enumerate(pairs)]


def worst_pairs(rows: list[dict], k: int = 5) -> list[dict]:
    """The pairs the model ranks wrong: regressions (the baseline ranked them right) first, then lowest margin."""
    wrong = [r for r in rows if r["model"]["correct"] is False]
    wrong.sort(key=lambda r: (r["baseline"]["correct"] is not True, r["model"]["margin"]))
    return wrong[:k]
