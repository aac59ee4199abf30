"""The Documents API, /platform/document/v1, over `tenant.documents` (the runbook notebook).

Bearer platform token only (an Api-Token is not one: 401, as for any platform service); scopes
document:documents:read/write/delete, document:trash.documents:read/delete/restore. Shapes from
the SDK `@dynatrace-sdk/client-document` 1.30.0 (models, and its cjs for form-data fields and
status codes) and the reference (tenant-setup.md §C). Error body {"error":{"code","message",
"details":{"errorRef"}}}; a missing scope: 403 with details.missingScopes (observed on platform
services, dynatrace-answers.md §2).

Choices where no public source settles it: `version` is a JSON integer (the SDK types it string,
monaco and dtctl read an int; both parse); a custom id still in the trash is taken (409) until
purged; isPrivate on create defaults to true and "false" makes it public (the Oct-2026 docs).
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import secrets
import uuid

from labkit.sandbox.dynatrace.store import ConfigError, Document
from labkit.sandbox.dynatrace.tenant import Tenant, bearer
from labkit.sandbox.dynatrace.times import iso_ms
from labkit.sandbox.http import HttpError, Request, Response, Route, Router, json_response

PREFIX = "/platform/document/v1"
ID_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FIELDS = ("id", "name", "type", "version", "owner", "isPrivate", "originAppId", "originExtensionId",
          "modificationInfo.createdBy", "modificationInfo.createdTime",
          "modificationInfo.lastModifiedBy", "modificationInfo.lastModifiedTime")


class DocumentError(HttpError):
    def __init__(self, status: int, message: str, **details):
        super().__init__(status, message)
        self.details = details

    def response(self) -> Response:
        details = {"errorRef": str(uuid.uuid4()), **self.details}
        return json_response({"error": {"code": self.status, "message": self.message,
                                        "details": details}}, self.status)


def _authorize(tenant: Tenant, req: Request, scope: str) -> str:
    token = bearer(req)
    if token is None or token not in tenant.platform_tokens:
        raise DocumentError(401, "API token or tenant missing or corrupt. Send Authorization: "
                                 "Bearer <platform token>")
    if scope not in tenant.platform_tokens.scopes(token):
        raise DocumentError(403, "The authorization token does not provide the necessary "
                                 "permissions.", missingScopes=[scope])
    return scope


def _found(tenant: Tenant, doc_id: str) -> Document:
    try:
        return tenant.documents.get(doc_id)
    except ConfigError:
        raise DocumentError(404, f"Document {doc_id} not found") from None


def _version(req: Request, doc: Document) -> None:
    raw = req.query.get("optimistic-locking-version")
    if raw is None:
        raise DocumentError(400, "The query parameter optimistic-locking-version is required")
    if raw != str(doc.version):
        raise DocumentError(409, f"Document {doc.id} is at version {doc.version}, not {raw}: read it "
                                 "again")


# ----- shapes -------------------------------------------------------------------------------
def metadata(doc: Document) -> dict:
    return {"id": doc.id, "name": doc.name, "type": doc.type, "description": doc.description,
            "version": doc.version, "owner": doc.owner, "isPrivate": doc.is_private,
            "isReshareable": doc.is_reshareable, "access": ["read", "write", "delete"],
            "modificationInfo": {"createdBy": doc.owner, "createdTime": iso_ms(doc.created),
                                 "lastModifiedBy": doc.owner, "lastModifiedTime": iso_ms(doc.modified)},
            "originAppId": None, "originExtensionId": None}


def _trash_entry(doc: Document) -> dict:
    return {"id": doc.id, "name": doc.name, "type": doc.type, "version": doc.version,
            "owner": doc.owner, "modificationInfo": metadata(doc)["modificationInfo"],
            "deletionInfo": {"deletedBy": doc.owner, "deletedTime": iso_ms(doc.deleted)}}


def _multipart(parts: list[tuple[str, str, bytes, str | None]]) -> Response:
    """(name, content type, data, filename) as multipart/form-data; the SDK's parser wants
    `multipart/form-data;boundary=` with no space."""
    boundary = "labkit" + secrets.token_hex(12)
    out = b""
    for name, ctype, data, filename in parts:
        file = f'; filename="{filename}"' if filename else ""
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return Response(200, out + f"--{boundary}--\r\n".encode(), f"multipart/form-data;boundary={boundary}")


def _form(req: Request) -> dict[str, tuple[bytes, str]]:
    """The request's form-data fields: name -> (data, content type)."""
    ctype = req.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise DocumentError(400, "The request body must be multipart/form-data")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.body)
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_payload(decode=True) or b"", part.get_content_type())
    return fields


