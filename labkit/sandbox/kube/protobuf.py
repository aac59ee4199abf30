"""The apiserver's protobuf envelope, enough to read what kubectl sends that way (create configmap, auth)."""
from __future__ import annotations

import base64

MAGIC = b"k8s\x00"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def fields(data: bytes) -> list[tuple[int, object]]:
    """A message's (field number, value): ints for varints, bytes for length-delimited."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def _map(entries: list[bytes], binary: bool = False) -> dict:
    out = {}
    for entry in entries:
        kv = dict(fields(entry))
        value = kv.get(2, b"")
        out[kv.get(1, b"").decode()] = base64.b64encode(value).decode() if binary else value.decode()
    return out


def _meta(data: bytes) -> dict:
    meta: dict = {}
    labels, annotations = [], []
    for number, value in fields(data):
        if number in (1, 2, 3) and value:
            meta[{1: "name", 2: "generateName", 3: "namespace"}[number]] = value.decode()
        elif number == 11:
            labels.append(value)
        elif number == 12:
            annotations.append(value)
    if labels:
        meta["labels"] = _map(labels)
    if annotations:
        meta["annotations"] = _map(annotations)
    return meta


def _envelope(body: bytes) -> tuple[str, str, bytes]:
    if not body.startswith(MAGIC):
        raise ValueError("provided data does not appear to be a protobuf message, expected prefix "
                         "[107 56 115 0]")
    unknown = dict(fields(body[len(MAGIC):]))
    type_meta = dict(fields(unknown.get(1, b"")))
    return type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode(), unknown.get(2, b"")


ATTRIBUTES = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}


def _review(api_version: str, kind: str, raw: bytes) -> dict:
    """SelfSubject{Access,Rules}Review and SelfSubjectReview, as `kubectl auth` sends them."""
    spec: dict = {}
    for number, value in fields(raw):
        if number != 2:  # 1 is metadata, 3 status
            continue
        for n, v in fields(value):
            if kind == "SelfSubjectAccessReview" and n in (1, 2):
                names = ATTRIBUTES if n == 1 else {1: "path", 2: "verb"}
                spec["resourceAttributes" if n == 1 else "nonResourceAttributes"] = {
                    names[k]: x.decode() for k, x in fields(v) if k in names and isinstance(x, bytes)}
            elif kind == "SelfSubjectRulesReview" and n == 1:
                spec["namespace"] = v.decode()
    return {"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": spec}


def decode(body: bytes) -> dict:
    """An encoded object -> its JSON form; ValueError for a kind the local lab does not read this way."""
    api_version, kind, raw = _envelope(body)
    if kind in ("SelfSubjectAccessReview", "SelfSubjectRulesReview", "SelfSubjectReview"):
        return _review(api_version, kind, raw)
    if (api_version, kind) != ("v1", "ConfigMap"):
        raise ValueError(f"the local lab reads protobuf only for ConfigMaps, not {kind or 'this'}")
    obj: dict = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    data, binary = [], []
    for number, value in fields(raw):
        if number == 1:
            obj["metadata"] = _meta(value)
        elif number == 2:
            data.append(value)
        elif number == 3:
            binary.append(value)
        elif number == 4:
            obj["immutable"] = bool(value)
    if data:
        obj["data"] = _map(data)
    if binary:
        obj["binaryData"] = _map(binary, binary=True)
    return obj
