"""A test double of the OpenAI HTTP API (httpx MockTransport) for the eval client plumbing only.

It is not a model: answers come from a lookup table given by the test, and logprobs from a fixed per-character
rule, so the tests can check that the runner sends the right requests and does the right arithmetic.
"""

from __future__ import annotations

import json
import time

import httpx
import openai


class FakeAPI:
    def __init__(self, answers: dict[str, dict[str, str]], logprob_per_char: dict[str, float] | None = None,
                 completions: bool = True, jobs: list[dict] | None = None, files: dict[str, str] | None = None,
                 completions_error: tuple[int, str] = (400, "echo is not supported")):
        self.answers = answers  # model -> {last user message -> answer}
        self.logprob_per_char = logprob_per_char or {}
        self.completions = completions
        self.completions_error = completions_error  # (status, message) of the refusal when not `completions`
        self.jobs = jobs or []
        self.files = files or {}
        self.requests: list[tuple[str, dict]] = []

    def client(self) -> openai.OpenAI:
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return openai.OpenAI(base_url="http://fake.test/v1", api_key="x", http_client=http, max_retries=0)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        self.requests.append((path, body))
        if path.startswith("/v1/models/"):
            model = path[len("/v1/models/"):]
            if model not in self.answers:
                return _error(404, f"The model '{model}' does not exist")
            return httpx.Response(200, json={"id": model, "object": "model", "created": 0, "owned_by": "test"})
        if path == "/v1/chat/completions":
            table = self.answers[body["model"]]
            text = table.get(body["messages"][-1]["content"], "I do not know.")
            words = text.split()[: body["max_tokens"]]
            return httpx.Response(200, json={
                "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": " ".join(words)}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
            })
        if path == "/v1/completions":
            if not self.completions:
                return _error(*self.completions_error)
            prompt = body["prompt"]
            lp = self.logprob_per_char.get(body["model"], -1.0)
            # One "token" per character, plus the one generated token after the prompt.
            tokens = list(prompt) + ["!"]
            return httpx.Response(200, json={
                "id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "text": prompt + "!", "finish_reason": "length", "logprobs": {
                    "tokens": tokens, "token_logprobs": [None] + [lp] * (len(tokens) - 1),
                    "text_offset": list(range(len(tokens))), "top_logprobs": None}}],
            })
        if path == "/v1/fine_tuning/jobs":
            return httpx.Response(200, json={"object": "list", "data": self.jobs, "has_more": False})
        if path.startswith("/v1/files/") and path.endswith("/content"):
            return httpx.Response(200, text=self.files[path.split("/")[3]])
        return _error(404, f"no route {path}")


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "invalid_request_error",
                                                  "param": None, "code": None}})
