"""Request bodies of POST /v1/chat/completions and /v1/completions, with OpenAI's names, types and limits.

Every parameter is either honoured, accepted because it cannot change the output (`user`, `metadata`, ...), or
refused by name (UNSUPPORTED); unknown keys are refused too, so none is silently ignored. A failed check raises a
pydantic error whose type is OpenAI's error code and whose message is the reason; api/errors.py turns it into
OpenAI's error body. Only what needs the loaded model is checked later, by hand: `sampling_params` (logit_bias
ids against the vocabulary) and `fit_max_tokens` (the context length).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tunehouse.api.errors import APIError
from tunehouse.inference.sampling import SamplingParams

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
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
# strict: JSON's types as OpenAI checks them ("1" is not a number, true is not an integer; an int is a float).
STRICT = ConfigDict(extra="forbid", strict=True)


def request_error(code: str, reason: str, field: str | None = None) -> PydanticCustomError:
    """A failed check with OpenAI's error code. `field` names the parameter when the check is not on a field's own
    value (a cross-field rule); it is relative to where the check runs (a message, or the request)."""
    return PydanticCustomError(code, reason, {"field": field} if field else None)


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # inert: there is no side channel to pad


class SamplingRequest(BaseModel):
    """The parameters both endpoints share: the model, sampling, stop sequences, streaming and bookkeeping."""

    model_config = STRICT

    model: Annotated[str, Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    seed: Annotated[int, Field(ge=-(2**63))] | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    # Inert: bookkeeping on OpenAI's side that never changes the generated text.
    user: str | None = None
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key in UNSUPPORTED and not (key == "modalities" and value in (None, ["text"])):
                    raise request_error("unsupported_parameter", UNSUPPORTED[key], key)
        return data

    @field_validator("stop", mode="wrap")
    @classmethod
    def _check_stop(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> str | list[str] | None:
        try:
            stop = handler(value)
        except ValidationError:  # one clear message instead of one per branch of the union
            raise request_error("invalid_type", "expected a string or an array of strings") from None
        if isinstance(stop, list) and len(stop) > 4:
            raise request_error("invalid_value", "at most 4 stop sequences are allowed")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            try:
                int(key)
            except ValueError:
                raise request_error("invalid_value", f"key '{key}' is not a token id") from None
            if not -100 <= value <= 100:
                raise request_error("invalid_value", f"the bias for token {key} must be between -100 and 100")
        return bias

    @model_validator(mode="after")
    def _check_stream_options(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise request_error("invalid_value", "only allowed when 'stream' is enabled", "stream_options")
        return self

    @property
    def choices_count(self) -> int:
        return 1 if self.n is None else self.n

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _sampling(self, vocab_size: int, max_tokens: int, logprobs: bool, top_logprobs: int) -> SamplingParams:
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            seed=self.seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            logit_bias=vocabulary_bias(self.logit_bias, vocab_size),
        )
        if params.seed is not None and params.seed < 0:
            params.seed %= 2**64  # numpy seeds must be non-negative; OpenAI accepts any int64
        if params.top_p == 0.0:
            params.temperature = 0.0  # the nucleus is just the most likely token
        return params


def vocabulary_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    """logit_bias as token id -> bias; the ids can only be checked against the loaded model's vocabulary."""
    out = {}
    for key, value in (bias or {}).items():
        token = int(key)
        if not 0 <= token < vocab_size:
            raise APIError(400, f"Invalid value for 'logit_bias': {token} is not a token id of this model.",
                           param="logit_bias", code="invalid_value")
        out[token] = float(value)
    return out


def fit_max_tokens(requested: int | None, prompt_len: int, context: int, param: str = "max_tokens",
                   prompt_param: str = "messages") -> int:
    """The completion budget: what was asked, bounded by the context; OpenAI's default is all that is left.

    The error blames `param` (the limit asked for) when the prompt alone fits, else `prompt_param`.
    """
    room = context - prompt_len
    if room <= 0 or (requested is not None and requested > room):
        asked = f" + {requested} requested" if requested is not None else ""
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                       f"{prompt_len + (requested or 0)} tokens ({prompt_len} in the prompt{asked}). Please reduce "
                       "the prompt or the completion length.", param=param if room > 0 else prompt_param,
                       code="context_length_exceeded")
    return room if requested is None else requested


# -- /v1/chat/completions ----------------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = STRICT

    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string; an object is rendered as it is


