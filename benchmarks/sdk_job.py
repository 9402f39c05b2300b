"""One fine-tuning job through the official `openai` SDK, as a user would run it; the `auto` rows of docs/training.md.

    .venv/bin/tunehouse serve &        # a fresh TUNEHOUSE_DATA_DIR; the job's own time does not depend on it
    .venv/bin/python benchmarks/sdk_job.py ../shared/datasets/wikisql_train.jsonl [--seed 0] \
        [--hyperparameters '{"learning_rate_multiplier": 1.0}'] [--base-url http://127.0.0.1:8000/v1]

Uploads the file, creates a supervised job with only the given hyperparameters (none: every one `auto`), waits,
and prints one JSON line: the resolved hyperparameters, the job's time from `created_at` to `finished_at`, its
trained tokens, the full validation losses and the step the fine-tuned model was taken from (its events), and the
model id. Score the result with `tunehouse eval --model ID --test FILE` (through the server), or for WikiSQL
with `benchmarks/train_hparams.py --adapter DATA_DIR/jobs/JOB_ID/adapter --em generate` (the sweep's scorer).
"""

from __future__ import annotations

import argparse
import json
import re
import time

from openai import OpenAI

FULL_VALID = re.compile(r"^Step (\d+)/\d+: .*full validation loss=([0-9.]+)")
KEPT = re.compile(r"^Fine-tuned model = checkpoint of step (\d+)")


def run_job(client: OpenAI, path: str, hyperparameters: dict, seed: int | None) -> dict:
    with open(path, "rb") as f:
        upload = client.files.create(file=f, purpose="fine-tune")
    upload = client.files.wait_for_processing(upload.id, poll_interval=1.0)
    if upload.status != "processed":
        raise SystemExit(f"{path} was not accepted: {upload.status_details}")
    optional = {"seed": seed} if seed is not None else {}
    job = client.fine_tuning.jobs.create(model="gemma-3-270m", training_file=upload.id, **optional,
                                         method={"type": "supervised",
                                                 "supervised": {"hyperparameters": hyperparameters}})
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    return summarize(client, job.id, hyperparameters)


def summarize(client: OpenAI, job_id: str, hyperparameters: dict) -> dict:
    job = client.fine_tuning.jobs.retrieve(job_id)
    # 1000 is the API's page limit; iterating the page fetches the rest
    messages = [e.message for e in reversed(list(client.fine_tuning.jobs.list_events(job.id, limit=1000)))]
    curve = [(int(m[1]), float(m[2])) for m in map(FULL_VALID.match, messages) if m]
    kept = [int(m[1]) for m in map(KEPT.match, messages) if m]
    return {"job": job.id, "status": job.status, "given": hyperparameters, "seed": job.seed,
            "resolved": job.hyperparameters.model_dump(), "job_seconds": (job.finished_at or 0) - job.created_at,
            "trained_tokens": job.trained_tokens, "full_valid_loss": curve, "kept_step": kept[0] if kept else None,
            "model": job.fine_tuned_model}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("training_file")
    p.add_argument("--hyperparameters", default="{}", help="JSON object; {} = every hyperparameter auto")
    p.add_argument("--seed", type=int, help="the job's seed (default: the server picks one, as OpenAI's)")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    args = p.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="tunehouse")
    print(json.dumps(run_job(client, args.training_file, json.loads(args.hyperparameters), args.seed)), flush=True)


if __name__ == "__main__":
    main()
