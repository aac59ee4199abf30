"""A service's entity, found in one place: by name (the classic entities API), or on a shared
tenant this seat's own (its newest log of the day in Grail names it), with one short cache for
both, and the selector the change event goes to."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

from labkit.dynatrace._client import Client
from labkit.dynatrace._links import service_link
from labkit.dynatrace._query import as_datetime, quote_selector_value, service_selector, utc_ms
from labkit.errors import BadInput, Forbidden, LabError, NotFound


@dataclass(frozen=True)
class Entity:
    """A monitored entity (here: a service) as the tenant knows it."""

    id: str
    name: str
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    link: str | None = None  # the service's screen in the tenant
    # on a shared tenant: other seats' spans land on this entity too (the tenant does not split
    # services by cluster), so the entity alone does not keep a seat apart
    shared: bool = False

    def __repr__(self) -> str:
        seen = f", last seen {self.last_seen:%Y-%m-%d %H:%M} UTC" if self.last_seen else ""
        return f"<service {self.name} {self.id}{seen}>"

    def seen_within(self, delta: timedelta, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return self.last_seen is not None and self.last_seen >= now - delta


_NOT_SPLIT = ("this tenant does not split services by cluster: every seat's {service!r} is one entity, "
              "so this change shows on it for every seat (Davis may list it under another seat's "
              "problem). Turn on the built-in rule 'Split services by k8s cluster and namespace' "
              "(Settings > Services > Service splitting)")


class Entities:
    """The tenant's SERVICE entities as this lab sees them (seat-aware, cached for `cache_seconds`)."""

    def __init__(self, client: Client, cache_seconds: float = 60.0):
        self.client = client
        self.scope = client.scope
        self.cache_seconds = cache_seconds
        self._cache: dict[object, tuple[float, Entity | None]] = {}
        self._forbidden_until = 0.0  # entities.read missing, remembered so a send costs one POST

    def find(self, name: str) -> Entity | None:
        """The SERVICE entity named `name` (case-insensitive, as Dynatrace matches), seen in 3 days;
        on a shared tenant this seat's own when Grail may be asked (each seat's cart is an entity
        of its own, all named cart), else the one seen last."""
        if self.scope:
            try:
                return self._seat_service(name)
            except Forbidden as exc:  # no Grail for this lab: the newest of that name, as alone
                unless_not_allowed(exc)
        found = self.named(name)
        return found[0] if found else None

    def named(self, name: str, selector: str | None = None) -> list[Entity]:
        """Every SERVICE entity named `name` (or matching `selector`) seen in 3 days, the exact name
        and newest first."""
        params = {"entitySelector": selector or service_selector(name), "from": "now-3d",
                  "fields": "+lastSeenTms,+firstSeenTms"}
        entities = self.client.paged("/api/v2/entities", "entities", scope="entities.read",
                                     what=f"to look up the service {name!r}", params=params)
        found = [Entity(id=str(e.get("entityId", "")), name=str(e.get("displayName", name)),
                        first_seen=utc_ms(e.get("firstSeenTms")), last_seen=utc_ms(e.get("lastSeenTms")),
                        link=service_link(self.client.ui, e["entityId"]))
                 for e in entities if e.get("entityId")]
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        found.sort(key=lambda e: (e.name == name, e.last_seen or epoch), reverse=True)
        return found

    def cached(self, name: str) -> Entity | None:
        """find() with the short cache (the event POST should cost one round trip)."""
        return self._cached(name, lambda: self.find(name))

    def seat(self, name: str) -> Entity | None:
        """This seat's own `name` service, cached; Forbidden (403) without Grail."""
        return self._cached(("seat", name), lambda: self._seat_service(name))

    def require(self, name: str) -> Entity:
        entity = self.cached(name)
        if entity is None:
            raise NotFound(f"Dynatrace knows no service named {name!r} seen in the last 3 days. Check the "
                           "name (the lab's is 'cart') and that the demo sends traces to this tenant.")
        return entity

    def forget(self, name: str | None = None) -> None:
        """Drop `name` from the cache (every name when None): the tenant said it matched nothing."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)
            self._cache.pop(("seat", name), None)

    def _cached(self, key, find: Callable[[], Entity | None]) -> Entity | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and now - hit[0] < self.cache_seconds and hit[1] is not None:
            return hit[1]
        entity = find()
        self._cache[key] = (now, entity)
        return entity

    def _seat_service(self, name: str) -> Entity | None:
        """This seat's `name` service, from the seat's newest log of the day in Grail; Forbidden
        when this lab has no platform token (or one without storage:logs:read)."""
        if not self.client.settings.platform_token:
            exc = Forbidden(f"telling {self.scope.describe()}'s service {name!r} from the other "
                            "seats' takes Grail, and DT_PLATFORM_TOKEN is not set")
            exc.status = 403
            raise exc
        for row in self.client.dql(self.scope.service_query(name), max_records=1):
            value = row.get("dt.entity.service")
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, str) and value:
                break
        else:
            return None
        try:  # the entity as the tenant knows it (first and last seen)
            found = self.named(name, f"entityId({quote_selector_value(value, always=True)})")
        except Forbidden as exc:  # no entities.read: what the log said is enough to address it
            unless_not_allowed(exc)
            found = []
        seen = as_datetime(row["timestamp"]) if row.get("timestamp") else None
        entity = found[0] if found else Entity(id=value, name=name, last_seen=seen,
                                               link=service_link(self.client.ui, value))
        # not kept to the seat: the question is whether other clusters' logs land on it
        others = self.client.dql(self.scope.others_query(value), max_records=1, scoped=False)
        return replace(entity, shared=bool(others))

    # ---- the change event's target

    def event_target(self, service: str) -> tuple[str, list[str]]:
        """(entity selector, warnings) for the change event: the service by name, or on a shared
        tenant this seat's own entity (never every seat's, unless Grail cannot be asked: then by
        name, with a warning that says so)."""
        by_name = service_selector(service)  # also refuses an empty name
        if not self.scope:
            return by_name, self._warnings(service)
        try:
            entity = self.seat(service)
        except Forbidden as exc:
            unless_not_allowed(exc)
            return by_name, [
                f"could not find the {service!r} of {self.scope.describe()} ({exc}); the event "
                f"goes to every service named {service!r} on the tenant (on a shared tenant, "
                "every seat's)"] + self._warnings(service)
        if entity is not None and entity.shared:
            return by_id(entity), [_NOT_SPLIT.format(service=service, seat=self.scope.describe())]
        if entity is None:
            raise NotFound(
                f"No entity matched {by_name} of {self.scope.describe()}: Dynatrace has "
                "no logs of it from that cluster in the last 24 hours, so labkit cannot tell which "
                "of the tenant's services is yours. Check that your lab's collector sets "
                f"k8s.cluster.name to {self.scope.cluster!r} (LABKIT_CLUSTER_NAME), send some "
                "traffic (labkit shop) and try again.")
        return by_id(entity), []

    def _warnings(self, service: str) -> list[str]:
        """Why the event may match no entity, checked before sending (never stops the send)."""
        try:
            if self._forbidden_until > time.monotonic():
                raise Forbidden("entities.read missing (remembered)")
            entity = self.cached(service)
        except Forbidden:
            # the lab's own token has ingest scopes only: remember, so each send costs one POST
            self._forbidden_until = time.monotonic() + self.cache_seconds
            return [f"could not check that the service {service!r} exists (the token lacks "
                    "entities.read); sending the event anyway"]
        except BadInput:
            raise
        except LabError as exc:
            return [f"could not check the service {service!r} first ({exc}); sending anyway"]
        if entity is None:
            return [f"Dynatrace knows no service named {service!r} (not seen in the last "
                    "3 days): the event will probably match no entity"]
        if not entity.seen_within(timedelta(hours=24)):
            seen = entity.last_seen.isoformat(timespec="minutes") if entity.last_seen else "never"
            return [f"the service {service!r} was last seen {seen}; the event selector "
                    "only matches entities seen in the last 24 hours"]
        return []


def by_id(entity: Entity) -> str:
    """The entity selector of exactly this entity."""
    return f"entityId({quote_selector_value(entity.id, always=True)})"


def unless_not_allowed(exc: Forbidden) -> None:
    """Re-raise unless `exc` only says a token may not do this (403): a wrong token (401) is
    never worked around."""
    if getattr(exc, "status", None) != 403:
        raise exc
