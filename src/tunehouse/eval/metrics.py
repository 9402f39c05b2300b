"""Evaluation metrics: pure functions over strings and numbers (no torch, no HTTP), one rule each.

The rules, as documented in the README:
- exact_match: the answer equals the reference after `normalize_text` (Unicode NFKC, case folded, runs of
  whitespace collapsed to one space, leading/trailing whitespace dropped).
- contains: the normalized reference occurs inside the normalized answer (the model may add words around it).
- pattern_pass: every regex in the example's `expected_patterns` matches somewhere in the raw answer
  (Python `re.search`, case-sensitive unless the pattern says `(?i)`).
- pass: the per-example verdict used for "worst failures": pattern_pass when the example has patterns,
  else json_schema when a schema is given, else contains.
- json_valid: the answer (one optional ```json fence stripped) parses as JSON; json_schema: it also conforms
  to the JSON schema given.
- loss: mean negative log-likelihood per token of the reference answer given the prompt, pooled over all
  scored tokens of all examples; perplexity = exp(loss).
- latency_s / completion_tokens / prompt_tokens: means per request.
- preference_accuracy (preference pairs): the share of pairs whose preferred output has the strictly higher
  log-probability given the prompt, each output's log-probability summed over its tokens and its end-of-turn
  marker (what DPO compares); a tie counts as wrong. preference_margin: the mean of log p(preferred) -
  log p(non-preferred) in nats. For pairs, loss/perplexity are those of the preferred outputs.
A metric that does not apply to any example (no references, no patterns, no scores) is None ("n/a").
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field

_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.DOTALL)


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return _WS.sub(" ", text).strip().casefold()


def exact_match(answer: str, reference: str) -> bool:
    return normalize_text(answer) == normalize_text(reference)


def contains(answer: str, reference: str) -> bool:
    return normalize_text(reference) in normalize_text(answer)


def compile_patterns(patterns: list[str]) -> list[re.Pattern]:
    """Compile up front so a bad regex is reported as bad input, not as a model failure."""
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"invalid regex in expected_patterns {p!r}: {e}") from None
    return compiled


def patterns_pass(answer: str, patterns: list[str]) -> bool:
    return all(p.search(answer) for p in compile_patterns(patterns))


def strip_json_fence(text: str) -> str:
    text = text.strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def parse_json(text: str) -> tuple[bool, object]:
    try:
        return True, json.loads(strip_json_fence(text))
    except ValueError:
        return False, None


def json_valid(answer: str) -> bool:
    return parse_json(answer)[0]


def json_conforms(answer: str, schema: dict) -> bool:
    import jsonschema

    ok, value = parse_json(answer)
    if not ok:
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def check_schema(schema: object) -> dict:
    """A schema must itself be valid before we grade answers against it."""
    import jsonschema

    if not isinstance(schema, dict):
        raise ValueError("JSON schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"invalid JSON schema: {e.message}") from None
    return schema


def pooled_loss(scores: list[tuple[float, int]]) -> float | None:
    """(sum of token NLLs, token count) per example -> mean NLL per token over all tokens, or None."""
    total = sum(s for s, n in scores if n > 0)
    tokens = sum(n for _, n in scores if n > 0)
    return total / tokens if tokens else None


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    # exp overflows past ~709; such a model is hopeless anyway and "inf" says so honestly.
    return math.exp(loss) if loss < 700 else math.inf


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class ExampleGrade:
    """One model's verdicts on one example; None where the rule does not apply."""

    exact_match: bool | None = None
    contains: bool | None = None
    pattern_pass: bool | None = None
    json_valid: bool | None = None
    json_schema: bool | None = None
    passed: bool = False
    details: dict = field(default_factory=dict)


def grade_answer(
    answer: str,
    reference: str | None,
    patterns: list[str] | None,
    check_json: bool = False,
    schema: dict | None = None,
) -> ExampleGrade:
    g = ExampleGrade()
    if reference is not None:
        g.exact_match = exact_match(answer, reference)
        g.contains = contains(answer, reference)
    if patterns:
        missed = [p.pattern for p in compile_patterns(patterns) if not p.search(answer)]
        g.pattern_pass = not missed
        if missed:
            g.details["missed_patterns"] = missed
    if check_json or schema is not None:
        g.json_valid = json_valid(answer)
    if schema is not None:
        g.json_schema = json_conforms(answer, schema)
    if g.pattern_pass is not None:
        g.passed = g.pattern_pass
    elif g.json_schema is not None:
        g.passed = g.json_schema
    else:
        g.passed = bool(g.contains)
    return g


def rate(values: list[bool | None]) -> float | None:
    """Fraction true among the examples the rule applies to (None values skipped)."""
    applicable = [v for v in values if v is not None]
    return sum(applicable) / len(applicable) if applicable else None


def summarize(
    grades: list[ExampleGrade],
    latencies: list[float],
    completion_tokens: list[int],
    prompt_tokens: list[int],
    scores: list[tuple[float, int]] | None,
) -> dict:
    """Per-model metrics dict; every key is always present, None meaning n/a."""
    loss = pooled_loss(scores) if scores else None
    return {
        "exact_match": rate([g.exact_match for g in grades]),
        "contains": rate([g.contains for g in grades]),
        "pattern_pass": rate([g.pattern_pass for g in grades]),
        "pass_rate": rate([g.passed for g in grades]),
        "json_valid": rate([g.json_valid for g in grades]),
        "json_schema": rate([g.json_schema for g in grades]),
        "loss": loss,
        "perplexity": perplexity(loss),
        "latency_s": mean(latencies),
        "completion_tokens": mean([float(t) for t in completion_tokens]),
        "prompt_tokens": mean([float(t) for t in prompt_tokens]),
        "preference_accuracy": None,
        "preference_margin": None,
    }


def preference_accuracy(logps: list[tuple[float, float]]) -> float | None:
    """(log p(preferred), log p(non-preferred)) per pair -> share of pairs ranked right; a tie is not right."""
    return sum(pref > non for pref, non in logps) / len(logps) if logps else None


def preference_margin(logps: list[tuple[float, float]]) -> float | None:
    """Mean of log p(preferred) - log p(non-preferred) over the pairs, in nats."""
    return mean([pref - non for pref, non in logps])


def summarize_pairs(logps: list[tuple[float, float]] | None, scores: list[tuple[float, int]] | None) -> dict:
    """Per-model metrics of preference pairs, the same keys as `summarize` (nothing is generated, so the answer
    metrics are None). `scores`: (sum of NLLs, tokens) of each preferred output, for its loss."""
    loss = pooled_loss(scores) if scores else None
    return {key: None for key in ALL_METRICS} | {
        "preference_accuracy": preference_accuracy(logps or []),
        "preference_margin": preference_margin(logps or []),
        "loss": loss,
        "perplexity": perplexity(loss),
    }


# Metrics where bigger is better, in the order tables and charts show them.
RATE_METRICS = ["exact_match", "contains", "pattern_pass", "pass_rate", "json_valid", "json_schema",
                "preference_accuracy"]
LOWER_IS_BETTER = ["loss", "perplexity", "latency_s"]
ALL_METRICS = RATE_METRICS + ["preference_margin", "loss", "perplexity", "latency_s", "completion_tokens",
                              "prompt_tokens"]
