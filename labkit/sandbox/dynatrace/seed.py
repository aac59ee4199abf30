"""The local tenant as the lab's getting-started page leaves it, set up by hand in the UI: the runbook
notebook uploaded, the "Log Errors" pipeline with its Davis event processor, the "Critical Logs" route.

The contents are labkit's own data (labkit.tenant), the ids as the UI makes them: a customId with the
display name and a number, a processor id likewise, a document id a UUID. A bare tenant skips all of
this (a facilitator rehearsing getting-started does it with `labkit tenant setup`).
"""
from __future__ import annotations

import secrets

from labkit import tenant as lab
from labkit.sandbox.dynatrace.store import PIPELINES, ROUTING
from labkit.sandbox.dynatrace.tenant import Tenant

OWNER = "workshop.user@labkit.local"  # the attendee who clicked it together


def _ui_id(prefix: str, name: str) -> str:
    return f"{prefix}_{name.replace(' ', '_')}_{secrets.randbelow(9000) + 1000}"


def set_up(tenant: Tenant) -> str:
    """Seed what getting-started makes (once per tenant); the runbook document's id."""
    found = runbook_id(tenant)
    if found:
        return found
    doc = tenant.documents.create(lab.RUNBOOK_NAME, "notebook", lab.runbook_content(), owner=OWNER,
                                  is_private=False)
    value = lab.pipeline_value(_ui_id("pipeline", lab.PIPELINE_NAME), _ui_id("processor", lab.PROCESSOR_NAME))
    pipeline = tenant.settings.create(PIPELINES, value, owner=OWNER)
    tenant.settings.create(ROUTING, {"routingEntries": [lab.route_entry(pipeline.object_id)]})
    return doc.id


def runbook_id(tenant: Tenant) -> str | None:
    """The id of the tenant's runbook notebook (None: not uploaded)."""
    return next((d.id for d in tenant.documents.list()
                 if d.name == lab.RUNBOOK_NAME and d.type == "notebook"), None)
