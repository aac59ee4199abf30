"""Pods as the lab sees them: listed by label, Ready or Terminating, watched until a condition holds.

Shared by the restarts (restart.py), what flagd serves (served.py) and the cart's pods (labkit.cart_pod).
"""
from __future__ import annotations

from contextlib import closing
from datetime import datetime, timezone
from typing import Callable

from labkit import settings as names
from labkit._kube import Kube
from labkit.errors import LabTimeout


def list_pods(kube: Kube, selector: str = names.FLAGD_SELECTOR) -> dict:
    """flagd's (or `selector`'s) pods by name."""
    pods, _ = kube.list_objects("pods", selector)
    return pods


def flagd_pods(kube: Kube) -> list[dict]:
    """flagd's pods for display: name, phase, ready, age (s), terminating."""
    now = datetime.now(timezone.utc)
    out = []
    for name, pod in sorted(list_pods(kube).items()):
        created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
        out.append({
            "name": name,
            "phase": (pod.get("status") or {}).get("phase"),
            "ready": ready(pod),
            "age": round((now - created).total_seconds(), 1) if created else None,
            "terminating": terminating(pod),
        })
    return out


def watch_pods(kube: Kube, done: Callable[[dict], bool], deadline: float, on_change: Callable[[dict], None],
               timeout_message: Callable[[dict], str], selector: str = names.FLAGD_SELECTOR) -> dict:
    """flagd's (or `selector`'s) pods by name once done(pods) holds; LabTimeout after `deadline`."""
    pods: dict = {}
    with closing(kube.watch("pods", selector, deadline)) as changes:
        for pods in changes:
            on_change(pods)
            if done(pods):
                return pods
    raise LabTimeout(timeout_message(pods))


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def terminating(pod: dict) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not terminating(pod) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def ready_names(pods: dict, exclude=()) -> list[str]:
    return [n for n, p in pods.items() if n not in exclude and ready(p)]


def pod_states(pods: dict) -> str:
    if not pods:
        return "no pods"
    return ", ".join(
        f"{n} {'Terminating' if terminating(p) else (p.get('status') or {}).get('phase', '?')}"
        f"{' Ready' if ready(p) else ''}" for n, p in sorted(pods.items()))
