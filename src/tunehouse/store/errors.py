"""Errors the store raises; the API maps them to OpenAI's error body in one place (tunehouse.api.errors)."""

from __future__ import annotations


class StoreError(Exception):
    """Base: `message`, and OpenAI's `param`/`code` when they apply."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class NotFound(StoreError):
    status = 404


class InvalidRequest(StoreError):
    status = 400


class Conflict(StoreError):
    """The object exists but is in a state where the action makes no sense (e.g. cancel a finished job)."""

    status = 400
