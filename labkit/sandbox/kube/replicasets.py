"""The Deployment and ReplicaSet controllers: a Deployment owns one ReplicaSet per pod template.

A template change makes a new ReplicaSet (next revision) and scales the old one down as the new
pods become Ready (maxUnavailable 25%); `rollout undo` puts an old template back, whose ReplicaSet
is scaled up again under the next revision. A ReplicaSet removes not-Ready, then newest pods first.
"""
from __future__ import annotations

import copy
import hashlib
import json

REVISION = "deployment.kubernetes.io/revision"
MAX_UNAVAILABLE = 0.25  # the Deployment's rolling update: 25% of the replicas may be down
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's "safe" alphabet for generated names


def safe_name(seed: bytes, n: int) -> str:
    digest = hashlib.sha256(seed).digest()
    return "".join(HASH_ALPHABET[b % len(HASH_ALPHABET)] for b in digest[:n])


def _pruned(value):
    """The template as the apiserver would store it: nulls (creationTimestamp: null) dropped."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def template_hash(template: dict) -> str:
    labels = {k: v for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()
              if k != "pod-template-hash"}
    body = _pruned(dict(template, metadata=dict(template.get("metadata") or {}, labels=labels)))
    return safe_name(json.dumps(body, sort_keys=True).encode(), 10)


def controller_uid(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref["uid"]
    return None


def revision(rs: dict) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def owner_ref(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


class Rollouts:
    """LocalCluster's controllers for Deployments and ReplicaSets (it provides _objects, _write,
    _record, _create_pod, _delete_gracefully, _is_ready and _born)."""

    def _reconcile(self) -> None:
        for d in list(self._objects["deployments"].values()):
            self._sync_deployment(d)
        for rs in list(self._objects["replicasets"].values()):
            self._sync_replicaset(rs)
        for d in list(self._objects["deployments"].values()):
            self._update_deployment_status(d)

    def _owned(self, resource: str, owner: dict, live: bool = False) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return [o for o in self._objects[resource].values() if controller_uid(o) == uid
                and not (live and o["metadata"].get("deletionTimestamp"))]

    def _new_replicaset(self, d: dict) -> dict:
        """The ReplicaSet of the Deployment's current template: made, or an old one re-used (undo)."""
        owned = self._owned("replicasets", d)
        pod_hash = template_hash(d["spec"]["template"])
        top = max((revision(rs) for rs in owned), default=0)
        rs = next((r for r in owned if r["metadata"]["labels"].get("pod-template-hash") == pod_hash), None)
        if rs is not None:
            if revision(rs) < top:  # a rollback: the old ReplicaSet becomes the newest revision
                rs = copy.deepcopy(rs)
                rs["metadata"]["annotations"][REVISION] = str(top + 1)
                rs = self._write("replicasets", rs, "MODIFIED")
            return rs
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        annotations = {k: v for k, v in (d["metadata"].get("annotations") or {}).items()
                       if k != REVISION and not k.startswith("kubectl.kubernetes.io/last-applied")}
        annotations.update({REVISION: str(top + 1), "deployment.kubernetes.io/desired-replicas":
                            str(d["spec"]["replicas"]), "deployment.kubernetes.io/max-replicas":
                            str(d["spec"]["replicas"] + max(1, -(-d["spec"]["replicas"] // 4)))})
        selector = dict(d["spec"]["selector"]["matchLabels"], **{"pod-template-hash": pod_hash})
        rs = {"metadata": {"name": f"{d['metadata']['name']}-{pod_hash}", "generation": 1,
                           "labels": dict(template["metadata"]["labels"]), "annotations": annotations,
                           "ownerReferences": [owner_ref(d)]},
              "spec": {"replicas": 0, "minReadySeconds": 0, "selector": {"matchLabels": selector},
                       "template": template},
              "status": {"replicas": 0, "observedGeneration": 1}}
        return self._write("replicasets", rs, "ADDED")

    def _scale_replicaset(self, d: dict, rs: dict, replicas: int) -> None:
        before = rs["spec"]["replicas"]
        if before == replicas:
            return
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = replicas
        rs["metadata"]["generation"] += 1
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = str(d["spec"]["replicas"])
        self._write("replicasets", rs, "MODIFIED")
        way = "up" if replicas > before else "down"
        self._record(d, "ScalingReplicaSet",
                     f"Scaled {way} replica set {rs['metadata']['name']} from {before} to {replicas}")

    def _sync_deployment(self, d: dict) -> None:
        """Scale the new ReplicaSet to spec.replicas; old ones down as far as availability allows."""
        new = self._new_replicaset(d)
        want = d["spec"]["replicas"]
        self._scale_replicaset(d, new, want)
        old = [rs for rs in self._owned("replicasets", d) if rs["metadata"]["uid"] != new["metadata"]["uid"]]
        min_available = want - int(want * MAX_UNAVAILABLE)
        ready = sum(self._is_ready(p) for rs in [new, *old] for p in self._owned("pods", rs, live=True))
        for rs in old:
            pods = sorted(self._owned("pods", rs, live=True), key=self._is_ready)
            keep = min(len(pods), rs["spec"]["replicas"])
            for pod in pods:
                if keep and (not self._is_ready(pod) or ready - 1 >= min_available):
                    ready -= self._is_ready(pod)
                    keep -= 1
            self._scale_replicaset(d, rs, keep)
        self._prune(d, new)

    def _prune(self, d: dict, new: dict) -> None:
        """revisionHistoryLimit: the oldest empty ReplicaSets beyond it are deleted."""
        limit = d["spec"].get("revisionHistoryLimit", 10)
        empty = sorted((rs for rs in self._owned("replicasets", d) if rs is not new and not
                        rs["spec"]["replicas"] and not self._owned("pods", rs)), key=revision)
        for rs in empty[:max(0, len(empty) - limit)]:
            self._write("replicasets", copy.deepcopy(rs), "DELETED")

    def _sync_replicaset(self, rs: dict) -> None:
        pods = self._owned("pods", rs, live=True)
        want = rs["spec"]["replicas"]
        for _ in range(want - len(pods)):
            pod = self._create_pod(rs)
            pods.append(pod)
            self._record(rs, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        # not Ready ones first, then the newest (the ReplicaSet controller's ranking)
        for pod in sorted(pods, key=lambda p: (self._is_ready(p), -self._born.get(p["metadata"]["uid"], 0)))[
                :max(0, len(pods) - want)]:
            self._delete_gracefully(pod)
            pods.remove(pod)
            self._record(rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        ready = sum(self._is_ready(p) for p in pods)
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]}
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        if status != rs.get("status"):
            rs = copy.deepcopy(rs)
            rs["status"] = status
            self._write("replicasets", rs, "MODIFIED")

    def _update_deployment_status(self, d: dict) -> None:
        want = d["spec"]["replicas"]
        pod_hash = template_hash(d["spec"]["template"])
        sets = self._owned("replicasets", d)
        new = next((rs for rs in sets if rs["metadata"]["labels"].get("pod-template-hash") == pod_hash), None)
        pods = [p for rs in sets for p in self._owned("pods", rs, live=True)]
        updated = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == pod_hash]
        available = sum(self._is_ready(p) for p in pods)
        done = len(updated) == want and len(pods) == want and available == want
        status = {"observedGeneration": d["metadata"]["generation"], "replicas": len(pods),
                  "updatedReplicas": len(updated), "readyReplicas": available, "availableReplicas": available}
        if want - available > 0:
            status["unavailableReplicas"] = want - available
        old_status = d.get("status") or {}
        rs_name = new["metadata"]["name"] if new else f"{d['metadata']['name']}-{pod_hash}"
        status["conditions"] = _deployment_conditions(old_status.get("conditions", []), rs_name,
                                                      available >= want - int(want * MAX_UNAVAILABLE), done,
                                                      self._now())
        rev = str(revision(new)) if new else "1"
        if status != old_status or (d["metadata"].get("annotations") or {}).get(REVISION) != rev:
            d = copy.deepcopy(d)
            d["status"] = status
            d["metadata"].setdefault("annotations", {})[REVISION] = rev
            self._write("deployments", d, "MODIFIED")


def _deployment_conditions(previous: list, rs: str, available: bool, done: bool, now: str) -> list:
    """Available and Progressing, keeping their times while they stay the same (as the controller does)."""
    conditions = [
        ("Available", available,
         "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
         "Deployment has minimum availability." if available else "Deployment does not have minimum availability."),
        ("Progressing", True, "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
         f'ReplicaSet "{rs}" has successfully progressed.' if done else f'ReplicaSet "{rs}" is progressing.'),
    ]
    before = {c["type"]: c for c in previous}
    result = []
    for kind, ok, reason, message in conditions:
        prev = before.get(kind, {})
        flag = "True" if ok else "False"
        same = prev.get("status") == flag and prev.get("reason") == reason
        result.append({"type": kind, "status": flag, "reason": reason, "message": message,
                       "lastUpdateTime": prev["lastUpdateTime"] if same else now,
                       "lastTransitionTime": prev["lastTransitionTime"] if prev.get("status") == flag else now})
    return result
