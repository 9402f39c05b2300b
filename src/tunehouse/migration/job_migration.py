"""One source job, start to end: plan -> (dry run stops here) -> start on the target -> wait -> parity."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import openai

from tunehouse.eval.comparison import EvalError, Progress
from tunehouse.eval.report import write_report as write_eval_report
from tunehouse.migration.jobs import MAX_METADATA_KEYS, Plan, plan_job, resolve_target_model, start_job, wait_for_job
from tunehouse.migration.outcome import Migration, plan_summary
from tunehouse.migration.parity import check_source_model, compare_metrics, evaluate_parity, headline
from tunehouse.migration.source import MigrationError, SourceJob, api_message

log = logging.getLogger("tunehouse.migration")


@dataclass
class MigrateOptions:
    model: str | None = None
    model_map: dict[str, str] = field(default_factory=dict)
    files_dir: Path | None = None
    out_dir: Path = Path("tunehouse-migrate")
    evaluate: bool | None = None  # None: when the old model still answers
    holdout_fraction: float = 0.1
    max_eval_examples: int | None = 100
    dry_run: bool = False
    poll_seconds: float = 1.0
    device: str = "cpu"
    distill_prompts: Path | None = None  # the old model answers these; its chats are added to the training file


@dataclass
class Hooks:
    """How the caller shows progress: the target job's status, and the parity evaluation's."""

    on_job: Callable[[dict, dict | None], None] | None = None
    on_eval: Progress | None = None


def migrate_job(source: openai.OpenAI, target: openai.OpenAI | None, job: SourceJob, options: MigrateOptions,
                hooks: Hooks | None = None) -> Migration:
    """Migrate one job; any reason it cannot be is a skip with that reason, never an exception."""
    hooks = hooks or Hooks()
    result = Migration(job.id, job.fine_tuned_model)
    try:
        if options.distill_prompts is not None and job.method == "dpo":
            # The teacher's answers are chats; a DPO job trains on preference pairs, so they cannot join its file.
            raise MigrationError("--distill-prompts adds chats to the training file, but this is a DPO job "
                                 "(preference pairs); migrate it without --distill-prompts")
        plan = _plan(source, job, options, result)
        result.plan = plan_summary(plan)
        result.notes += plan.notes
        if options.dry_run or target is None:
            if options.distill_prompts is not None:
                result.notes.append(_distill_preview(options.distill_prompts))
            result.status = "dry-run"
            return result
        if options.distill_prompts is not None:
            result.notes.append(add_teacher_answers(source, plan, options.distill_prompts))
        _run(source, target, plan, options, hooks, result)
    except MigrationError as e:
        result.skip(str(e))
    except openai.APIStatusError as e:
        result.skip(f"{e.request.url.host}:{e.request.url.port} answered {api_message(e)}")
    except openai.APIConnectionError as e:
        result.skip(f"lost the connection to {e.request.url.host}:{e.request.url.port}")
    return result


def _distill_preview(prompts: Path) -> str:
    from tunehouse.migration.prompts import PromptFileError, read_prompts

    try:
        n = len(read_prompts(prompts))
    except PromptFileError as e:
        raise MigrationError(f"--distill-prompts {prompts}: {e}") from None
    return f"would ask the old model {n} prompts from {prompts} and add its answers to the training file"


def add_teacher_answers(source: openai.OpenAI, plan: Plan, prompts: Path) -> str:
    """Distil the old model on `prompts` and train on its answers too: the training file becomes source + teacher.

    Resumable like `tunehouse distill` (answers are kept next to the report), so a re-run asks only what is left.
    """
    from tunehouse.migration.distill import DistillError, Teacher, distill

    out = plan.training_path.parent / "distilled.jsonl"
    try:
        summary = distill(source, Teacher(model=plan.source.fine_tuned_model or ""), prompts, out)
    except DistillError as e:
        raise MigrationError(f"distillation from {plan.source.fine_tuned_model} failed: {e}") from None
    combined = plan.training_path.parent / "train-with-teacher.jsonl"
    data = plan.training_path.read_bytes()
    combined.write_bytes(data + (b"" if not data or data.endswith(b"\n") else b"\n") + out.read_bytes())
    plan.training_path = combined
    plan.metadata["migration_distilled"] = f"{summary.written} teacher chats"
    if len(plan.metadata) > MAX_METADATA_KEYS:
        raise MigrationError(f"with the key 'migration_distilled' the job metadata is over {MAX_METADATA_KEYS} keys")
    missing = summary.total - summary.written
    return (f"distilled {summary.written} of {summary.total} prompts from the old model into the training file"
            + (f" ({missing} without a usable answer: rerun to ask them again)" if missing else ""))


def _plan(source: openai.OpenAI, job: SourceJob, options: MigrateOptions, result: Migration) -> Plan:
    target_model = resolve_target_model(job.model, options.model, options.model_map)
    evaluate = options.evaluate is not False
    if evaluate and job.status == "succeeded" and job.method != "reinforcement":
        why = check_source_model(source, job.fine_tuned_model)
        if why:
            result.notes.append(f"parity not measured: {why}")
            evaluate = False
    return plan_job(source, job, target_model, options.files_dir, options.out_dir / job.id, evaluate,
                    options.holdout_fraction, options.device)


def _run(source: openai.OpenAI, target: openai.OpenAI, plan: Plan, options: MigrateOptions, hooks: Hooks,
         result: Migration) -> None:
    created = start_job(target, plan)
    result.job = created["id"]
    final = wait_for_job(target, created["id"], options.poll_seconds, hooks.on_job)
    result.status = final["status"]
    result.fine_tuned_model = final.get("fine_tuned_model")
    if final["status"] != "succeeded":
        error = (final.get("error") or {}).get("message")
        result.notes.append(f"the target job ended {final['status']}" + (f": {error}" if error else ""))
        return
    if plan.test_path is None or not result.fine_tuned_model or not plan.source.fine_tuned_model:
        return
    try:
        evaluation = evaluate_parity(target, source, result.fine_tuned_model, plan.source.fine_tuned_model,
                                     plan.test_path, options.max_eval_examples, hooks.on_eval)
    except EvalError as e:
        log.warning("parity evaluation of %s failed: %s", plan.source.id, e)
        result.notes.append(f"parity evaluation failed: {e}")
        return
    what = f"{plan.holdout} held-out training examples" if plan.holdout else "the source job's validation file"
    result.evaluation = evaluation.summary()
    comparisons = compare_metrics(result.evaluation)
    result.parity = [f"on {evaluation.n} examples of {what}"] + [c.text for c in comparisons]
    result.headline = headline(comparisons)
    result.report_dir = str(options.out_dir / plan.source.id / "parity")
    write_eval_report(evaluation, result.report_dir)
