"""The tenant's half as it is: its logs pipelines, its one routing object, the runbook, compared with
the lab page's. No writes here: check.py turns this into preflight rows, setup.py into requests."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from labkit import tenant as lab
from labkit.tenant.matcher import Unknown, matches

# A tagged cart log as the lab's collector makes it (collector-values.yaml): what the route sees.
SAMPLE_LOG = {
    "service.name": "cart", "k8s.deployment.name": "cart", "k8s.namespace.name": "default",
    "deployment.release_stage": "production", "deployment.release_product": "otel-demo-app",
    "dt.owner": "teamA", "dt.cost.costcenter": "centre1", "loglevel": "ERROR", "status": "ERROR",
    "content": "Wasn't able to connect to redis", "alertmessage": lab.ALERT_MESSAGE,
    "priority": lab.PRIORITY, "log.source": "otlp", "dt.openpipeline.source": "otlp",
}
_DOC_ID = re.compile(r"/ui/(?:document|apps/dynatrace\.notebooks/notebook)/([A-Za-z0-9-]+)")


def same_matcher(a: str, b: str = lab.ROUTE_MATCHER) -> bool:
    """Matchers equal but for whitespace (the lab page writes the route's on three lines)."""
    return " ".join(str(a).split()) == " ".join(str(b).split())


def davis_processors(value: dict) -> list[dict]:
    return [p for p in ((value.get("davis") or {}).get("processors") or [])
            if isinstance(p, dict) and p.get("type") == "davis"]


def processor_differences(processor: dict) -> list[str]:
    """What in one Davis event processor differs from the lab page's: each field named, with the
    value it has and the lab's; empty when it is the lab's."""
    props = {p.get("key"): p.get("value") for p in (processor.get("davis") or {}).get("properties") or []
             if isinstance(p, dict)}
    out = []
    if processor.get("enabled") is False:
        out.append("the processor is disabled")
    if str(processor.get("matcher", "")).strip() != "true":
        out.append(f"its matching condition is {processor.get('matcher')!r} (the lab's: 'true')")
    for key, want in lab.EVENT_PROPERTIES.items():
        have = props.get(key)
        if have is None:
            out.append(f"{key} is missing (the lab's: {want!r})")
        elif str(have).strip() != want:
            out.append(f"{key} is {have!r} (the lab's: {want!r})")
    return out


@dataclass
class PipelineMatch:
    """A logs pipeline compared with the lab's: its object and what differs (empty: the lab's)."""

    obj: object  # SettingsObject
    differences: list[str]

    @property
    def name(self) -> str:
        return str(self.obj.value.get("displayName") or self.obj.value.get("customId") or self.obj.object_id)

    @property
    def ok(self) -> bool:
        return not self.differences


def lab_pipelines(pipelines: list) -> tuple[list[PipelineMatch], PipelineMatch | None]:
    """(pipelines with the lab's Davis processor, the closest other one for the message: named
    "Log Errors" first, then the fewest differences; None when no pipeline has a Davis processor)."""
    good, near = [], []
    for obj in pipelines:
        procs = davis_processors(obj.value)
        if not procs:
            if obj.value.get("displayName") == lab.PIPELINE_NAME:
                near.append(PipelineMatch(obj, ["it has no Davis event processor"]))
            continue
        best = min((processor_differences(p) for p in procs), key=len)
        (near if best else good).append(PipelineMatch(obj, best))
    near.sort(key=lambda m: (m.obj.value.get("displayName") != lab.PIPELINE_NAME, len(m.differences)))
    return good, (near[0] if near else None)


def entries(routing) -> list[dict]:
    """The routing object's routes, in order ([] when the tenant has no routing object)."""
    if routing is None:
        return []
    return [e for e in routing.value.get("routingEntries") or [] if isinstance(e, dict)]


@dataclass
class RouteVerdict:
    """Whether the lab's logs reach a good pipeline: `route` (the lab's, or None), `elsewhere` (a lab
    matcher route to another pipeline), `first` (an earlier route that takes them), `unsure`
    (earlier routes whose matcher labkit cannot read)."""

    route: dict | None = None
    elsewhere: dict | None = None
    first: dict | None = None
    unsure: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.route is not None and self.first is None


def route_verdict(routing, good_ids: set[str]) -> RouteVerdict:
    """Walk the routes in order as a tagged cart log would: the first that takes it decides."""
    verdict = RouteVerdict()
    for entry in entries(routing):
        if entry.get("enabled") is False:
            continue
        lab_matcher = same_matcher(entry.get("matcher", ""))
        try:
            takes = lab_matcher or matches(str(entry.get("matcher", "")), SAMPLE_LOG)
        except Unknown as exc:
            verdict.unsure.append(f"{route_name(entry)!r} ({exc})")
            continue
        if not takes:
            continue
        if lab_matcher and entry.get("pipelineType", "custom") == "custom" and entry.get("pipelineId") in good_ids:
            verdict.route = entry
            return verdict
        if lab_matcher and verdict.elsewhere is None:
            verdict.elsewhere = entry
        verdict.first = verdict.first or entry
    return verdict


def route_name(entry: dict) -> str:
    return str(entry.get("description") or entry.get("matcher") or "(unnamed)")


def target(entry: dict, pipelines: list) -> str:
    """Where a route sends its logs, in words."""
    if entry.get("pipelineType") == "builtin":
        return f"the built-in pipeline {entry.get('builtinPipelineId')}"
    pid = entry.get("pipelineId")
    named = next((o.value.get("displayName") for o in pipelines if o.object_id == pid), None)
    return f"the pipeline {named!r}" if named else f"the pipeline {pid}"


def linked_document(support_info: str | None) -> str | None:
    """The document id the cart pod's supportInfo links (its "Ops runbook" link), if any."""
    m = _DOC_ID.search(support_info or "")
    return m.group(1) if m else None
