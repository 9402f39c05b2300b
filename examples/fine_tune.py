"""Upload a chat JSONL file, wait until the server has processed it, create a fine-tuning job, print its id.

The seed workflow with the official `openai` SDK, unchanged but for `base_url`:

    python examples/fine_tune.py train.jsonl [--validation-file valid.jsonl] [--model gemma-3-270m]
           [--suffix my-model] [--epochs N]

Server: env TUNEHOUSE_BASE_URL (default http://127.0.0.1:8000/v1); key: env TUNEHOUSE_API_KEY (any value works
on a single-user server).
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


def upload(client: OpenAI, path: str) -> str:
    with open(path, "rb") as f:
        file = client.files.create(file=f, purpose="fine-tune")
    file = client.files.wait_for_processing(file.id, poll_interval=1.0)
    if file.status != "processed":
        sys.exit(f"{path} was not accepted: {file.status_details}")
    print(f"Uploaded {path} as {file.id}", file=sys.stderr)
    return file.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("training_file")
    parser.add_argument("--validation-file")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--suffix")
    parser.add_argument("--epochs", type=int, help="n_epochs (default: auto)")
    args = parser.parse_args()

    client = make_client()
    training_file = upload(client, args.training_file)
    validation_file = upload(client, args.validation_file) if args.validation_file else None
    hyperparameters = {"n_epochs": args.epochs} if args.epochs else {}
    optional = {"validation_file": validation_file, "suffix": args.suffix}
    job = client.fine_tuning.jobs.create(
        model=args.model,
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        **{k: v for k, v in optional.items() if v is not None},
    )
    print(f"Created fine-tuning job {job.id} (status: {job.status})", file=sys.stderr)
    print(job.id)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a bad file or no server: one line, not a traceback
        sys.exit(f"Error: {e}")
