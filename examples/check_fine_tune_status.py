"""Show a fine-tuning job's status and latest events, or list recent jobs.

    python examples/check_fine_tune_status.py JOB_ID
    python examples/check_fine_tune_status.py --list [--limit 10]

Server: env TUNEHOUSE_BASE_URL (default http://127.0.0.1:8000/v1).
"""

from __future__ import annotations

import argparse
import os
import sys

from openai import OpenAI


def make_client() -> OpenAI:
    return OpenAI(
        base_url=os.environ.get("TUNEHOUSE_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("TUNEHOUSE_API_KEY", "tunehouse"),
    )


def show_job(client: OpenAI, job_id: str, n_events: int) -> None:
    job = client.fine_tuning.jobs.retrieve(job_id)
    print(f"Job:     {job.id}")
    print(f"Status:  {job.status}")
    print(f"Model:   {job.model}")
    if job.fine_tuned_model:
        print(f"Result:  {job.fine_tuned_model}")
    if job.trained_tokens:
        print(f"Trained tokens: {job.trained_tokens}")
    if job.error and job.error.message:
        print(f"Error:   {job.error.message} ({job.error.code})")
    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job_id, limit=n_events)
    print("Recent events (oldest first):")
    for event in reversed(events.data):
        print(f"  [{event.level}] {event.message}")


def list_jobs(client: OpenAI, limit: int) -> None:
    jobs = client.fine_tuning.jobs.list(limit=limit)
    if not jobs.data:
        print("No fine-tuning jobs.")
    for job in jobs.data:
        print(f"{job.id}  {job.status:<16} {job.model}  {job.fine_tuned_model or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--list", action="store_true", help="list recent jobs instead")
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    if not args.list and not args.job_id:
        parser.error("give a JOB_ID or --list")
    client = make_client()
    if args.list:
        list_jobs(client, args.limit)
    else:
        show_job(client, args.job_id, args.limit)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # an unknown id or no server: one line, not a traceback
        sys.exit(f"Error: {e}")