def _text(fields: dict, name: str, limit: int, required: bool = False) -> str | None:
    if name not in fields:
        if required:
            raise DocumentError(400, f"The form field {name} is required")
        return None
    value = fields[name][0].decode()
    if len(value) > limit or (required and not value.strip()):
        raise DocumentError(400, f"The form field {name} must be 1 to {limit} characters")
    return value


def _bool(fields: dict, name: str) -> bool | None:
    value = _text(fields, name, 5)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise DocumentError(400, f"The form field {name} must be true or false")
    return value == "true"


# ----- documents ----------------------------------------------------------------------------
def create_document(tenant: Tenant, req: Request) -> Response:
    _authorize(tenant, req, "document:documents:write")
    fields = _form(req)
    doc_id = _text(fields, "id", 100)
    if doc_id is not None and (not ID_RE.match(doc_id) or UUID_RE.match(doc_id)):
        raise DocumentError(400, f"Invalid document id {doc_id!r}: use letters, digits and '-', at "
                                 "most 100, and not a bare UUID")
    if "content" not in fields:
        raise DocumentError(400, "The form field content is required")
    content, ctype = fields["content"]
    private = _bool(fields, "isPrivate")
    try:
        doc = tenant.documents.create(
            _text(fields, "name", 128, True), _text(fields, "type", 128, True), content, doc_id,
            ctype, _text(fields, "description", 256), is_private=True if private is None else private)
    except ConfigError as err:
        raise DocumentError(409, err.message) from None
    return json_response(metadata(doc), 201)


def list_documents(tenant: Tenant, req: Request) -> Response:
    _authorize(tenant, req, "document:documents:read")
    return json_response(_page(req, [metadata(d) for d in tenant.documents.list()], 20, 1000))


def _page(req: Request, items: list[dict], default: int, maximum: int) -> dict:
    key = req.query.get("page-key")
    if key:
        offset, params = _decode_key(key)
    else:
        params = {k: req.query.get(k) for k in ("filter", "sort", "page-size", "page")}
        offset = 0
    size = params.get("page-size") or str(default)
    if not size.isdigit() or not 1 <= int(size) <= maximum:
        raise DocumentError(400, f"page-size must be between 1 and {maximum}")
    size = int(size)
    if not key and params.get("page"):
        if not params["page"].isdigit() or int(params["page"]) < 1:
            raise DocumentError(400, "page must be 1 or more")
        offset = (int(params["page"]) - 1) * size
    keep = _filter(params.get("filter"))
    found = [i for i in items if keep(i)]
    for part in reversed([p.strip() for p in (params.get("sort") or "").split(",") if p.strip()]):
        found.sort(key=lambda i: str(_field(i, part.lstrip("+-"))), reverse=part.startswith("-"))
    body = {"documents": found[offset:offset + size], "totalCount": len(found)}
    if offset + size < len(found):
        body["nextPageKey"] = _encode_key(offset + size, {**params, "page-size": str(size), "page": None})
    return body


def _encode_key(offset: int, params: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, params]).encode()).decode()


def _decode_key(key: str) -> tuple[int, dict]:
    try:
        offset, params = json.loads(base64.urlsafe_b64decode(key.encode()))
        return int(offset), params
    except ValueError:
        raise DocumentError(400, "Invalid page-key") from None


# ----- filter: the subset labkit and the SDK use (name == 'x' and type == 'notebook') ---------
CLAUSE = re.compile(r"""\s*([\w.]+)\s+(==|=|!=|contains|starts-with|in|exists)\s*"""
                    r"""('(?:[^'\\]|\\.)*'|\((?:\s*'(?:[^'\\]|\\.)*'\s*,?)*\)|true|false|-?\d+)?\s*""")


def _filter(raw: str | None):
    if not raw:
        return lambda item: True
    groups = [[_clause(p) for p in re.split(r"\s+and\s+", alt)] for alt in re.split(r"\s+or\s+", raw.strip())]
    return lambda item: any(all(c(item) for c in group) for group in groups)


def _clause(text: str):
    found = CLAUSE.fullmatch(text)
    if not found or found[1] not in FIELDS or (found[2] != "exists") != bool(found[3]):
        raise DocumentError(400, f"Cannot parse the filter clause {text.strip()!r} (fields: "
                                 f"{', '.join(FIELDS)})")
    name, op, literal = found.groups()
    if op == "in":
        wants = [w.replace("\\'", "'") for w in re.findall(r"'((?:[^'\\]|\\.)*)'", literal)]
    else:
        want = literal and (literal[1:-1].replace("\\'", "'") if literal.startswith("'") else literal)

    def test(item: dict) -> bool:
        have = _field(item, name)
        text_have = str(have).lower() if isinstance(have, bool) else str(have)
        if op == "exists":
            return have is not None
        if op == "in":
            return text_have in wants
        if op in ("==", "="):
            return text_have == want
        if op == "!=":
            return text_have != want
        return want in text_have if op == "contains" else text_have.startswith(want)
    return test


