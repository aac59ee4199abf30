"""A seat's slice of a shared tenant: its cluster name, put into every query labkit sends.

On a tenant several labs share (a workshop's), what tells one attendee's data from another's is
`k8s.cluster.name`, the resource attribute each lab's collector sets. Service Detection v2 splits
services by cluster (its default rule: k8s.namespace.name + k8s.cluster.uid), so each seat's `cart`
is its own SERVICE entity with the same name: the change event and the metrics go to the seat's
entity id (found through the seat's own logs in Grail; without Grail the metrics fall back to their
k8s.cluster.name dimension), events and problems are kept by their k8s.cluster.name, and Grail
queries filter on the attribute. A Scope without a cluster (a lab of one's own) changes nothing.

This is the one place the rule lives: `Dynatrace.dql()` passes every query through `Scope.dql`,
so a query another part of labkit writes is scoped without knowing it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from labkit.dynatrace._query import dql_string
from labkit.errors import BadInput

CLUSTER_FIELD = "k8s.cluster.name"
# fields holding a list on a Davis problem (one problem may span clusters): matched with in()
_LIST_SOURCES = ("dt.davis.problems",)
_SOURCE = re.compile(r"^\s*(fetch\s+([\w.]+)|timeseries\b)")


def _first_pipe(query: str) -> int:
    """Index of the first `|` outside strings and backticks (the end of the first command)."""
    quote = None
    i = 0
    while i < len(query):
        c = query[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"`":
            quote = c
        elif c == "|":
            return i
        i += 1
    return len(query)


@dataclass(frozen=True)
class Scope:
    """This lab's cluster name on the tenant, or None: the whole tenant is this lab's."""

    cluster: str | None = None

    def __bool__(self) -> bool:
        return self.cluster is not None

    def condition(self, source: str = "logs") -> str:
        """The DQL condition that keeps this seat's records of `source`."""
        value = dql_string(self.cluster or "")
        if source in _LIST_SOURCES:
            return f"in({CLUSTER_FIELD}, {value})"
        return f"{CLUSTER_FIELD} == {value}"

    def dql(self, query: str) -> str:
        """`query` keeping only this seat's records: a filter right after `fetch`, or a `filter:`
        parameter of `timeseries`. Applying it twice changes nothing."""
        if not self:
            return query
        m = _SOURCE.match(query)
        if not m:
            raise BadInput(f"labkit cannot scope this query to seat {self.cluster!r}: it does not "
                           "start with fetch or timeseries. Start it with one of them.")
        cut = _first_pipe(query)
        head, rest = query[:cut].rstrip(), query[cut:]
        if m.group(2) is None:  # timeseries: a filter: parameter, not a stage after it
            condition = self.condition("timeseries")
            if condition in head:
                return query
            if re.search(r",\s*filter\s*:", head):
                raise BadInput(f"labkit cannot add seat {self.cluster!r} to a timeseries that has "
                               f"its own filter:; add `{condition}` to that filter yourself.")
            return f"{head}, filter: {{{condition}}}" + (f" {rest}" if rest else "")
        clause = f"| filter {self.condition(m.group(2))}"
        if clause in query:
            return query
        return f"{head} {clause}" + (f" {rest}" if rest else "")

    def event_properties(self) -> dict[str, str]:
        """What the change event carries of the seat, so a tenant-wide view can tell them apart."""
        return {CLUSTER_FIELD: self.cluster} if self else {}

    def classic_log_query(self, query: str) -> str:
        """A classic log search keeping this seat's logs."""
        if not self:
            return query
        return f'{query} AND {CLUSTER_FIELD}="{self.cluster.replace(chr(34), "")}"'

    def owns_problem(self, problem: dict) -> bool | None:
        """Whether a problem of the classic API is this seat's, by its `k8s.cluster.name`; None
        when the problem carries no such field (then only its affected entity can tell)."""
        if not self:
            return True
        clusters = problem.get(CLUSTER_FIELD)
        if not clusters:
            return None
        return self.cluster in (clusters if isinstance(clusters, list) else [clusters])

    def owns_event(self, event: dict) -> bool:
        """Whether an event of the classic API is this seat's: its k8s.cluster.name property.
        (Read back client-side: the eventSelector form for a dotted property key is unconfirmed.)"""
        if not self:
            return True
        props = event.get("properties") or []
        pairs = props.items() if isinstance(props, dict) else (
            (p.get("key"), p.get("value")) for p in props if isinstance(p, dict))
        return any(k == CLUSTER_FIELD and v == self.cluster for k, v in pairs)

    def metric_filter(self) -> str:
        """A metric selector transformation keeping this seat's series (the unified service
        metrics' k8s.cluster.name dimension), to follow the metric key; empty without a seat."""
        if not self:
            return ""
        value = self.cluster.replace("~", "~~").replace('"', '~"')
        return f':filter(eq("{CLUSTER_FIELD}","{value}"))'

    def service_query(self, service: str) -> str:
        """DQL for the id of this seat's own `service` entity, from its newest log of the day."""
        return self.dql(f"fetch logs, from: now()-24h | filter service.name == {dql_string(service)}"
                        " and isNotNull(dt.entity.service) | sort timestamp desc | limit 1"
                        " | fields dt.entity.service, timestamp")

    def others_query(self, entity_id: str) -> str:
        """DQL (not to be scoped) for a log of another cluster on this seat's service entity: there
        is one when the tenant does not split services by cluster."""
        return (f"fetch logs, from: now()-24h | filter dt.entity.service == {dql_string(entity_id)}"
                f" and {CLUSTER_FIELD} != {dql_string(self.cluster or '')} | limit 1")

    def describe(self) -> str:
        return f"cluster {self.cluster}" if self else "the whole tenant"
