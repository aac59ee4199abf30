"""Label and field selectors of list and watch requests: parsing (apimachinery's grammar) and matching."""
from __future__ import annotations

import re

from labkit.sandbox.kube.errors import bad_request

# fields every kind has, and the ones each kind adds (apiserver's field label conversion funcs)
FIELDS = {
    "*": ("metadata.name", "metadata.namespace"),
    "pods": ("status.phase", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName", "spec.hostNetwork"),
    "events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type"),
    "namespaces": ("status.phase",),
    "nodes": ("spec.unschedulable",),
    "replicasets": ("status.replicas",),
}
NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_RULE = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
             "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
             "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
              "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
              "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
OPERATORS = ("!=", "==", "=", "in", "notin", ">", "<")
TOKEN = re.compile(r"\s*(!=|==|=|!|,|\(|\)|>|<|[^\s!=,()<>]+)")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while True:
        found = TOKEN.match(text, pos)
        if not found:
            return out + [""]  # '' is the end of the string, as the Go lexer reports it
        out.append(found[1])
        pos = found.end()


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not PREFIX.match(prefix)):
        raise _invalid(key, "prefix part must be a lowercase RFC 1123 subdomain")
    if not NAME.match(name) or len(name) > 63:
        raise _invalid(key, NAME_RULE if len(name) <= 63 else "name part must be no more than 63 characters")


def _check_value(value: str) -> None:
    if value and (len(value) > 63 or not NAME.match(value)):
        raise _invalid(value, VALUE_RULE if len(value) <= 63 else "must be no more than 63 characters")


def _invalid(value: str, why: str) -> Exception:
    return ValueError(f'Invalid value: "{value}": {why}')


def _values(tokens: list[str], i: int) -> tuple[list[str], int]:
    """`( v1, v2 )` starting at tokens[i]."""
    if tokens[i] != "(":
        raise ValueError(f"found '{tokens[i]}', expected: '('")
    values, i = [], i + 1
    while True:
        tok = tokens[i]
        if tok == ")":
            return values, i + 1
        if tok in ("", "(", "!", "=", "==", "!=", ">", "<"):
            raise ValueError(f"found '{tok}', expected: ',', or identifier")
        if tok == ",":
            values.append("")
            i += 1
            continue
        values.append(tok)
        i += 1
        if tokens[i] == ",":
            i += 1
        elif tokens[i] != ")":
            raise ValueError(f"found '{tokens[i]}', expected: ',' or ')'")


def _requirement(tokens: list[str], i: int) -> tuple[tuple, int]:
    if tokens[i] == "!":
        key = tokens[i + 1]
        if key in ("", ",", "(", ")", "!", "=", "==", "!="):
            raise ValueError(f"found '{key}', expected: identifier")
        _check_key(key)
        return ("!", key, None), i + 2
    key = tokens[i]
    _check_key(key)
    op = tokens[i + 1]
    if op in ("", ","):
        return ("exists", key, None), i + 1
    if op not in OPERATORS:
        raise ValueError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
    if op in ("in", "notin"):
        values, j = _values(tokens, i + 2)
        for v in values:
            _check_value(v)
        return (op, key, values), j
    value = tokens[i + 2] if tokens[i + 2] not in (",", "") else ""
    j = i + 3 if value else i + 2
    if op in (">", "<"):
        if not value.lstrip("-").isdigit():
            raise ValueError("for 'Gt', 'Lt' operators, the value must be an integer")
        return (op, key, int(value)), j
    _check_value(value)
    return ("!=" if op == "!=" else "=", key, value), j


def parse_label_selector(text: str | None) -> list[tuple]:
    """`k=v,k!=v,k,!k,k in (a,b),k notin (a)` -> [(op, key, value)]; a malformed one is a 400."""
    tokens, i, terms = _tokens(text or ""), 0, []
    try:
        while tokens[i] != "":
            if tokens[i] in (",", "(", ")", "=", "==", "!=", ">", "<"):
                raise ValueError(f"found '{tokens[i]}', expected: !, identifier, or 'end of string'")
            try:
                term, i = _requirement(tokens, i)
            except ValueError as exc:
                raise ValueError(f"unable to parse requirement: {exc}") from None
            terms.append(term)
            if tokens[i] == ",":
                if tokens[i + 1] in ("", ",", "(", ")", "=", "==", "!="):
                    raise ValueError(f"found '{tokens[i + 1]}', expected: identifier after ','")
                i += 1
            elif tokens[i] != "":
                raise ValueError(f"found '{tokens[i]}', expected: ',' or 'end of string'")
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return terms


def labels_match(labels: dict, terms) -> bool:
    for op, k, v in terms:
        has = k in labels
        if ((op == "=" and labels.get(k) != v) or (op == "!=" and labels.get(k) == v)
                or (op == "exists" and not has) or (op == "!" and has)
                or (op == "in" and labels.get(k) not in v) or (op == "notin" and has and labels[k] in v)):
            return False
        if op in (">", "<"):
            try:
                n = int(labels[k])
            except (KeyError, ValueError):
                return False
            if (op == ">" and not n > v) or (op == "<" and not n < v):
                return False
    return True


def parse_field_selector(text: str | None, resource: str = "*") -> list[tuple[str, str, str]]:
    """`f=v,f!=v` -> [(field, op, value)]; a field the kind does not index is refused as the apiserver does."""
    known = FIELDS["*"] + FIELDS.get(resource, ())
    terms = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            field, value, op = *part.split("!=", 1), "!="
        elif "=" in part:
            field, value = part.replace("==", "=", 1).split("=", 1)
            op = "="
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if resource != "*" and field not in known:
            raise bad_request(f'field label not supported: {field}')
        terms.append((field, op, value))
    return terms


def field_value(obj: dict, path: str) -> str:
    if path == "source":
        return (obj.get("source") or {}).get("component", "")
    node = obj
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if path == "metadata.namespace" and node is None:
        return ""
    return "" if node is None else (str(node).lower() if isinstance(node, bool) else str(node))


class Selector:
    """A list or watch request's label and field selectors, parsed once (a bad one is a 400)."""

    def __init__(self, label_selector: str | None = None, field_selector: str | None = None,
                 resource: str = "*"):
        self.terms = parse_label_selector(label_selector)
        self.fields = parse_field_selector(field_selector, resource)

    def __call__(self, obj: dict) -> bool:
        if not labels_match(obj["metadata"].get("labels") or {}, self.terms):
            return False
        return all((field_value(obj, f) == v) == (op == "=") for f, op, v in self.fields)
