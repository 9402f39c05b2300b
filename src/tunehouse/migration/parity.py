"""Parity: the new local model against the old `ft:` model it replaces, on the same examples, and the verdict.

The local model answers on the target server and the old one on the source, through the `tunehouse eval`
comparison (`evaluate` with a second backend). The verdict says per metric whether the local model matches,
beats or trails the old one, in words a user can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import openai

from tunehouse.eval.comparison import EvalOptions, EvalResult, Example, Progress, evaluate, load_test_set
from tunehouse.eval.metrics import LOWER_IS_BETTER, RATE_METRICS, parse_json
from tunehouse.eval.openai_backend import OpenAIBackend
from tunehouse.eval.report import LABELS, fmt
from tunehouse.migration.source import api_message

# Differences smaller than this count as a match: half a point on rates, 0.5% relative on the rest.
RATE_TOLERANCE = 0.005
RELATIVE_TOLERANCE = 0.005
VERDICT_METRICS = [*RATE_METRICS, "preference_margin", "loss", "perplexity", "latency_s"]
HEADLINE_METRICS = ("exact_match", "pass_rate", "preference_accuracy")


@dataclass
class Comparison:
    """One metric of the local model against the old one."""

    metric: str
    local: float
    old: float
    verdict: str  # "matches" | "beats" | "trails"
    text: str


def check_source_model(client: openai.OpenAI, model: str | None) -> str | None:
    """None when the old model still answers (models.retrieve succeeds), else why parity cannot run."""
    if not model:
        return "the source job has no fine-tuned model"
    try:
        client.models.retrieve(model)
    except openai.APIStatusError as e:
        return f"the old model {model} does not answer on the source: {api_message(e)}"
    except openai.APIConnectionError:
        return f"cannot reach the source at {client.base_url} to ask for {model}"
    return None


def default_options(test_path: Path) -> EvalOptions:
    """Greedy decoding, as `tunehouse eval`; JSON validity is scored when every reference is JSON. Preference
    pairs (a DPO job's files) are scored, not answered: the defaults apply as they are."""
    items = load_test_set(test_path)
    refs = [e.reference for e in items if isinstance(e, Example) and e.reference is not None]
    all_json = bool(refs) and all(parse_json(r)[0] and r.strip()[:1] in "{[" for r in refs)
    return EvalOptions(check_json=all_json)


def evaluate_parity(target: openai.OpenAI, source: openai.OpenAI, model: str, old_model: str, test_path: Path,
                    max_examples: int | None = None, progress: Progress | None = None,
                    options: EvalOptions | None = None) -> EvalResult:
    """`model` on the target vs `old_model` on the source, on the same examples with the same options."""
    return evaluate(OpenAIBackend(target), model, old_model, test_path, options or default_options(test_path),
                    max_examples, progress, baseline_backend=OpenAIBackend(source))


def compare_metrics(summary: dict) -> list[Comparison]:
    """Every metric both models have, with its verdict and a sentence like
    "exact match: local 40.0% vs old 42.0% (trails by 2.0 pts)"."""
    out = []
    for metric in VERDICT_METRICS:
        local, old = summary["model"].get(metric), summary["baseline"].get(metric)
        if local is None or old is None or math.isinf(local) or math.isinf(old):
            continue
        diff = local - old
        if metric in RATE_METRICS:
            same, gap = abs(diff) < RATE_TOLERANCE, f"{100 * abs(diff):.1f} pts"
        else:
            same, gap = abs(diff) <= RELATIVE_TOLERANCE * max(abs(old), 1e-9), fmt(metric, abs(diff))
        better = diff < 0 if metric in LOWER_IS_BETTER else diff > 0
        verdict = "matches" if same else "beats" if better else "trails"
        detail = "matches" if same else f"{verdict} by {gap}"
        out.append(Comparison(metric, local, old, verdict,
                              f"{LABELS[metric]}: local {fmt(metric, local)} vs old {fmt(metric, old)} ({detail})"))
    return out


def headline(comparisons: list[Comparison]) -> str:
    """The one-line summary for the table: exact match and pass rate (or whatever was measured)."""
    chosen = [c for c in comparisons if c.metric in HEADLINE_METRICS] or comparisons[:1]
    return "; ".join(c.text for c in chosen) or "no metric both models have"
