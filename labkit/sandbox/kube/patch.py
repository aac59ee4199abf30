"""PATCH bodies: JSON merge patch (strategic merge read as one) and JSON patch, chosen by Content-Type."""
from __future__ import annotations

import copy

from labkit.sandbox.kube.errors import StatusError, bad_request


def merge_patch(target, patch):
    """RFC 7386 merge patch; strategic-merge directives ($patch, $setElementOrder/...) are dropped.

    Good enough for ConfigMaps and the Deployment fields kubectl touches (annotations, replicas):
    lists are replaced whole, `null` deletes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _rejected(message: str) -> StatusError:
    return StatusError(422, "Invalid", message)


def _parent(doc, path: str):
    """The container a JSON pointer points into, and the last key in it."""
    if not path.startswith("/"):
        raise _rejected(f"invalid JSON pointer {path!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    node = doc
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    return node, parts[-1]


def _get(doc, path: str):
    node, last = _parent(doc, path)
    return node[int(last)] if isinstance(node, list) else node[last]


def _put(doc, path: str, value, replace: bool = False) -> None:
    node, last = _parent(doc, path)
    if isinstance(node, list):
        if last == "-":
            node.append(value)
        elif replace:
            node[int(last)] = value
        else:
            node.insert(int(last), value)
    else:
        if replace and last not in node:
            raise KeyError(last)
        node[last] = value


def _remove(doc, path: str):
    node, last = _parent(doc, path)
    return node.pop(int(last)) if isinstance(node, list) else node.pop(last)


def _apply(doc, op: dict) -> None:
    kind, path = op["op"], op["path"]
    if kind == "add":
        _put(doc, path, copy.deepcopy(op["value"]))
    elif kind == "remove":
        _remove(doc, path)
    elif kind == "replace":
        _put(doc, path, copy.deepcopy(op["value"]), replace=True)
    elif kind == "test":
        if _get(doc, path) != op["value"]:
            raise _rejected(f"the server rejected our request due to an error in our request: "
                            f"testing value {path} failed")
    elif kind in ("move", "copy"):
        value = _remove(doc, op["from"]) if kind == "move" else copy.deepcopy(_get(doc, op["from"]))
        _put(doc, path, value)
    else:
        raise _rejected(f"Unexpected kind: {kind}")


def json_patch(doc, ops):
    """RFC 6902: add, remove, replace, test, move, copy."""
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            _apply(doc, op)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise _rejected(f"the server rejected our request due to an error in our "
                        f"request: jsonpatch: {exc!r}") from None
    return doc


def patched(live: dict, content_type: str, patch):
    """`live` with the patch applied, by the patch's media type (the body was decoded already)."""
    if content_type.startswith("application/json-patch+json"):
        if not isinstance(patch, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        return json_patch(live, patch)
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
    return merge_patch(live, patch)
