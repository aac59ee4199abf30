"""What the apiserver refuses before storing: unknown fields (fieldValidation) and invalid names."""
from __future__ import annotations

import re

from labkit.sandbox.kube.discovery import KINDS
from labkit.sandbox.kube.errors import bad_request, invalid

META = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
        "ownerReferences", "finalizers", "managedFields"}
TOP = {"apiVersion", "kind", "metadata"}
FIELDS = {  # resource -> {path: known keys}
    "configmaps": {"": TOP | {"data", "binaryData", "immutable"}},
    "deployments": {"": TOP | {"spec", "status"},
                    "spec": {"replicas", "selector", "template", "strategy", "minReadySeconds",
                             "revisionHistoryLimit", "paused", "progressDeadlineSeconds"},
                    "spec.template": {"metadata", "spec"}},
    "pods": {"": TOP | {"spec", "status"}},
    "services": {"": TOP | {"spec", "status"}},
}
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SUBDOMAIN_RULE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                  "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                  r"for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def _node(obj: dict, path: str):
    node = obj
    for key in filter(None, path.split(".")):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def unknown_fields(resource: str, obj: dict) -> list[str]:
    """Paths of the fields the kind's schema does not declare (top level, metadata, known specs)."""
    found = []
    paths = dict(FIELDS.get(resource, {}), metadata=META)
    if resource == "deployments":
        paths["spec.template.metadata"] = META
    for path, known in paths.items():
        node = _node(obj, path)
        if isinstance(node, dict):
            found += [f"{path}.{k}" if path else k for k in node if k not in known]
    return found


def check_fields(resource: str, obj: dict, mode: str | None) -> dict:
    """fieldValidation=Strict refuses unknown fields (kubectl sends it); Warn and Ignore drop them."""
    unknown = unknown_fields(resource, obj)
    if not unknown:
        return obj
    _, version, kind = KINDS[resource]
    if (mode or "").lower() == "strict":
        raise bad_request(f'{kind} in version "{version.split("/")[-1]}" cannot be handled as a {kind}: '
                          "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown))
    for path in unknown:
        parent, _, key = path.rpartition(".")
        _node(obj, parent).pop(key, None)
    return obj


def check_name(resource: str, name: str) -> None:
    kind = KINDS[resource][2]
    if len(name) > 253:
        raise invalid(kind, name, "metadata.name", name, "must be no more than 253 characters")
    if not SUBDOMAIN.match(name):
        raise invalid(kind, name, "metadata.name", name, SUBDOMAIN_RULE)
