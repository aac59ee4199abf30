"""The preflight's rows for the tenant's half: can this tenant open the lab's problem?

One read of the tenant (`read_tenant`), then one small function a row: the pipeline, the route,
the runbook notebook, the cart's supportInfo link, the collector's tags. Each says what it found
and, when NO, the one thing to do. A read the token may not make is its own NO naming the scope
for the token the lab has (settings.read for an API token, settings:objects:read for a platform
token; document:documents:read).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from labkit import cart_pod
from labkit import tenant as lab
from labkit.answers import Check
from labkit.errors import BadInput, Forbidden, LabError, NotFound
from labkit.tenant.read import (lab_pipelines, linked_document, route_name, route_verdict, target)

SETUP = "Fix: labkit tenant setup (lab.prepare_tenant() in 00)"
_PAGES = {"DT_API_TOKEN": "Access tokens", "DT_PLATFORM_TOKEN": "Account Management > Identity & access > Platform tokens"}
OLD_API = "/platform/openpipeline/v1/configurations"


class OldOpenPipeline(LabError):
    """The tenant answers only OpenPipeline's old configuration API (not migrated to Settings)."""


@dataclass
class TenantHalf:
    """What the tenant (and the cart's pod) has of the lab's half; a read that failed keeps its error."""

    pipelines: list = field(default_factory=list)
    routing: object = None  # the one routing object, or None
    runbook: object = None  # the runbook Document, or None
    support_info: str | None = None
    settings_error: LabError | None = None
    documents_error: LabError | None = None
    cluster_error: LabError | None = None


def read_settings(dt) -> tuple[list, object]:
    """(logs pipelines, the routing object or None); OldOpenPipeline on a tenant that knows no such schema."""
    try:
        pipelines = dt.settings_objects.list(lab.PIPELINES_SCHEMA)
    except (NotFound, BadInput) as exc:
        raise old_openpipeline(dt, exc) from None
    routing = dt.settings_objects.list(lab.ROUTING_SCHEMA)
    return pipelines, (routing[0] if routing else None)


def old_openpipeline(dt, exc: LabError) -> LabError:
    """Why the pipelines schema is unknown: the old OpenPipeline API answering says the tenant is not
    migrated (deprecated since 1.327; tenant-setup.md A); else the original error."""
    if dt.settings.platform_token:
        try:
            dt._http.request("platform", "GET", OLD_API + "/logs", scope="openpipeline:configurations:read",
                             what="to ask OpenPipeline's old configuration API")
        except LabError:
            return exc
    else:
        return exc
    return OldOpenPipeline(
        f"This tenant still runs OpenPipeline's old configuration API ({OLD_API}) and has no Settings schema "
        f"{lab.PIPELINES_SCHEMA}: it has not been migrated, so labkit cannot set the pipeline and route up. "
        "Create them by hand in the OpenPipeline app as the lab's getting-started page says (pipeline "
        f"{lab.PIPELINE_NAME!r}, route {lab.ROUTE_NAME!r}), or ask your Dynatrace admin to migrate OpenPipeline.")


def find_runbook(dt, support_info: str | None):
    """The runbook notebook: the document supportInfo links, labkit's id, else one named as the lab's."""
    for doc_id in dict.fromkeys(i for i in (linked_document(support_info), lab.RUNBOOK_ID) if i):
        doc = dt.documents.metadata(doc_id)
        if doc is not None and doc.type == "notebook":
            return doc
    named = dt.documents.list(f"name == '{lab.RUNBOOK_NAME}' and type == 'notebook'")
    return named[0] if named else None


def read_tenant(dt, cluster) -> TenantHalf:
    half = TenantHalf()
    try:
        half.support_info = cart_pod.support_info(cluster)
    except LabError as exc:
        half.cluster_error = exc
    try:
        half.pipelines, half.routing = read_settings(dt)
    except LabError as exc:
        half.settings_error = exc
    if not dt.settings.platform_token:
        half.documents_error = Forbidden(
            "DT_PLATFORM_TOKEN is not set: documents (the runbook notebook) are read with a platform token "
            "with document:documents:read (an API token cannot)")
    else:
        try:
            half.runbook = find_runbook(dt, half.support_info)
        except LabError as exc:
            half.documents_error = exc
    return half


