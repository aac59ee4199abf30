"""The tenant's monitored entities: each lab's services, the pods its logs come from.

Services are split by cluster as Service Detection v2's default rule splits them (k8s.namespace.name
+ k8s.cluster.uid), so each seat's `cart` is its own SERVICE entity; with split_by_cluster=False the
tenant is an older one (split by namespace only): every seat's `cart` is ONE entity.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

DEFAULT_CLUSTER = "labkit-local"  # k8s.cluster.name of a local lab that was given none

# The OpenTelemetry demo's services as they appear in the lab (OTel-only "unified" services).
SERVICES = ("cart", "frontend", "frontend-proxy", "product-catalog", "checkout", "currency",
            "payment", "shipping", "quote", "email", "recommendation", "ad", "accounting",
            "fraud-detection", "load-generator")


def service_id(name: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """A stable Dynatrace-shaped id for a service of a cluster (same name and cluster, same id,
    every run); the default cluster keeps the ids a local lab always had."""
    key = name if cluster == DEFAULT_CLUSTER else f"{name}\x00{cluster}"
    return "SERVICE-" + hashlib.sha256(key.encode()).hexdigest()[:16].upper()


POD_TYPE = "CLOUD_APPLICATION_INSTANCE"  # a Kubernetes pod, as the lab's screenshots show it


def pod_id(pod: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """A stable id for a pod of a cluster (the same pod name, the same entity)."""
    return POD_TYPE + "-" + hashlib.sha256(f"{pod}\x00{cluster}".encode()).hexdigest()[:16].upper()


@dataclass
class MonitoredEntity:
    entity_id: str
    name: str
    first_seen: int
    last_seen: int
    type: str = "SERVICE"
    cluster: str | None = None  # k8s.cluster.name of the workload behind a service
    runs: str | None = None  # a pod's: the service entity its logs name (its topology link)

    def stub(self) -> dict:
        return {"entityId": {"id": self.entity_id, "type": self.type}, "name": self.name}


class Topology:
    """The entities by (cluster, service) and by id. `service` and `pod` find or make one and are
    called under the shared lock; the readers take it."""

    def __init__(self, lock: threading.Lock, split_by_cluster: bool = True):
        self._lock = lock
        self.split_by_cluster = split_by_cluster
        self.entities: dict[tuple[str | None, str], MonitoredEntity] = {}  # (cluster, service)
        self._by_id: dict[str, MonitoredEntity] = {}

    def service(self, service: str, cluster: str, t: int) -> MonitoredEntity:
        """The service entity a span of `cluster` lands on: the cluster's own, or on a tenant that
        does not split by cluster the one shared by every cluster."""
        own = cluster if self.split_by_cluster else None
        entity = self.entities.get((own, service))
        if entity is None:
            entity = self.entities[(own, service)] = MonitoredEntity(
                service_id(service, own or DEFAULT_CLUSTER), service, t, t, cluster=own)
            self._by_id[entity.entity_id] = entity
        return entity

    def pod(self, name: str, cluster: str, t: int) -> MonitoredEntity:
        entity = self._by_id.get(pod_id(name, cluster))
        if entity is None:
            entity = MonitoredEntity(pod_id(name, cluster), name, t, t, POD_TYPE, cluster)
            self._by_id[entity.entity_id] = entity
            self.entities[(cluster, f"pod:{name}")] = entity
        entity.last_seen = max(entity.last_seen, t)
        return entity

    def get(self, entity_id: str) -> MonitoredEntity:
        """An entity known to exist (call under the lock)."""
        return self._by_id[entity_id]

    # ----- reading --------------------------------------------------------------------------
    def entity_list(self) -> list[MonitoredEntity]:
        with self._lock:
            return list(self.entities.values())

    def entity_of(self, service: str, cluster: str) -> MonitoredEntity | None:
        """The entity a span of `service` from `cluster` landed on (None: never seen)."""
        with self._lock:
            return self.entities.get((cluster if self.split_by_cluster else None, service))

    def entity_by_id(self, entity_id: str) -> MonitoredEntity | None:
        with self._lock:
            return self._by_id.get(entity_id)