class ToolCall(BaseModel):
    model_config = STRICT

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    # Other keys are kept, not refused: a message read back from a response (refusal, annotations, audio: null)
    # is valid history, and a tokenizer's chat template may use keys of its own.
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="wrap")
    @classmethod
    def _check_content(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> str | list[TextPart] | None:
        try:
            return handler(value)
        except ValidationError:
            raise request_error("invalid_value", "expected a string or an array of text parts "
                                "({'type': 'text', 'text': ...}); only text content is supported") from None

    @model_validator(mode="after")
    def _check_required(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise request_error("missing_required_parameter", "a 'tool' message names the call it answers",
                                "tool_call_id")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise request_error("missing_required_parameter", "only an assistant message with 'tool_calls' may omit it",
                                "content")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDefinition(BaseModel):
    model_config = STRICT

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = STRICT

    name: str


class NamedToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(BaseModel):
    model_config = STRICT

    type: Literal["text", "json_object"]


class ChatCompletionRequest(SamplingRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; the calls returned are those the model writes
    response_format: ResponseFormat | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[Literal["text"]] | None = None

    @field_validator("tool_choice", mode="wrap")
    @classmethod
    def _check_tool_choice(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise request_error("invalid_value", "expected 'none', 'auto', 'required' or a named function "
                                "({'type': 'function', 'function': {'name': ...}})") from None

    @field_validator("response_format", mode="before")
    @classmethod
    def _refuse_json_schema(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") == "json_schema":
            raise request_error("unsupported_value", "'json_schema' is not supported by tunehouse; use "
                                "{'type': 'json_object'}", "type")
        return value

    @field_validator("store")
    @classmethod
    def _refuse_store(cls, value: bool | None) -> bool | None:
        if value:
            raise request_error("unsupported_value", "tunehouse does not store completions")
        return value

    @field_validator("service_tier")
    @classmethod
    def _check_service_tier(cls, value: str | None) -> str | None:
        if value not in (None, "auto", "default"):
            raise request_error("unsupported_value", "only 'auto' or 'default' is served here")
        return value

    @model_validator(mode="after")
    def _check_token_options(self) -> ChatCompletionRequest:
        mct, mt = self.max_completion_tokens, self.max_tokens
        if mct is not None and mt is not None and mct != mt:
            raise request_error("invalid_value", "use either 'max_tokens' or 'max_completion_tokens', not both with "
                                "different values", "max_completion_tokens")
        if self.top_logprobs is not None and not self.logprobs:
            raise request_error("invalid_value", "requires 'logprobs' to be true", "top_logprobs")
        return self

    @model_validator(mode="after")
    def _check_tool_options(self) -> ChatCompletionRequest:
        if self.tool_choice is not None and not self.tools:
            raise request_error("invalid_value", "only allowed when 'tools' are specified", "tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.name
            if name not in [t.function.name for t in self.tools]:
                raise request_error("invalid_value", f"no function named '{name}' in 'tools'", "tool_choice")
        fmt = self.response_format
        if fmt and fmt.type == "json_object" and not any("json" in m.text().lower() for m in self.messages):
            raise request_error("invalid_value", "'messages' must contain the word 'json' in some form, to use "
                                "'response_format' of type 'json_object'", "messages")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens

    @property
    def max_tokens_param(self) -> str:
        """The name a context-length error blames: the limit the caller gave."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def rendered_messages(self) -> list[dict]:
        """The messages with exactly the keys the caller sent, as the renderer (and a chat template) reads them."""
        return [m.model_dump(exclude_unset=True) for m in self.messages]

    def rendered_tools(self) -> list[dict] | None:
        return [t.model_dump(exclude_unset=True) for t in self.tools] if self.tools else None

    def sampling_params(self, vocab_size: int, max_tokens: int) -> SamplingParams:
        top = self.top_logprobs or 0
        return self._sampling(vocab_size, max_tokens, bool(self.logprobs), top)


# -- /v1/completions ---------------------------------------------------------------------------------------------

TokenIds = Annotated[list[int], Field(min_length=1)]
Prompt = str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]


class CompletionRequest(SamplingRequest):
    prompt: Prompt
    max_tokens: Annotated[int, Field(ge=0)] | None = None  # 0 with echo scores the prompt in one forward pass
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _check_prompt(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise request_error("invalid_type", "expected a string, an array of strings, an array of token ids or "
                                "an array of token-id arrays") from None

    @property
    def prompts(self) -> list[str | list[int]]:
        """OpenAI's four prompt shapes -> a list of prompts, each text or token ids."""
        p = self.prompt
        if isinstance(p, str) or isinstance(p[0], int):
            return [p]
        return list(p)

    @property
    def requested_max_tokens(self) -> int:
        return DEFAULT_COMPLETION_MAX_TOKENS if self.max_tokens is None else self.max_tokens

    def sampling_params(self, vocab_size: int, max_tokens: int) -> SamplingParams:
        return self._sampling(vocab_size, max_tokens, self.logprobs is not None, self.logprobs or 0)