def rows(dt, cluster) -> list[Check]:
    """The tenant's rows of the preflight."""
    half = read_tenant(dt, cluster)
    out = settings_rows(dt, half) + [runbook_row(half), support_info_row(dt, half), collector_row(dt)]
    return [c for c in out if c is not None]


def lacks(exc: LabError, scope_by_var: dict[str, str], what: str) -> str:
    """"DT_X lacks <scope>: add it in <page>" for a 403; the error itself for anything else."""
    var = getattr(exc, "variable", None)
    if not isinstance(exc, Forbidden) or getattr(exc, "status", 403) == 401 or var not in scope_by_var:
        return str(exc)
    return f"{var} lacks {scope_by_var[var]}, so labkit cannot read {what}: add it in {_PAGES[var]}"


def settings_rows(dt, half: TenantHalf) -> list[Check]:
    if half.settings_error is not None:
        why = lacks(half.settings_error, {"DT_API_TOKEN": "settings.read", "DT_PLATFORM_TOKEN": "settings:objects:read"},
                    "the OpenPipeline pipelines and routes")
        return [Check("read OpenPipeline settings", False, why)]
    good, near = lab_pipelines(half.pipelines)
    return [pipeline_row(good, near), route_row(half, good)]


def pipeline_row(good: list, near) -> Check:
    item = f"pipeline {lab.PIPELINE_NAME!r}"
    if good:
        names = ", ".join(repr(m.name) for m in good)
        return Check(item, True, f"{names} has the lab's Davis event processor ({lab.EVENT_TYPE}, the event name "
                                 "and the 5 properties)")
    if near is not None:
        return Check(item, False, f"the logs pipeline {near.name!r} differs from the lab page: "
                                  f"{'; '.join(near.differences)}. Fix: edit its Davis event processor in the "
                                  "OpenPipeline app (Logs > Pipelines) to the lab's values")
    return Check(item, False, f"no logs pipeline has a Davis event processor, so no log opens the lab's problem. {SETUP}")


def route_row(half: TenantHalf, good: list) -> Check:
    item = f"route {lab.ROUTE_NAME!r}"
    verdict = route_verdict(half.routing, {m.obj.object_id for m in good})
    unsure = (f"; labkit cannot tell whether the earlier route(s) {', '.join(verdict.unsure)} take the cart's "
              "tagged logs first (a matcher form it does not evaluate): if no problem opens, check them"
              if verdict.unsure else "")
    if verdict.first is not None:
        first = verdict.first
        if verdict.route is None and verdict.elsewhere is first:
            return Check(item, False, f"the route {route_name(first)!r} has the lab's matcher but sends the logs to "
                                      f"{target(first, half.pipelines)}, which has no lab Davis event processor. "
                                      f"Fix: point it at {lab.PIPELINE_NAME!r} in OpenPipeline (Logs > Dynamic routing)")
        ours = f"before {route_name(verdict.route)!r} " if verdict.route else ""
        return Check(item, False, f"the enabled route {route_name(first)!r} {ours}takes the cart's tagged logs first "
                                  f"(to {target(first, half.pipelines)}; the first matching route wins). "
                                  f"Fix: move the lab's route above it in OpenPipeline (Logs > Dynamic routing)"
                                  + ("" if verdict.route else ", or run labkit tenant setup") + unsure)
    if verdict.route is None:
        to = f" to {lab.PIPELINE_NAME!r}" if good else ""
        return Check(item, False, f"no enabled route with the lab's matcher ({lab.ROUTE_MATCHER}){to}, so the "
                                  f"tagged logs never reach the pipeline. {SETUP}{unsure}")
    return Check(item, True, f"{route_name(verdict.route)!r} sends the tagged cart logs to "
                             f"{target(verdict.route, half.pipelines)}{unsure}")


