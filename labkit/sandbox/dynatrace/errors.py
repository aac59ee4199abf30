"""The tenant's two error bodies: the classic ErrorEnvelope and the platform (Grail) error."""
from __future__ import annotations

from typing import Any

from labkit.sandbox.http import HttpError, Response, json_response


class EnvironmentApiError(HttpError):
    """A classic Environment API v2 error (the ErrorEnvelope, constraintViolations when given)."""

    def __init__(self, status: int, message: str, violations: list[dict] | None = None):
        super().__init__(status, message)
        self.violations = violations

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.status, "message": self.message}
        if self.violations is not None:
            error["constraintViolations"] = self.violations
        return json_response({"error": error}, self.status)


def violation(path: str, message: str, location: str = "QUERY") -> dict:
    return {"path": path, "message": message, "parameterLocation": location, "location": None}


def bad_param(path: str, message: str, location: str = "QUERY") -> EnvironmentApiError:
    return EnvironmentApiError(400, "Constraints violated.", [violation(path, message, location)])


class PlatformError(HttpError):
    """A platform (Grail) API error: {"error": {"code", "message", "details": {...}}}."""

    # What the router's own answers are called (an unknown path, a wrong method).
    ROUTER_TYPES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}

    def __init__(self, status: int, message: str, error_type: str | None = None, **details):
        super().__init__(status, message)
        self.error_type = error_type or self.ROUTER_TYPES.get(status, "ERROR")
        self.details = details

    def response(self) -> Response:
        details = {"errorType": self.error_type, "errorMessage": self.message, "arguments": [],
                   **self.details}
        return json_response({"error": {"code": self.status, "message": self.message,
                                        "details": details}}, self.status)
