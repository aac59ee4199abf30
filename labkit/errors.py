"""labkit's errors: one small hierarchy whose messages say what happened, why, and what to do.

    LabError            something in the lab went wrong (exit code 1)
    ├── BadInput        the user asked for what cannot be: unknown flag, variant, bad config (exit 2)
    ├── NotFound        a thing the lab needs is missing: ConfigMap, data key, deployment, service
    ├── Forbidden       credentials lack a permission; names the scope or verb
    ├── LabTimeout      a bounded wait ran out before its condition held
    └── Unreachable     a system did not answer, or answered 5xx after bounded retries

Messages never carry a secret: build them from names, never from tokens or headers.
"""
from __future__ import annotations

import difflib


class LabError(Exception):
    """Something in the lab went wrong; the message says what to do next. CLI exit code 1."""

    exit_code = 1


class BadInput(LabError):
    """The user asked for something that cannot be: unknown flag, variant, malformed config. Exit 2."""

    exit_code = 2


class NotFound(LabError):
    """A thing the lab needs is missing (ConfigMap, data key, deployment, service entity)."""


class Forbidden(LabError):
    """Credentials lack a permission; the message names the scope or verb that is missing."""


class LabTimeout(LabError):
    """A bounded wait ran out before its condition held."""


class Unreachable(LabError):
    """A system did not answer or answered with a server error after bounded retries."""


def nearest(name: str, choices) -> str:
    """' Did you mean X?' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if not match:
        lower = {c.lower(): c for c in choices}
        if name.lower() in lower:
            match = [lower[name.lower()]]
    return f" Did you mean {match[0]!r}?" if match else ""
