"""Set the tenant's half up as the lab page's UI steps would, creating exactly what is missing; undo
removes only what labkit made (recorded by made.py).

Everything is read and checked before the first write: a pipeline or route that carries the lab's
name with other contents, a token without the scope, an invalid object (the tenant's validateOnly
check) are refused with nothing written. The writes, in order: the runbook notebook (Documents API),
the pipeline (Settings POST), the route (the one routing object, read-modify-write). Should a later
write fail anyway, the ones this run made are removed again before the error is raised.
Undo goes the other way: the route before the pipeline (a referenced pipeline cannot be deleted),
the document then its trash entry.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from labkit import cart_pod
from labkit import tenant as lab
from labkit.dynatrace._documents import DOCUMENTS
from labkit.dynatrace._http import Conflict
from labkit.dynatrace._settings import OBJECTS
from labkit.errors import BadInput, Forbidden, LabError, NotFound
from labkit.progress import Progress
from labkit.tenant import made, routing
from labkit.tenant.check import find_runbook, lacks, read_settings
from labkit.tenant.read import entries, lab_pipelines, linked_document, route_name, route_verdict

NEW_PIPELINE = "<objectId of the new pipeline>"


@dataclass
class Request:
    """One request setup sends (or, in a dry run, would send): never a token."""

    method: str
    path: str
    body: object = None

    def __str__(self) -> str:
        body = "" if self.body is None else "\n" + json.dumps(self.body, indent=1, ensure_ascii=False)
        return f"{self.method} {self.path}{body}"


@dataclass
class TenantSetup:
    """What setup (or undo) did, one plain sentence per thing made, kept or removed."""

    lines: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)  # a dry run's: what it would send
    link: str | None = None  # the runbook notebook's link
    support_info: str | None = None  # the cart pod's supportInfo that links it
    dry_run: bool = False

    def __str__(self) -> str:
        parts = list(self.lines)
        if self.dry_run and not self.requests:
            parts.append("Dry run: nothing was written, and nothing is missing: no request to send.")
        elif self.dry_run:
            parts += ["Dry run: nothing was written. The requests it would send:"] + [str(r) for r in self.requests]
        if self.support_info:
            parts += ["The cart pod's supportInfo annotation:", self.support_info.rstrip()]
        return "\n".join(parts)

    __repr__ = __str__


@dataclass
class _Plan:
    pipeline_id: str | None = None  # the lab's pipeline if one exists
    new_pipeline: bool = False
    add_route: bool = False
    runbook: object = None
    new_runbook: bool = False


def _settings_path(dt) -> str:
    return dt._http.route("classic", OBJECTS, "settings.write").path


def _read(dt):
    try:
        return read_settings(dt)
    except Forbidden as exc:
        raise Forbidden(lacks(exc, {"DT_API_TOKEN": "settings.read", "DT_PLATFORM_TOKEN": "settings:objects:read"},
                              "the OpenPipeline pipelines and routes") + "; nothing was written") from None


def _plan_settings(dt, result: TenantSetup, plan: _Plan) -> None:
    pipelines, routing_object = _read(dt)
    good, near = lab_pipelines(pipelines)
    if good:
        plan.pipeline_id = good[0].obj.object_id
        result.lines.append(f"Kept the pipeline {good[0].name!r}: it has the lab's Davis event processor.")
    else:
        clash = next((o for o in pipelines if o.value.get("displayName") == lab.PIPELINE_NAME
                      or o.value.get("customId") == lab.PIPELINE_ID), None)
        if clash is not None:
            why = near.differences if near is not None and near.obj is clash else ["no Davis event processor"]
            raise BadInput(f"A pipeline named {lab.PIPELINE_NAME!r} exists with other contents ({'; '.join(why)}): "
                           "labkit leaves it alone. Fix its Davis event processor in the OpenPipeline app, or "
                           "delete it, then run labkit tenant setup again. Nothing was written.")
        plan.new_pipeline = True
    verdict = route_verdict(routing_object, {m.obj.object_id for m in good})
    if verdict.route is not None and verdict.first is None:
        result.lines.append(f"Kept the route {route_name(verdict.route)!r}: it sends the tagged cart logs to the pipeline.")
        return
    routing.refuse_clash(entries(routing_object), plan.pipeline_id)
    plan.add_route = verdict.route is None
    if verdict.route is not None:  # the lab's route exists but another takes the logs first
        result.lines.append(f"Kept the route {route_name(verdict.route)!r}, but {route_name(verdict.first)!r} "
                            "before it takes the tagged logs first: move it above in OpenPipeline (Dynamic routing).")


def _plan_runbook(dt, cluster, result: TenantSetup, plan: _Plan, support: str | None) -> None:
    if not dt.settings.platform_token:
        result.lines.append("The runbook notebook needs a platform token: set DT_PLATFORM_TOKEN (with "
                            "document:documents:read and document:documents:write) and run labkit tenant setup again.")
        return
    try:
        plan.runbook = find_runbook(dt, support)
    except Forbidden as exc:
        raise Forbidden(lacks(exc, {"DT_PLATFORM_TOKEN": "document:documents:read"}, "the runbook notebook")
                        + "; nothing was written") from None
    if plan.runbook is None:
        plan.new_runbook = True
    else:
        result.lines.append(f"Kept the runbook notebook {plan.runbook.name!r} (document {plan.runbook.id}).")


def _requests(dt, plan: _Plan) -> list[Request]:
    out = []
    if plan.new_runbook:
        out.append(Request("POST", DOCUMENTS, {"name": lab.RUNBOOK_NAME, "type": "notebook", "id": lab.RUNBOOK_ID,
                                               "isPrivate": "false", "content": "<the runbook notebook, "
                                               f"{len(lab.runbook_content())} bytes of JSON>"}))
    if plan.new_pipeline:
        out.append(Request("POST", _settings_path(dt), [{"schemaId": lab.PIPELINES_SCHEMA, "scope": "environment",
                                                          "value": lab.pipeline_value()}]))
    if plan.add_route:
        route = lab.route_entry(plan.pipeline_id or NEW_PIPELINE)
        existing = routing.read(dt)
        out.append(Request("POST", _settings_path(dt), [{"schemaId": lab.ROUTING_SCHEMA, "scope": "environment",
                                                          "value": {"routingEntries": [route]}}])
                   if existing is None else
                   Request("PUT", f"{_settings_path(dt)}/{existing.object_id}", {
                       "value": {"routingEntries": [route, f"<the {len(entries(existing))} other routes, kept>"]},
                       "updateToken": "<the routing object's updateToken>"}))
    return out


def _validate(dt, plan: _Plan) -> None:
    """The tenant's own check of each object before anything is saved (validateOnly)."""
    if plan.new_pipeline:
        dt.settings_objects.create(lab.PIPELINES_SCHEMA, lab.pipeline_value(), validate_only=True)
    elif plan.add_route:
        routing.add(dt, plan.pipeline_id, validate_only=True)


