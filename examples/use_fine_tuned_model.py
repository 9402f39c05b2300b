"""Ask a fine-tuned (or any) model one question through chat completions, exactly as with OpenAI.

    python examples/use_fine_tuned_model.py ft:gemma-3-270m:tunehouse:my-model:abcd1234 "Who are you?"

Server: env TUNEHOUSE_BASE_URL (default http://127.0.0.1:8000/v1).
"""

from __future__ import annotations

import argparse
import os
import sys

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("question")
    parser.add_argument("--system", help="optional system message")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()

    client = OpenAI(
        base_url=os.environ.get("TUNEHOUSE_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("TUNEHOUSE_API_KEY", "tunehouse"),
    )
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.question})
    response = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=args.temperature
    )
    print(response.choices[0].message.content)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # an unknown model or no server: one line, not a traceback
        sys.exit(f"Error: {e}")
