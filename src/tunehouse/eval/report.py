"""Evaluation reports: the rich side-by-side table, report.md, report.json and matplotlib PNG charts."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.table import Table
from rich.text import Text

from tunehouse.eval.comparison import EvalResult
from tunehouse.eval.metrics import ALL_METRICS, LOWER_IS_BETTER, RATE_METRICS

LABELS = {
    "exact_match": "exact match",
    "contains": "contains reference",
    "pattern_pass": "expected patterns",
    "pass_rate": "pass rate",
    "json_valid": "valid JSON",
    "json_schema": "matches schema",
    "loss": "reference loss",
    "perplexity": "perplexity",
    "latency_s": "latency (s)",
    "completion_tokens": "answer tokens",
    "prompt_tokens": "prompt tokens",
    "preference_accuracy": "preference accuracy",
    "preference_margin": "preference margin (nats)",
}


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in RATE_METRICS:
        return f"{100 * value:.1f}%"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if metric in ("completion_tokens", "prompt_tokens"):
        return f"{value:.1f}"
    return f"{value:.3f}" if metric != "perplexity" else f"{value:.2f}"


def fmt_delta(metric: str, model: float | None, base: float | None) -> str:
    if model is None or base is None or math.isinf(model) or math.isinf(base):
        return ""
    d = model - base
    if metric in RATE_METRICS:
        return f"{100 * d:+.1f} pts"
    return f"{d:+.2f}" if metric == "perplexity" else f"{d:+.3f}"


def _better(metric: str, model: float | None, base: float | None) -> bool | None:
    if model is None or base is None or model == base or metric in ("completion_tokens", "prompt_tokens"):
        return None
    return model < base if metric in LOWER_IS_BETTER else model > base


def shown_metrics(result: EvalResult) -> list[str]:
    """Metrics with a value for at least one model (an all-n/a row says nothing)."""
    s = result.summary()
    return [k for k in ALL_METRICS if s["model"].get(k) is not None or s["baseline"].get(k) is not None]


def comparison_table(result: EvalResult, title: str | None = None) -> Table:
    s = result.summary()
    table = Table(title=title or f"{result.n} {result.unit} of {Path(result.test_file).name}")
    table.add_column("metric")
    table.add_column(f"baseline\n{result.baseline}", justify="right")
    table.add_column(f"model\n{result.model}", justify="right")
    table.add_column("change", justify="right")
    for k in shown_metrics(result):
        a, b = s["model"].get(k), s["baseline"].get(k)
        better = _better(k, a, b)
        style = "green" if better else "red" if better is False else ""
        table.add_row(LABELS[k], fmt(k, b), fmt(k, a), f"[{style}]{fmt_delta(k, a, b)}[/]" if style else
                      fmt_delta(k, a, b))
    if result.notes():  # a Text, so model ids like "ft:m:..." are never read as markup or :emoji: codes
        table.caption, table.caption_justify = Text("\n".join(result.notes())), "left"
    return table


def failures_table(result: EvalResult, k: int = 5) -> Table | None:
    """The model's worst failures (for pairs: the pairs it ranks wrong), or None when there are none."""
    rows = result.worst_failures(k)
    if not rows:
        return None
    if result.is_preference:
        return _pair_failures_table(rows)
    table = Table(title=f"Worst failures of the model ({len(rows)} shown)", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("input", max_width=40)
    table.add_column("expected", max_width=40)
    table.add_column("got (model)", max_width=40)
    table.add_column("baseline", max_width=30)
    for r in rows:
        table.add_row(str(r["line"]), _clip(_last_user(r["prompt"])), _clip(_expected(r)),
                      _clip(r["model"]["answer"]), "pass" if r["baseline"]["passed"] else "fail")
    return table


def _pair_failures_table(rows: list[dict]) -> Table:
    table = Table(title=f"Pairs the model ranks wrong ({len(rows)} shown)", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("input", max_width=36)
    table.add_column("preferred", max_width=36)
    table.add_column("non-preferred", max_width=36)
    table.add_column("margin\nmodel", justify="right")
    table.add_column("margin\nbaseline", justify="right")
    for r in rows:
        table.add_row(str(r["line"]), _clip(_last_user(r["prompt"])), _clip(r["preferred"]),
                      _clip(r["non_preferred"]), fmt("preference_margin", r["model"]["margin"]),
                      fmt("preference_margin", r["baseline"]["margin"]))
    return table


def all_passed_text(result: EvalResult) -> str:
    """What to say when worst_failures is empty (for pairs that could not be scored: nothing to rank)."""
    if not result.is_preference:
        return "The model passed every example."
    if result.model_run.metrics.get("preference_accuracy") is None:
        return "No pair could be scored for the model, so none is ranked (see the note)."
    return "The model ranks every pair right."


def _last_user(prompt: list[dict]) -> str:
    for msg in reversed(prompt):
        if msg["role"] == "user":
            return str(msg.get("content") or "")
    return str(prompt[-1].get("content") or "")


def _expected(row: dict) -> str:
    if row["expected_patterns"]:
        return "patterns: " + ", ".join(row["expected_patterns"])
    return row["reference"] or ""


def _clip(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, metrics.png and (for a job's model) loss_curve.png; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    data = result.to_json()
    data["loss_curve"] = result.loss_curve
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n",
                             encoding="utf-8")
    charts = write_charts(result, out)
    paths.update(charts)
    paths["md"].write_text(render_markdown(result, charts), encoding="utf-8")
    return paths


def _json_default(o: object) -> object:
    return str(o)


def render_markdown(result: EvalResult, charts: dict[str, Path]) -> str:
    s = result.summary()
    setup = ("Both outputs of each pair scored by their summed log-probability; nothing generated."
             if result.is_preference else
             f"Temperature {result.options.temperature}, max tokens {result.options.max_tokens or 'auto'}.")
    lines = [
        f"# Evaluation: `{result.model}` vs `{result.baseline}`",
        "",
        f"Test set: `{result.test_file}` ({result.n} {result.unit}). {setup}",
        "",
        "| metric | baseline | model | change |",
        "|---|---:|---:|---:|",
    ]
    for k in shown_metrics(result):
        a, b = s["model"].get(k), s["baseline"].get(k)
        lines.append(f"| {LABELS[k]} | {fmt(k, b)} | {fmt(k, a)} | {fmt_delta(k, a, b)} |")
    lines.append("")
    lines += [f"Note: {note}" for note in result.notes()] + ([""] if result.notes() else [])
    for name, path in charts.items():
        lines += [f"![{name}]({path.name})", ""]
    best = best_validation(result.loss_curve or [])
    if best:
        lines += [f"Lowest full validation loss: {best[1]:.4f} at step {best[0]} (with `n_epochs: auto` and "
                  "validation data, the fine-tuned model is that step's checkpoint; after it, the model began to "
                  "overfit).", ""]
    lines += _markdown_failures(result) + [_PAIR_RULES if result.is_preference else _ANSWER_RULES, ""]
    return "\n".join(lines)


# What the metrics mean, at the end of report.md.
_ANSWER_RULES = (
    "Metric rules: exact match compares after Unicode NFKC, case folding and whitespace collapsing; "
    "'contains' looks for the normalized reference inside the answer; expected patterns are Python regexes "
    "that must all match; reference loss is the mean per-token negative log-likelihood of the reference "
    "answer (perplexity = exp(loss))."
)
_PAIR_RULES = (
    "Metric rules: each output is rendered after the prompt in the model's chat format, as DPO training renders "
    "it, and its log-probability is summed over its tokens and the end-of-turn marker; preference accuracy is "
    "the share of pairs whose preferred output is strictly more likely, preference margin the mean of "
    "log p(preferred) - log p(non-preferred) in nats; reference loss is the mean per-token negative "
    "log-likelihood of the preferred outputs (perplexity = exp(loss))."
)


def _markdown_failures(result: EvalResult) -> list[str]:
    """The worst failures section: wrong answers, or for pairs the pairs ranked wrong."""
    failures = result.worst_failures(5)
    if not failures:
        return [all_passed_text(result), ""]
    if result.is_preference:
        lines = ["## Pairs the model ranks wrong", ""]
        for r in failures:
            lines += [
                f"### line {r['line']}",
                "",
                f"- input: {_md(_last_user(r['prompt']))}",
                f"- preferred: {_md(r['preferred'])}",
                f"- non-preferred: {_md(r['non_preferred'])}",
                f"- margin: model {fmt('preference_margin', r['model']['margin'])}, baseline "
                f"{fmt('preference_margin', r['baseline']['margin'])}",
                "",
            ]
        return lines
    lines = ["## Worst failures of the model", ""]
    for r in failures:
        lines += [
            f"### line {r['line']}",
            "",
            f"- input: {_md(_last_user(r['prompt']))}",
            f"- expected: {_md(_expected(r))}",
            f"- got: {_md(r['model']['answer'])}",
            f"- baseline ({'pass' if r['baseline']['passed'] else 'fail'}): {_md(r['baseline']['answer'])}",
            "",
        ]
    return lines


def _md(text: str) -> str:
    return "`" + _clip(text, 300).replace("`", "'") + "`" if text else "(empty)"


def write_charts(result: EvalResult, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or in CI
    import matplotlib.pyplot as plt

    charts: dict[str, Path] = {}
    s = result.summary()
    keys = [k for k in RATE_METRICS if s["model"].get(k) is not None or s["baseline"].get(k) is not None]
    if keys:
        fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(keys) + 2), 3.6))
        xs = range(len(keys))
        width = 0.38
        base = [100 * (s["baseline"].get(k) or 0) for k in keys]
        model = [100 * (s["model"].get(k) or 0) for k in keys]
        bars_b = ax.bar([x - width / 2 for x in xs], base, width, label=f"baseline ({result.baseline})",
                        color="#9e9e9e")
        bars_m = ax.bar([x + width / 2 for x in xs], model, width, label=f"model ({_short(result.model)})",
                        color="#1f77b4")
        for bars in (bars_b, bars_m):  # a 0% bar is invisible: print every value
            ax.bar_label(bars, fmt="%.0f%%", fontsize=8)
        ax.set_xticks(list(xs), [LABELS[k] for k in keys], rotation=15)
        ax.set_ylim(0, 112)
        ax.set_ylabel(f"% of {result.unit}")
        ax.set_title(f"{result.n} {result.unit} of {Path(result.test_file).name}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        charts["metrics"] = out / "metrics.png"
        fig.savefig(charts["metrics"], dpi=110)
        plt.close(fig)
    if result.loss_curve:
        path = write_loss_curve(result.loss_curve, out / "loss_curve.png", _short(result.model))
        if path:
            charts["loss_curve"] = path
    return charts


def best_validation(rows: list[dict]) -> tuple[int, float] | None:
    """(step, loss) of the lowest full validation loss in the results rows (the first on a tie), or None.

    That is the step validation-driven `auto` keeps as the fine-tuned model (training/engine.py); with explicit
    epochs it shows where overfitting began."""
    pts = [(int(r["step"]), r["full_valid_loss"]) for r in rows
           if r.get("step") is not None and r.get("full_valid_loss") is not None]
    return min(pts, key=lambda p: p[1]) if pts else None


def write_loss_curve(rows: list[dict], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for key in ("train_loss", "valid_loss", "full_valid_loss"):
        pts = [(r["step"], r[key]) for r in rows if r.get("step") is not None and r.get(key) is not None]
        if pts:
            series[key] = pts
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key.replace("_", " "),
                marker="o" if key != "train_loss" else None, markersize=3)
    best = best_validation(rows)
    if best:  # the step validation-driven auto keeps; where explicit epochs began to overfit
        ax.axvline(best[0], color="#2ca02c", linestyle="--", linewidth=1)
        ax.plot([best[0]], [best[1]], marker="*", markersize=12, color="#2ca02c", linestyle="none",
                label=f"best: step {best[0]} ({best[1]:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"Training of {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(model: str, n: int = 40) -> str:
    return model if len(model) <= n else model[: n - 1] + "…"
