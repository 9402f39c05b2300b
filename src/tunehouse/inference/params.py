"""Request parameters of /v1/chat/completions and /v1/completions -> SamplingParams, checked like OpenAI does.

Every parameter is either honoured, accepted because it cannot change the output (e.g. `user`, `metadata`), or
refused with a clear BadParam (-> HTTP 400); none is silently ignored.
"""

from __future__ import annotations

from tunehouse.inference.sampling import SamplingParams

# Accepted and meaningful only as bookkeeping on OpenAI's side; they never change generated text.
INERT = {"user", "metadata", "safety_identifier", "prompt_cache_key", "prompt_cache_retention"}
# OpenAI parameters tunehouse cannot honour: refused by name rather than ignored.
UNSUPPORTED = {
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "these models do not have a reasoning mode",
    "verbosity": "verbosity is not supported",
    "functions": "the deprecated 'functions' parameter is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' parameter is not supported; use 'tool_choice'",
    "moderation": "moderation is not supported",
    "suffix": "'suffix' (insertion) is not supported",
    "best_of": "'best_of' is not supported; use 'n'",
}


class BadParam(ValueError):
    def __init__(self, message: str, param: str | None, code: str = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def check_keys(body: dict, known: set[str]) -> None:
    for key in body:
        if key in UNSUPPORTED:
            if key == "modalities" and body[key] in (None, ["text"]):
                continue
            raise BadParam(f"Unsupported parameter: '{key}': {UNSUPPORTED[key]}.", key, "unsupported_parameter")
        if key not in known and key not in INERT:
            raise BadParam(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
    if body.get("store"):
        raise BadParam("Unsupported value: 'store' true: tunehouse does not store completions.", "store",
                       "unsupported_value")
    if body.get("service_tier") not in (None, "auto", "default"):
        raise BadParam("Unsupported value: 'service_tier' must be 'auto' or 'default' here.", "service_tier",
                       "unsupported_value")


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadParam(f"Invalid type for '{key}': expected a number, but got {type(v).__name__}.", key,
                       "invalid_type")
    if not lo <= v <= hi:
        raise BadParam(f"Invalid '{key}': {v} is out of range; expected a value between {lo} and {hi}.", key)
    return float(v)


def _integer(body: dict, key: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadParam(f"Invalid type for '{key}': expected an integer, but got {type(v).__name__}.", key,
                       "invalid_type")
    if v < lo or (hi is not None and v > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise BadParam(f"Invalid '{key}': {v}; expected an integer {bound}.", key)
    return v


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadParam("Invalid type for 'stop': expected a string or an array of strings.", "stop", "invalid_type")
    if len(stop) > 4:
        raise BadParam("Invalid 'stop': at most 4 stop sequences are allowed.", "stop")
    return stop


def _logit_bias(body: dict, vocab_size: int) -> dict[int, float]:
    bias = body.get("logit_bias")
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise BadParam("Invalid type for 'logit_bias': expected an object of token id -> bias.", "logit_bias",
                       "invalid_type")
    out = {}
    for k, v in bias.items():
        try:
            tok = int(k)
        except (TypeError, ValueError):
            raise BadParam(f"Invalid 'logit_bias' key '{k}': expected a token id.", "logit_bias") from None
        if not 0 <= tok < vocab_size:
            raise BadParam(f"Invalid 'logit_bias' key {tok}: not a token id of this model.", "logit_bias")
        if isinstance(v, bool) or not isinstance(v, int | float) or not -100 <= v <= 100:
            raise BadParam(f"Invalid 'logit_bias' value for {tok}: expected a number in [-100, 100].", "logit_bias")
        out[tok] = float(v)
    return out


def sampling_params(body: dict, *, chat: bool, vocab_size: int) -> tuple[SamplingParams, int | None]:
    """(params with max_tokens possibly 0 = not given yet, the requested max or None) for either endpoint."""
    max_tokens = _integer(body, "max_tokens", 0 if not chat else 1)
    if chat:
        mct = _integer(body, "max_completion_tokens", 1)
        if mct is not None and max_tokens is not None and mct != max_tokens:
            raise BadParam("Use either 'max_tokens' or 'max_completion_tokens', not both with different values.",
                           "max_completion_tokens")
        max_tokens = mct if mct is not None else max_tokens
    if chat:
        logprobs = body.get("logprobs")
        if logprobs not in (None, True, False):
            raise BadParam("Invalid type for 'logprobs': expected a boolean.", "logprobs", "invalid_type")
        top = _integer(body, "top_logprobs", 0, 20)
        if top is not None and not logprobs:
            raise BadParam("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
        want_lp, top = bool(logprobs), top or 0
    else:
        top = _integer(body, "logprobs", 0, 5)
        want_lp, top = top is not None, top or 0
    params = SamplingParams(
        max_tokens=max_tokens or 0,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        seed=_integer(body, "seed", -(2**63)),
        logprobs=want_lp,
        top_logprobs=top,
        stop=_stop(body),
        logit_bias=_logit_bias(body, vocab_size),
    )
    if params.seed is not None and params.seed < 0:
        params.seed %= 2**64  # numpy seeds must be non-negative; OpenAI accepts any int64
    if params.top_p == 0.0:
        params.temperature = 0.0  # the nucleus is just the most likely token
    return params, max_tokens


def choices_count(body: dict) -> int:
    n = _integer(body, "n", 1, 128)
    return 1 if n is None else n


def stream_flags(body: dict) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise BadParam("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    opts = body.get("stream_options")
    if opts is None:
        return bool(stream), False
    if not stream:
        raise BadParam("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    if not isinstance(opts, dict):
        raise BadParam("Invalid type for 'stream_options': expected an object.", "stream_options", "invalid_type")
    for key in opts:
        if key not in ("include_usage", "include_obfuscation"):
            raise BadParam(f"Unrecognized 'stream_options' field: {key}", f"stream_options.{key}", "unknown_parameter")
    return True, bool(opts.get("include_usage"))


def fit_max_tokens(requested: int | None, prompt_len: int, context: int, param: str = "max_tokens") -> int:
    """The completion budget: what was asked, bounded by the context; OpenAI's default is all that is left."""
    room = context - prompt_len
    if room <= 0 or (requested is not None and requested > room):
        asked = f" + {requested} requested" if requested is not None else ""
        raise BadParam(f"This model's maximum context length is {context} tokens. However, you requested "
                       f"{prompt_len + (requested or 0)} tokens ({prompt_len} in the prompt{asked}). Please reduce "
                       "the prompt or the completion length.", param if room > 0 else "messages",
                       "context_length_exceeded")
    return room if requested is None else requested
