"""The flag file and its changes: ConfigMap flagd-config read, and written back guarded by its
resourceVersion (optimistic concurrency), so a concurrent edit is retried on fresh data, never lost."""
from __future__ import annotations

from typing import Callable

from labkit import settings as names
from labkit._kube import Conflict, Kube
from labkit.errors import LabError
from labkit.flags import FlagChange, FlagFile

_CONFLICT_ATTEMPTS = 5      # re-reads after a 409 before giving up


def parse(cm: dict) -> FlagFile:
    """The flag file a ConfigMap holds (its JSON under the lab's key, its metadata kept)."""
    return FlagFile.from_configmap(cm.get("data") or {}, name=names.CONFIGMAP, key=names.CONFIG_KEY,
                                   metadata=cm.get("metadata") or {})


class FlagConfigMap:
    """ConfigMap flagd-config through one namespace's Kubernetes API."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self.conflicts = 0  # 409s retried by the last update (for display and tests)

    def read(self) -> dict:
        return self.kube.call("GET", self.kube.path("configmaps", names.CONFIGMAP), "get", "configmaps",
                              names.CONFIGMAP)

    def flag_file(self) -> FlagFile:
        """The live flag file from ConfigMap flagd-config (what flagd loads when a pod starts)."""
        return parse(self.read())

    def set_default_variant(self, flag: str, variant: str, dry_run: bool = False) -> FlagChange:
        """Change one flag's defaultVariant in the live ConfigMap, guarded by resourceVersion.

        A 409 (someone else wrote in between) re-reads and re-applies this one change on the fresh
        data, so their edit survives. Malformed live JSON is refused before anything is written.
        """
        def edit(cm: dict):
            change = parse(cm).set_default_variant(flag, variant)
            if dry_run or not change.changed:
                return change, None
            cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: change.after.to_json()})
            return change, cm

        return self.update(edit, f"{flag} was not changed")

    def update(self, edit: Callable[[dict], tuple], unchanged: str):
        """edit(configmap) -> (result, the ConfigMap to write or None), written with the resourceVersion
        read (optimistic concurrency); a 409 re-reads and re-applies the edit on the fresh data."""
        self.conflicts = 0
        for _ in range(_CONFLICT_ATTEMPTS):
            result, cm = edit(self.read())
            if cm is None:
                return result
            try:
                self.kube.call("PUT", self.kube.path("configmaps", names.CONFIGMAP), "update", "configmaps",
                               names.CONFIGMAP, body=cm)
                return result
            except Conflict:
                self.conflicts += 1
        raise LabError(f"ConfigMap {names.CONFIGMAP} kept changing under us ({_CONFLICT_ATTEMPTS} "
                       f"conflicting writes); {unchanged}. Try again in a moment.")