def runbook_row(half: TenantHalf) -> Check:
    item = "runbook notebook"
    if half.documents_error is not None:
        return Check(item, False, lacks(half.documents_error, {"DT_PLATFORM_TOKEN": "document:documents:read"},
                                        "the runbook notebook"))
    if half.runbook is None:
        return Check(item, False, f"no notebook {lab.RUNBOOK_NAME!r} on this tenant, so the problem's \"Ops "
                                  f"runbook\" link leads nowhere. {SETUP}")
    return Check(item, True, f"{half.runbook.name!r} is document {half.runbook.id}")


def support_info_row(dt, half: TenantHalf) -> Check | None:
    item = "cart supportInfo"
    if half.cluster_error is not None:
        return Check(item, False, f"could not read the cart pod's annotations: {half.cluster_error}")
    linked = linked_document(half.support_info)
    if half.runbook is not None and linked == half.runbook.id:
        return Check(item, True, f"the cart pod's supportInfo links the runbook: {lab.runbook_link(dt.ui, linked)}")
    if half.runbook is None and half.documents_error is not None:
        return None  # the runbook's own row says why it cannot be told
    found = f"links document {linked}" if linked else "has no runbook link" if half.support_info else "is not set"
    fix = "Fix: labkit tenant setup --annotate (the cart rolls)"
    if half.runbook is None:  # nothing on the tenant to link yet: the runbook row says so too
        return Check(item, False, f"the cart pod's supportInfo {found}, which this tenant does not have. {fix}")
    return Check(item, False, f"the cart pod's supportInfo {found}, not the runbook notebook on this tenant "
                              f"({half.runbook.id}). {fix}")


def collector_row(dt) -> Check:
    """The collector's transform: the cart's recent redis error logs carry alertmessage and priority."""
    item = "collector's alert tags"
    if not dt.settings.platform_token:
        return Check(item, True, "not checked: reading logs needs DT_PLATFORM_TOKEN")
    query = ('fetch logs, from: now()-30m | filter service.name == "cart" and matchesPhrase(content, '
             '"connect to redis") | fields timestamp, alertmessage, priority | sort timestamp desc | limit 20')
    try:
        logs = dt.dql(query, timeout=20.0, max_records=20)
    except LabError as exc:
        return Check(item, True, f"not checked: {exc}")
    if not logs:
        return Check(item, True, "no redis error logs of the cart in the last 30 minutes yet: checked again "
                                 "once the change makes some")
    tagged = [r for r in logs if r.get("alertmessage") and str(r.get("priority")) == lab.PRIORITY]
    if tagged:
        return Check(item, True, f"{len(tagged)} of the cart's {len(logs)} newest redis error logs carry "
                                 f"alertmessage and priority {lab.PRIORITY}")
    return Check(item, False, f"none of the cart's {len(logs)} newest redis error logs carries alertmessage and "
                              "priority \"1\": the collector's transform is missing (or the cart pod is not "
                              "deployment.release_stage production). Add to the collector's values (processors, "
                              f"and `transform` in the logs pipeline):\n{lab.COLLECTOR_LINES}")


def problem_blockers(dt) -> list[Check]:
    """The rows that say for sure the lab's problem cannot open (pipeline, route, collector). A read
    the token may not make, or an unmigrated tenant, cannot tell: it blocks nothing (the lab's own
    tokens may lack settings.read while the tenant is set up right)."""
    half = TenantHalf()
    try:
        half.pipelines, half.routing = read_settings(dt)
    except LabError:
        return [c for c in [collector_row(dt)] if not c.ok]
    return [c for c in settings_rows(dt, half) + [collector_row(dt)] if not c.ok]


def require_problem_possible(dt) -> None:
    """LabError naming why the lab's problem cannot open, so a wait for it stops at once."""
    blockers = problem_blockers(dt)
    if blockers:
        raise LabError("The lab's problem cannot open on this tenant, so labkit does not wait for it: "
                       + "; ".join(f"{c.item}: {c.detail}" for c in blockers))
