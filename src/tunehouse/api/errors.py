"""The one place that turns exceptions into OpenAI's error body {"error": {"message", "type", "param", "code"}}.

Routes raise `APIError` (or the store's errors); request validation errors name the offending field in
`param` (OpenAI's path, e.g. "hyperparameters.n_epochs", "messages[0].role") and in the message, with OpenAI's
`code`: a request model's own checks raise errors typed with the code itself (see api/completion_requests.py).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunehouse.store.errors import StoreError

log = logging.getLogger("tunehouse.api")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, type: str | None = None, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(error_body(message, type, param, code), status_code=status, headers=headers)


# Error types the request models raise themselves (PydanticCustomError(code, reason)) are OpenAI's codes.
_PHRASES = {
    "invalid_value": "Invalid value for {name}: {reason}.",
    "invalid_type": "Invalid type for {name}: {reason}.",
    "unsupported_parameter": "Unsupported parameter: {name}: {reason}.",
    "unsupported_value": "Unsupported value for {name}: {reason}.",
    "missing_required_parameter": "Missing required parameter: {name}: {reason}.",
}
_BRANCH_TAGS = ("int", "float", "str", "bool")


def _field(loc: tuple, relative: str | None = None) -> str | None:
    """OpenAI's name of a parameter: `messages[0].role`, `hyperparameters.n_epochs`.

    Drops FastAPI's location prefix ("body") and pydantic's union-branch tags ("int", "literal['auto']", ...);
    `relative` is the field a cross-field check names, below the location it ran at.
    """
    name = ""
    for part in [*loc[1:], *([relative] if relative else [])]:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not ("[" in part or part in _BRANCH_TAGS):
            name += ("." if name else "") + part
    return name or None


def describe_validation(errors: list[dict]) -> tuple[str, str | None, str]:
    """(message, param, code) for the first error; a union's alternatives are all named in the message."""
    first = errors[0] if errors else {}
    kind = first.get("type", "")
    own = kind in _PHRASES
    field = _field(tuple(first.get("loc", ())), (first.get("ctx") or {}).get("field") if own else None)
    name = f"'{field}'" if field else "the request body"
    if own:
        return _PHRASES[kind].format(name=name, reason=first.get("msg")), field, kind
    if kind == "json_invalid" or (kind == "missing" and field is None):  # malformed or empty body
        return "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your"\
            " HTTP library correctly.)", None, "invalid_json"
    if kind == "missing":
        return f"Missing required parameter: {name}.", field, "missing_required_parameter"
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {field}", field, "unknown_parameter"
    if field is None and kind in ("model_type", "model_attributes_type", "dict_type"):
        return "The request body must be a JSON object.", None, "invalid_json"
    # A union ("auto" | int 1..50) gives one error per branch: say all the ways the value could be right.
    same = [e["msg"] for e in errors if _field(tuple(e.get("loc", ()))) == field]
    code = "invalid_type" if kind.endswith("_type") else "invalid_value"
    what = "type" if code == "invalid_type" else "value"
    return f"Invalid {what} for {name}: {' or '.join(dict.fromkeys(same))} (got {first.get('input')!r}).", field, code


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, param, code = describe_validation(exc.errors())
        return error_response(400, message, "invalid_request_error", param, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"Invalid URL ({request.method} {request.url.path})"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"The server had an error while processing your request: {type(exc).__name__}",
                              "server_error")
