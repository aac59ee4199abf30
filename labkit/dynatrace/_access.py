"""The preflight of the tokens: may each lab step do its call, and if not, which scope to add where.

An API token says its scopes (POST /api/v2/apiTokens/lookup). A platform token does not, so each
step is probed with a call that changes nothing: a read of one item, the change event POSTed with
a body no tenant accepts, an unknown eventType (allowed: a 400 for it, and nothing is created; not
allowed: a 403 naming the scope; dynatrace-answers.md §3) and
`fetch logs | limit 1` on Grail. A 403 names the missing scopes from `details.missingScopes`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labkit.dynatrace._http import GRAIL_LOG_SCOPES, PLATFORM_SCOPES
from labkit.errors import BadInput, Forbidden, LabError
from labkit.settings import SERVICE

if TYPE_CHECKING:  # pragma: no cover
    from labkit.dynatrace import Dynatrace

_RECENT = {"from": "now-5m"}
# (lab step, classic scope, method, path, params, body): each probe reads at most one item
STEPS = [
    ("send the change event", "events.ingest", "POST", "/api/v2/events/ingest", None,
     {"eventType": "LABKIT_PREFLIGHT_PROBE", "title": "labkit preflight: never stored"}),
    ("read change events", "events.read", "GET", "/api/v2/events", {"pageSize": 1, **_RECENT}, None),
    ("read failed requests", "metrics.read", "GET", "/api/v2/metrics/query",
     {"metricSelector": "builtin:service.request.count", "resolution": "Inf", **_RECENT}, None),
    ("read problems", "problems.read", "GET", "/api/v2/problems", {"pageSize": 1, **_RECENT}, None),
    ("look up the service", "entities.read", "GET", "/api/v2/entities",
     {"entitySelector": "type(SERVICE)", "pageSize": 1, **_RECENT}, None),
]
_PLATFORM_PAGE = "Account Management > Identity & access > Platform tokens"


@dataclass
class Access:
    """One step's verdict: may it run, with which token, and what to do if not."""

    item: str
    ok: bool
    detail: str


def access(dt: "Dynatrace") -> list[Access]:
    """One row per lab step that calls Dynatrace, error logs last."""
    api_scopes, api_problem = _api_scopes(dt)
    rows = []
    for item, scope, method, path, params, body in STEPS:
        if dt._http.route("classic", path, scope).client == "api":
            rows.append(_by_api_token(item, scope, api_scopes, api_problem, dt))
        else:
            rows.append(_probe(dt, item, scope, method, path, params, body))
    rows.append(_error_logs(dt))
    if dt.scope:
        rows.append(_seat(dt))
    return rows


def _seat(dt: "Dynatrace") -> Access:
    """On a shared tenant: can labkit tell this seat's own service from the other seats'?"""
    item = f"keep to {dt.scope.describe()} (k8s.cluster.name)"
    try:
        entity = dt.entities.seat(SERVICE)
    except Forbidden as exc:
        return Access(item, False, (
            f"{exc}: queries are kept to the seat by k8s.cluster.name, but the change event would "
            f"go to every {SERVICE!r} on the tenant. Set DT_PLATFORM_TOKEN with "
            f"{' + '.join(GRAIL_LOG_SCOPES)}."))
    except LabError as exc:
        return Access(item, False, str(exc))
    if entity is None:
        return Access(item, False, (
            f"no logs of {SERVICE!r} with k8s.cluster.name {dt.scope.cluster!r} in the last 24 hours: "
            "check that the lab's collector sets that cluster name (LABKIT_CLUSTER_NAME must match it) "
            "and that the demo runs"))
    if entity.shared:
        return Access(item, False, (
            f"{SERVICE} is {entity.id} for every seat: queries, charts and problems are kept to "
            "this seat by k8s.cluster.name, but the change event lands on every seat's "
            f"{SERVICE}. Turn on the built-in rule 'Split services by k8s cluster and namespace' "
            "(Settings > Services > Service splitting)"))
    return Access(item, True, f"queries, charts, problems and the change event are this seat's own "
                              f"({SERVICE} is {entity.id})")


def _api_scopes(dt: "Dynatrace") -> tuple[set[str] | None, LabError | None]:
    if not dt.settings.api_token:
        return None, None
    try:
        return dt.token_scopes(), None
    except LabError as exc:
        return None, exc


def _by_api_token(item: str, scope: str, scopes: set[str] | None, problem: LabError | None,
                  dt: "Dynatrace") -> Access:
    if scopes is None:
        return Access(item, False, f"DT_API_TOKEN could not be checked: {problem}")
    if scope in scopes:
        return Access(item, True, f"DT_API_TOKEN has {scope}")
    alternative = ("" if dt.settings.platform_token else
                   f", or set DT_PLATFORM_TOKEN to a platform token with {PLATFORM_SCOPES[scope]}")
    return Access(item, False, f"DT_API_TOKEN lacks {scope}: add it in Access tokens{alternative}")


def _probe(dt: "Dynatrace", item: str, scope: str, method: str, path: str, params, body) -> Access:
    platform_scope = PLATFORM_SCOPES[scope]
    try:
        dt._http.request("classic", method, path, params=params, body=body, scope=scope,
                         what=f"to check that the platform token may {item}", idempotent=False)
    except BadInput as exc:  # the probe's event: allowed, refused only for its unknown eventType
        if method != "POST":
            return Access(item, False, str(exc))
    except Forbidden as exc:
        return Access(item, False, _lacks("DT_PLATFORM_TOKEN", exc, platform_scope))
    except LabError as exc:
        return Access(item, False, str(exc))
    return Access(item, True, f"DT_PLATFORM_TOKEN may ({platform_scope})")


def _lacks(var: str, exc: Forbidden, scope: str) -> str:
    missing = getattr(exc, "missing_scopes", None) or [scope]
    if "(401)" in str(exc):
        return str(exc)
    if scope in missing and len(missing) > 1:  # "Use one of: [...]": name the one to add first
        others = ", ".join(m for m in missing if m != scope)
        return f"{var} lacks {scope} (or one of {others}): add it in {_PLATFORM_PAGE}"
    return f"{var} lacks {', '.join(missing)}: add it in {_PLATFORM_PAGE}"


def _error_logs(dt: "Dynatrace") -> Access:
    item = "read error logs (Grail)"
    if dt.settings.platform_token:
        try:
            dt.dql("fetch logs | limit 1", timeout=20.0)
        except Forbidden as exc:
            return Access(item, False, _lacks("DT_PLATFORM_TOKEN", exc, " + ".join(GRAIL_LOG_SCOPES))
                          + "; until then waiting for error logs fails")
        except LabError as exc:
            return Access(item, False, str(exc))
        return Access(item, True, "DT_PLATFORM_TOKEN may fetch logs")
    try:
        dt._http.request("api-token", "GET", "/api/v2/logs/search",
                         params={"limit": 1, **_RECENT}, scope="logs.read",
                         what="to check log search with the API token")
    except Forbidden as exc:
        code = re.search(r"\((\d{3})\)", str(exc))
        return Access(item, False, (
            f"no DT_PLATFORM_TOKEN: error logs need a platform token with "
            f"{' + '.join(GRAIL_LOG_SCOPES)} ({_PLATFORM_PAGE}); this tenant refused log search "
            f"with DT_API_TOKEN ({code.group(1) if code else 'refused'}), as tenants that keep "
            "logs in Grail do. Without one the wait for error logs fails"))
    except LabError as exc:
        return Access(item, False, str(exc))
    return Access(item, True, "classic log search with DT_API_TOKEN (this tenant has no Grail logs)")
