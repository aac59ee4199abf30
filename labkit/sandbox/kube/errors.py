"""The API server's errors: each answers with the Status body kubectl and the python client parse."""
from __future__ import annotations

import json

from labkit.sandbox.http import HttpError, Response, json_response
from labkit.sandbox.kube.discovery import KINDS, NS

USER = "system:serviceaccount:default:labkit"  # who kubectl and labkit are, as 403 messages name them


class StatusError(HttpError):
    """An error answer: `reason` and `details` as the apiserver's Status carries them."""

    def __init__(self, status: int, reason: str, message: str, details: dict | None = None):
        super().__init__(status, message)
        self.reason, self.details = reason, details

    def body(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.status}
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> Response:
        return json_response(self.body(), self.status)


def qualified(resource: str) -> str:
    group = KINDS.get(resource.split("/")[0], ("",))[0]
    return f"{resource}.{group}" if group else resource


def details(resource: str, name: str) -> dict:
    d = {"name": name, "kind": resource}
    group = KINDS.get(resource, ("",))[0]
    if group:
        d["group"] = group
    return d


def unknown_path() -> StatusError:
    """A path the server does not serve; kubectl turns this message into its 'doesn't have a resource'."""
    return StatusError(404, "NotFound", "the server could not find the requested resource")


def not_allowed() -> StatusError:
    return StatusError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def route_error(status: int, message: str) -> StatusError:
    """The Router's 404 and 405, in the apiserver's words instead of the Router's."""
    return not_allowed() if status == 405 else unknown_path()


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unavailable(message: str) -> StatusError:
    return StatusError(503, "ServiceUnavailable", message)


def not_found(resource: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{qualified(resource)} "{name}" not found', details(resource, name))


def already_exists(resource: str, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists", f'{resource} "{name}" already exists', details(resource, name))


def conflict(resource: str, name: str) -> StatusError:
    return StatusError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(resource)} "{name}": '
                       "the object has been modified; please apply your changes to the latest version "
                       "and try again", details(resource, name))


def invalid(kind: str, name: str, field: str, value, why: str) -> StatusError:
    msg = f'{kind} "{name}" is invalid: {field}: Invalid value: {json.dumps(value)}: {why}'
    return StatusError(422, "Invalid", msg, {"name": name, "kind": kind, "causes": [
        {"reason": "FieldValueInvalid", "message": f"Invalid value: {json.dumps(value)}: {why}",
         "field": field}]})


def forbidden(verb: str, resource: str, name: str | None) -> StatusError:
    base = resource.split("/")[0]
    group = KINDS.get(base, ("",))[0]
    who = f'{qualified(base)} "{name}"' if name else qualified(base)
    msg = (f'{who} is forbidden: User "{USER}" cannot {verb} resource "{resource}" in API group '
           f'"{group}" in the namespace "{NS}"')
    return StatusError(403, "Forbidden", msg, details(base, name or ""))