def setup(dt, cluster, *, dry_run: bool = False, annotate: bool = False,
          progress: Progress | None = None) -> TenantSetup:
    """Make what the tenant lacks of the lab's half; print-ready sentences in the result."""
    result = TenantSetup(dry_run=dry_run)
    plan = _Plan()
    support = cart_pod.support_info(cluster) if annotate else _support_or_none(cluster)
    _plan_settings(dt, result, plan)
    _plan_runbook(dt, cluster, result, plan, support)
    _validate(dt, plan)
    if dry_run:
        result.requests = _requests(dt, plan)
    else:
        _apply(dt, plan, result)
    doc_id = plan.runbook.id if plan.runbook is not None else lab.RUNBOOK_ID
    if plan.runbook is not None or plan.new_runbook:
        result.link = lab.runbook_link(dt.ui, doc_id)
        result.support_info = lab.support_info(dt.ui, doc_id)
        _support_line(cluster, result, support, doc_id, annotate, progress)
    return result


def _support_or_none(cluster) -> str | None:
    try:
        return cart_pod.support_info(cluster)
    except LabError:
        return None


def _support_line(cluster, result: TenantSetup, support: str | None, doc_id: str, annotate: bool,
                  progress: Progress | None) -> None:
    if linked_document(support) == doc_id:
        result.lines.append(f"The cart pod's supportInfo already links the runbook: {result.link}")
    elif annotate and result.dry_run:
        result.requests.append(Request("PATCH", *cart_pod.patch(cluster, result.support_info)))
        result.lines.append("The cart's Deployment would get the supportInfo below in its pod template (the cart rolls).")
    elif annotate:
        name = cart_pod.annotate(cluster, result.support_info, progress=progress)
        result.lines.append(f"Put the runbook's supportInfo into deployment {name}'s pod template; the cart rolled "
                            "and its pods carry it.")
    else:
        result.lines.append(f"The runbook is {result.link}; the cart pod's supportInfo does not link it yet: run "
                            "labkit tenant setup --annotate (the cart rolls), or set the annotation below yourself.")


