"""The lab's route in the tenant's ONE routing object (builtin:openpipeline.logs.routing holds every
dynamic route): read it, change only the lab's entry, write it back with the updateToken it was read
with. A 409 (someone changed the routes meanwhile) re-reads and applies the change again on the fresh
routes, a bounded number of times; their routes are never overwritten. No routing object yet: POST one.
"""
from __future__ import annotations

from labkit import tenant as lab
from labkit.dynatrace._http import Conflict
from labkit.errors import BadInput, LabError
from labkit.tenant.read import entries, same_matcher

ATTEMPTS = 5


def read(dt):
    found = dt.settings_objects.list(lab.ROUTING_SCHEMA)
    return found[0] if found else None


def is_ours(entry: dict, pipeline_id: str) -> bool:
    return entry.get("description") == lab.ROUTE_NAME and entry.get("pipelineId") == pipeline_id


def refuse_clash(routes: list[dict], pipeline_id: str | None) -> None:
    """BadInput when a route already carries the lab's name but is not the lab's route (the UI keeps
    route names unique, so labkit's could not be added beside it)."""
    for entry in routes:
        if entry.get("description") != lab.ROUTE_NAME:
            continue
        if (pipeline_id is not None and entry.get("pipelineId") == pipeline_id
                and same_matcher(entry.get("matcher", "")) and entry.get("enabled") is not False):
            return
        why = ("is disabled" if entry.get("enabled") is False else
               "has another matcher" if not same_matcher(entry.get("matcher", "")) else
               "sends its logs to another pipeline")
        raise BadInput(f"A route named {lab.ROUTE_NAME!r} exists already and {why}: labkit leaves other people's "
                       f"routes alone. Fix it in OpenPipeline (Logs > Dynamic routing: matcher {lab.ROUTE_MATCHER}, "
                       f"pipeline {lab.PIPELINE_NAME!r}) or rename it, then run labkit tenant setup again.")


def add(dt, pipeline_id: str, *, validate_only: bool = False) -> tuple[int, bool]:
    """Put the lab's route FIRST (so no other route takes the cart's tagged logs before it), every other
    route kept in its order. Returns (routes kept, whether the routing object was created)."""
    for _ in range(ATTEMPTS):
        routing = read(dt)
        routes = entries(routing)
        refuse_clash(routes, pipeline_id)
        if any(is_ours(e, pipeline_id) for e in routes):
            return len(routes) - 1, False  # a retry after a write that landed, or another setup's
        ours = lab.route_entry(pipeline_id)
        try:
            if routing is None:
                dt.settings_objects.create(lab.ROUTING_SCHEMA, {"routingEntries": [ours]}, validate_only=validate_only)
                return 0, True
            dt.settings_objects.update(routing, {**routing.value, "routingEntries": [ours, *routes]},
                                       validate_only=validate_only)
            return len(routes), False
        except Conflict:
            continue  # the routes changed since they were read: read them again
    raise _kept_changing("add")


def remove(dt, pipeline_id: str) -> bool:
    """Take the lab's route (by its name and pipeline) out, every other route kept; False when absent."""
    for _ in range(ATTEMPTS):
        routing = read(dt)
        routes = entries(routing)
        kept = [e for e in routes if not is_ours(e, pipeline_id)]
        if len(kept) == len(routes):
            return False
        try:
            dt.settings_objects.update(routing, {**routing.value, "routingEntries": kept})
            return True
        except Conflict:
            continue
    raise _kept_changing("remove")


def _kept_changing(verb: str) -> LabError:
    return Conflict(f"The tenant's routing kept changing while labkit tried to {verb} the route {lab.ROUTE_NAME!r} "
                    f"({ATTEMPTS} conflicting writes, 409): someone is editing the dynamic routes. Nothing was "
                    "overwritten; try again in a moment.")