def _field(item: dict, name: str):
    for part in name.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def _snapshot(doc: Document, req: Request) -> tuple[bytes, str, dict]:
    """The content, its type and metadata: the document's, or a snapshot-version's."""
    raw = req.query.get("snapshot-version")
    if raw is None:
        return doc.content, doc.content_type, metadata(doc)
    for snap in doc.snapshots:
        if str(snap["snapshotVersion"]) == raw:
            return snap["content"], snap["contentType"], {**metadata(doc), "version": snap["documentVersion"]}
    raise DocumentError(404, f"Document {doc.id} has no snapshot {raw}")


def get_document(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:documents:read")
    content, ctype, meta = _snapshot(_found(tenant, id), req)
    return _multipart([("metadata", "application/json", json.dumps(meta).encode(), None),
                       ("content", ctype, content, req.query.get("filename") or "content")])


def get_metadata(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:documents:read")
    return json_response(_snapshot(_found(tenant, id), req)[2])


def get_content(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:documents:read")
    content, ctype, _ = _snapshot(_found(tenant, id), req)
    name = req.query.get("filename") or id
    return Response(200, content, ctype, {"Content-Disposition": f'attachment; filename="{name}"'})


def update_document(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:documents:write")
    fields = _form(req)
    changes = {"name": _text(fields, "name", 128), "type": _text(fields, "type", 128),
               "description": _text(fields, "description", 256),
               "is_private": _bool(fields, "isPrivate"), "is_reshareable": _bool(fields, "isReshareable")}
    if "content" in fields:
        changes["content"], changes["content_type"] = fields["content"]
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise DocumentError(400, "Nothing to update: send at least one form field")
    with tenant.documents.lock:
        doc = _found(tenant, id)
        _version(req, doc)
        snap = req.query.get("create-snapshot") == "true"
        made = tenant.documents.update(id, changes, _text(fields, "snapshotDescription", 256) if snap else None,
                                       snapshot=snap)
    body = {"documentMetadata": metadata(doc)}
    if made is not None:
        body["createdSnapshot"] = {"snapshotVersion": made}
    return json_response(body)


def update_content(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:documents:write")
    fields = _form(req)
    if "content" not in fields:
        raise DocumentError(400, "The form field content is required")
    with tenant.documents.lock:
        doc = _found(tenant, id)
        _version(req, doc)
        content, ctype = fields["content"]
        tenant.documents.update(id, {"content": content, "content_type": ctype})
    return json_response(metadata(doc))


def delete_document(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:documents:delete")
    with tenant.documents.lock:
        doc = _found(tenant, id)
        _version(req, doc)
        tenant.documents.delete(id, doc.version)
    return Response(204, b"")


# ----- the trash ------------------------------------------------------------------------------
def _trashed(tenant: Tenant, doc_id: str) -> Document:
    for doc in tenant.documents.trash():
        if doc.id == doc_id:
            return doc
    raise DocumentError(404, f"Document {doc_id} is not in the trash")


def list_trash(tenant: Tenant, req: Request) -> Response:
    _authorize(tenant, req, "document:trash.documents:read")
    return json_response(_page(req, [_trash_entry(d) for d in tenant.documents.trash()], 20, 1000))


def get_trashed(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:trash.documents:read")
    return json_response(_trash_entry(_trashed(tenant, id)))


def purge(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:trash.documents:delete")
    _trashed(tenant, id)
    tenant.documents.purge(id)
    return Response(204, b"")


def restore(tenant: Tenant, req: Request, id: str) -> Response:  # noqa: A002
    _authorize(tenant, req, "document:trash.documents:restore")
    _trashed(tenant, id)
    tenant.documents.restore(id)
    return Response(204, b"")


ROUTES = Router([
    Route(f"{PREFIX}/documents", list_documents),
    Route(f"{PREFIX}/documents", create_document, ("POST",)),
    Route(f"{PREFIX}/documents/{{id}}", get_document),
    Route(f"{PREFIX}/documents/{{id}}", update_document, ("PATCH",)),
    Route(f"{PREFIX}/documents/{{id}}", delete_document, ("DELETE",)),
    Route(f"{PREFIX}/documents/{{id}}/metadata", get_metadata),
    Route(f"{PREFIX}/documents/{{id}}/content", get_content),
    Route(f"{PREFIX}/documents/{{id}}/content", update_content, ("PUT",)),
    Route(f"{PREFIX}/trash/documents", list_trash),
    Route(f"{PREFIX}/trash/documents/{{id}}", get_trashed),
    Route(f"{PREFIX}/trash/documents/{{id}}", purge, ("DELETE",)),
    Route(f"{PREFIX}/trash/documents/{{id}}/restore", restore, ("POST",)),
], DocumentError, name="the local lab's Documents API")
