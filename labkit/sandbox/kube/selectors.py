"""Label and field selectors of list and watch requests: parsing and matching."""
from __future__ import annotations

from labkit.sandbox.kube.discovery import NS
from labkit.sandbox.kube.errors import bad_request

FIELDS = ("metadata.name", "metadata.namespace", "status.phase")


def parse_label_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """`k=v,k==v,k!=v,k,!k` -> [(op, key, value)] ('in' sets are not needed by the lab's clients)."""
    terms = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif part.startswith("!"):
            terms.append(("!", part[1:].strip(), None))
        else:
            terms.append(("exists", part, None))
    return terms


def labels_match(labels: dict, terms) -> bool:
    for op, k, v in terms:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
    return True


def parse_field_selector(text: str | None) -> dict[str, str]:
    fields = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        k, _, v = part.replace("==", "=").partition("=")
        if k not in FIELDS:
            raise bad_request(f'"{k}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        fields[k] = v
    return fields


def object_matches(obj: dict, terms, fields: dict) -> bool:
    meta = obj["metadata"]
    if not labels_match(meta.get("labels") or {}, terms):
        return False
    actual = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", NS),
              "status.phase": (obj.get("status") or {}).get("phase", "")}
    return all(actual[k] == v for k, v in fields.items())


class Selector:
    """A list or watch request's label and field selectors, parsed once (a bad one is a 400)."""

    def __init__(self, label_selector: str | None = None, field_selector: str | None = None):
        self.terms = parse_label_selector(label_selector)
        self.fields = parse_field_selector(field_selector)

    def __call__(self, obj: dict) -> bool:
        return object_matches(obj, self.terms, self.fields)