def _apply(dt, plan: _Plan, result: TenantSetup) -> None:
    record = made.load(dt.settings)
    this_run: dict = {}
    try:
        if plan.new_runbook:
            plan.runbook = dt.documents.create(lab.RUNBOOK_NAME, "notebook", lab.runbook_content(),
                                               document_id=lab.RUNBOOK_ID)
            _note(dt.settings, record, this_run, "document", plan.runbook.id)
            result.lines.append(f"Made the runbook notebook {lab.RUNBOOK_NAME!r}: {lab.runbook_link(dt.ui, plan.runbook.id)}")
        if plan.new_pipeline:
            plan.pipeline_id = dt.settings_objects.create(lab.PIPELINES_SCHEMA, lab.pipeline_value())
            _note(dt.settings, record, this_run, "pipeline", plan.pipeline_id)
            result.lines.append(f"Made the pipeline {lab.PIPELINE_NAME!r} with the lab's Davis event processor.")
        if plan.add_route:
            kept, _created = routing.add(dt, plan.pipeline_id)
            _note(dt.settings, record, this_run, "route", plan.pipeline_id)
            result.lines.append(f"Added the route {lab.ROUTE_NAME!r} first in the dynamic routing "
                                f"({kept} other route{'s' if kept != 1 else ''} kept as they were).")
    except LabError as exc:
        if not this_run:
            raise
        undone = undo(dt, only=this_run)
        raise type(exc)(f"{exc} (labkit removed again what this setup had made: "
                        f"{' '.join(undone.lines)})") from None


def _note(settings, record: dict, this_run: dict, key: str, value: str) -> None:
    record[key] = this_run[key] = value
    made.save(settings, record)


def undo(dt, *, only: dict | None = None) -> TenantSetup:
    """Remove what labkit made (`only`: just those), the route first; say what it left."""
    record = made.load(dt.settings)
    todo = dict(only if only is not None else record)
    result = TenantSetup()
    if not todo:
        result.lines.append("labkit made nothing on this tenant (no record of a setup): nothing removed.")
    if todo.get("route"):
        gone = routing.remove(dt, todo["route"])
        result.lines.append(f"Removed the route {lab.ROUTE_NAME!r}; every other route kept." if gone else
                            f"The route {lab.ROUTE_NAME!r} was gone already.")
        _forget(dt.settings, record, "route")
    if todo.get("pipeline"):
        result.lines.append(_remove_pipeline(dt, todo["pipeline"]))
        _forget(dt.settings, record, "pipeline")
    if todo.get("document"):
        result.lines.append(_remove_document(dt, todo["document"]))
        _forget(dt.settings, record, "document")
    if only is None:
        result.lines += _left(dt)
    return result


def _forget(settings, record: dict, key: str) -> None:
    record.pop(key, None)
    made.save(settings, record)


def _remove_pipeline(dt, object_id: str) -> str:
    for _ in range(routing.ATTEMPTS):
        try:
            dt.settings_objects.delete(dt.settings_objects.get(object_id))
            return f"Removed the pipeline {lab.PIPELINE_NAME!r}."
        except NotFound:
            return f"The pipeline {lab.PIPELINE_NAME!r} was gone already."
        except Conflict:
            continue  # changed since read: read its updateToken again
    raise Conflict(f"The pipeline {object_id} kept changing while labkit deleted it; try again.")


def _remove_document(dt, document_id: str) -> str:
    doc = dt.documents.metadata(document_id)
    if doc is None:
        return f"The runbook notebook {document_id} was gone already."
    dt.documents.delete(doc)
    dt.documents.purge(document_id)
    return (f"Removed the runbook notebook {doc.name!r} and its trash entry; the cart pod's supportInfo still "
            "links it (labkit tenant setup --annotate links a new one).")


def _left(dt) -> list[str]:
    """What of the lab's half stays on the tenant, made by someone else."""
    try:
        pipelines, routing_object = read_settings(dt)
    except LabError as exc:
        return [f"Could not read what is left: {exc}"]
    good, _ = lab_pipelines(pipelines)
    out = [f"Left the pipeline {m.name!r} (not made by labkit)." for m in good]
    verdict = route_verdict(routing_object, {m.obj.object_id for m in good})
    if verdict.route is not None:
        out.append(f"Left the route {route_name(verdict.route)!r} (not made by labkit).")
    if dt.settings.platform_token:
        try:
            doc = find_runbook(dt, None)
        except LabError:
            doc = None
        if doc is not None:
            out.append(f"Left the runbook notebook {doc.name!r} (document {doc.id}, not made by labkit).")
    return out
