"""What one migration came to (`Migration`), the dry-run summary of a plan, and report.md / report.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunehouse.migration.jobs import Plan


@dataclass
class Migration:
    """The outcome of migrating one source job; `to_json` is the documented `--json` entry."""

    source_job: str
    source_model: str | None
    job: str | None = None
    fine_tuned_model: str | None = None
    status: str = "pending"  # the target job's final status, "skipped" or "dry-run"
    skipped: str | None = None
    evaluation: dict | None = None  # `tunehouse eval --json`'s {"model", "baseline", "n"}
    parity: list[str] = field(default_factory=list)  # one verdict sentence per metric
    headline: str | None = None
    plan: dict | None = None
    notes: list[str] = field(default_factory=list)
    report_dir: str | None = None

    @property
    def migrated(self) -> bool:
        return self.status in ("succeeded", "dry-run")

    def skip(self, why: str) -> Migration:
        self.status, self.skipped = "skipped", why
        return self

    def to_json(self) -> dict:
        return {"source_job": self.source_job, "source_model": self.source_model, "job": self.job,
                "fine_tuned_model": self.fine_tuned_model, "status": self.status, "evaluation": self.evaluation,
                "skipped": self.skipped}

    def details(self) -> dict:
        return {**self.to_json(), "parity": self.parity, "plan": self.plan, "notes": self.notes,
                "evaluation_report": self.report_dir}


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "not listed"
    return f"${value:.2f}" if value >= 0.01 else f"${value:.4f}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{seconds / 60:.1f} min"


def openai_base(model: str) -> str:
    """The OpenAI base a job trained on: an ft: model's base segment, else the model itself."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else model


def plan_summary(plan: Plan) -> dict:
    """What the dry run shows: files, examples, tokens, local time, and what OpenAI charged for the same."""
    job, est = plan.source, plan.report.estimate or {}
    base = openai_base(job.model)
    prices = est.get("openai_cost_usd") or {}
    files = [{"id": f.id, "filename": f.filename, "bytes": f.bytes, "origin": f.origin}
             for f in (plan.training, plan.validation) if f is not None]
    return {
        "target_model": plan.target_model, "method": job.method, "hyperparameters": job.hyperparameters,
        "suffix": job.suffix, "seed": job.seed, "metadata": plan.metadata, "files": files,
        "examples": plan.report.examples, "holdout": plan.holdout, "n_epochs": est.get("n_epochs"),
        "trained_tokens_estimate": est.get("total_tokens"), "source_trained_tokens": job.trained_tokens,
        "tokens_are_estimates": plan.report.tokens_are_estimates,
        "local_training_seconds": est.get("training_seconds"), "throughput": est.get("throughput"),
        "openai_base_model": base, "openai_cost_usd": prices.get(base),
        # What the source itself counted (its tokenizer, its epochs), at the same price.
        "openai_billed_usd": _billed(job.trained_tokens, est, base),
        "openai_cost_usd_all": prices, "openai_prices": est.get("openai_prices"),
        "validation_errors": plan.report.blocking_error_count(),
    }


def _billed(trained_tokens: int | None, est: dict, base: str) -> float | None:
    total, cost = est.get("total_tokens"), (est.get("openai_cost_usd") or {}).get(base)
    if not trained_tokens or not total or cost is None:
        return None
    return round(cost * trained_tokens / total, 4)


def write_report(migrations: list[Migration], out_dir: Path, context: dict) -> dict[str, Path]:
    """report.json (every detail) and report.md (the table and each job's parity) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    data = {**context, "migrations": [m.details() for m in migrations]}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(migrations, context), encoding="utf-8")
    return paths


def render_markdown(migrations: list[Migration], context: dict) -> str:
    done = sum(m.migrated for m in migrations)
    lines = [f"# Migration from {context.get('source')} to {context.get('target')}", "",
             f"{done} of {len(migrations)} job(s) {'can be' if context.get('dry_run') else 'were'} migrated.", "",
             "| source job | source model | new job | new model | status | parity |", "|---|---|---|---|---|---|"]
    for m in migrations:
        cells = [m.source_job, m.source_model, m.job, m.fine_tuned_model, m.status, m.headline or m.skipped]
        lines.append("| " + " | ".join(str(c or "").replace("|", "\\|") for c in cells) + " |")
    for m in migrations:
        lines += ["", f"## {m.source_job}", ""]
        if m.skipped:
            lines.append(f"Skipped: {m.skipped}")
        if m.plan:
            p = m.plan
            billed = f" (source's own count: {p['source_trained_tokens']} tokens, {fmt_usd(p['openai_billed_usd'])})" \
                if p["openai_billed_usd"] is not None else ""
            lines.append(f"- {p['examples']} examples, ~{p['trained_tokens_estimate']} trained tokens "
                         f"({p['n_epochs']} epochs), {fmt_seconds(p['local_training_seconds'])} of local training on "
                         f"{p['target_model']}; the same training at OpenAI ({p['openai_base_model']}): "
                         f"{fmt_usd(p['openai_cost_usd'])}{billed}")
            for f in p["files"]:
                lines.append(f"- file {f['id']} ({f['filename']}, {f['bytes']} bytes): {f['origin']}")
        lines += [f"- parity: {text}" for text in m.parity]
        lines += [f"- note: {note}" for note in m.notes]
        if m.report_dir:
            lines.append(f"- evaluation report: {m.report_dir}/report.md")
    return "\n".join(lines) + "\n"
