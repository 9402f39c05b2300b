"""The evaluation Backend over the official `openai` SDK: chat completions to answer, completions to score.

Works against tunehouse (`tunehouse serve`, or the app started in-process) and any OpenAI-compatible server.
Scoring needs `/v1/completions` with `echo` and `logprobs` and a known chat format; when the server refuses,
the loss is reported as n/a with the server's answer as the reason (and logged on `tunehouse.eval`).
"""

from __future__ import annotations

import csv
import io
import logging
import time

import openai

from tunehouse.data.render import render_chat
from tunehouse.eval.comparison import EvalError, Generation, ScoreUnavailable, guess_template

log = logging.getLogger("tunehouse.eval")
_FAMILIES = ("gemma", "chatml")


def render_for_scoring(messages: list[dict], reference: str, template: str,
                       tools: list[dict] | None = None) -> tuple[str, int, int]:
    """Prompt+reference text as training renders it, and the [start, end) span of the scored part.

    The span is the reference plus the end-of-turn marker (training teaches the model to emit it); the text
    stops there, so nothing after the answer is sent. `tools` go into the preamble, as in training.
    """
    text, spans = render_chat([*messages, {"role": "assistant", "content": reference}], tools, family=template)
    start, end = spans[-1]
    return text[:end], start, end


class OpenAIBackend:
    """`concurrency`: requests in flight at once when EvalOptions.concurrency does not say (the SDK's client is
    thread-safe; a tunehouse server decodes them in shared batches)."""

    def __init__(self, client: openai.OpenAI, concurrency: int = 1):
        self.client = client
        self.default_concurrency = concurrency
        self._checked: set[str] = set()

    def check_model(self, model: str) -> None:
        if model in self._checked:
            return
        try:
            self.client.models.retrieve(model)
        except openai.NotFoundError:
            raise EvalError(f"model '{model}' not found on {self.client.base_url}") from None
        except openai.APIConnectionError:
            raise EvalError(f"cannot reach the server at {self.client.base_url}") from None
        except openai.APIStatusError as e:
            raise EvalError(f"checking model '{model}': {_message(e)}") from None
        self._checked.add(model)

    def generate(self, model: str, messages: list[dict], max_tokens: int, temperature: float) -> Generation:
        t0 = time.perf_counter()
        try:
            resp = self.client.chat.completions.create(
                model=model, messages=messages, temperature=temperature, max_tokens=max_tokens
            )
        except openai.APIConnectionError:
            raise EvalError(f"cannot reach the server at {self.client.base_url}") from None
        except openai.APIStatusError as e:
            raise EvalError(f"chat completion with '{model}' failed: {_message(e)}") from None
        latency = time.perf_counter() - t0
        choice = resp.choices[0]
        usage = resp.usage
        return Generation(
            text=choice.message.content or "",
            latency_s=latency,
            completion_tokens=usage.completion_tokens if usage else 0,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            finish_reason=choice.finish_reason,
        )

    def score(self, model: str, messages: list[dict], reference: str, template: str,
              tools: list[dict] | None = None) -> tuple[float, int] | None:
        """Sum of NLLs and token count of `reference` (+ end-of-turn) from the server's echoed logprobs."""
        template = guess_template(model) if template == "auto" else template
        if template not in _FAMILIES:
            raise ScoreUnavailable(f"no known chat format '{template}' to render the reference in "
                                   f"(use {' or '.join(_FAMILIES)})")
        text, start, end = render_for_scoring(messages, reference, template, tools)
        try:
            # max_tokens=1: some servers reject 0; the one generated token lies past `end` and is ignored.
            resp = self.client.completions.create(
                model=model, prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0
            )
        except openai.APIStatusError as e:
            # 400/404: a server that cannot score (no /completions, or no echo). Anything else is unexpected.
            level = logging.INFO if e.status_code in (400, 404) else logging.WARNING
            raise self._unavailable(model, f"the server answered {_message(e)} to /v1/completions with echo "
                                           "and logprobs", level) from None
        except openai.APIConnectionError:
            raise self._unavailable(model, f"cannot reach {self.client.base_url} for /v1/completions",
                                    logging.WARNING) from None
        lp = resp.choices[0].logprobs if resp.choices else None
        if lp is None or lp.text_offset is None or lp.token_logprobs is None:
            raise self._unavailable(model, "the server's /v1/completions answer has no echoed logprobs",
                                    logging.INFO)
        nll, n = 0.0, 0
        for offset, logprob in zip(lp.text_offset, lp.token_logprobs, strict=False):
            if start <= offset < end and logprob is not None:
                nll -= logprob
                n += 1
        return (nll, n) if n else None

    def _unavailable(self, model: str, reason: str, level: int) -> ScoreUnavailable:
        log.log(level, "reference loss of %s is n/a: %s", model, reason)
        return ScoreUnavailable(reason)


def find_job(client: openai.OpenAI, model: str) -> dict | None:
    """The fine-tuning job that produced `model` (or its checkpoint), when the server knows it."""
    base_id = model.split(":ckpt-step-")[0]
    try:
        for job in client.fine_tuning.jobs.list(limit=100):
            if job.fine_tuned_model in (model, base_id):
                return job.model_dump()
    except (openai.APIStatusError, openai.APIConnectionError):
        return None
    return None


def fetch_results_csv(client: openai.OpenAI, job: dict) -> list[dict] | None:
    """Rows of the job's fine-tune-results CSV (step, train_loss, valid_loss, ...), numbers as floats."""
    for file_id in job.get("result_files") or []:
        try:
            text = client.files.content(file_id).text
        except (openai.APIStatusError, openai.APIConnectionError):
            continue
        rows = []
        for row in csv.DictReader(io.StringIO(text)):
            rows.append({k: _num(v) for k, v in row.items() if k})
        if rows and "step" in rows[0]:
            return rows
    return None


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def _message(e: openai.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    msg = err.get("message") if isinstance(err, dict) else None
    return f"{e.status_code} {msg or e.message}"
