"""The tenant's configuration: Settings 2.0 objects and Documents, as data (no HTTP here).

`SettingsStore` holds settings objects by schema (the OpenPipeline pipelines and routing objects the
lab's getting-started page has attendees create); `DocumentStore` holds documents (the runbook
notebook). The HTTP handlers (settings.py, documents.py) parse, call these and shape the answer;
openpipeline.py reads the route table and the pipelines from here for every log record.
Both are thread-safe: one lock each, held briefly.
"""
from __future__ import annotations

import base64
import itertools
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

PIPELINES = "builtin:openpipeline.logs.pipelines"
ROUTING = "builtin:openpipeline.logs.routing"
# Who a platform token acts as: the local lab has one user (settings objects' owner, documents').
LOCAL_USER = "7d4f6d7e-1ab0-4c3b-9d5e-1ab5c0ffee01"


class ConfigError(Exception):
    """A refusal with its wire status: 400 (invalid), 404 (unknown), 409 (conflict, stale token)."""

    def __init__(self, status: int, message: str, violations: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.violations = status, message, violations or []


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SettingsObject:
    object_id: str
    schema_id: str
    scope: str
    value: dict
    owner: str | None = None  # None: made with an API token (public); else the platform user
    external_id: str | None = None
    created: int = field(default_factory=_now_ms)
    modified: int = field(default_factory=_now_ms)
    revision: int = 0  # bumped on every write; the updateToken encodes it
    created_by: str | None = None  # the user, or the API token's name
    modified_by: str | None = None

    @property
    def update_token(self) -> str:
        raw = f"{self.object_id}:{self.revision}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class SettingsStore:
    """Settings objects in creation order per schema (the order the UI lists them)."""

    def __init__(self):
        self._lock = threading.RLock()
        self.lock = self._lock  # held across a check-then-write (UNIQUE, updateToken) by the API
        self._objects: dict[str, SettingsObject] = {}

    @staticmethod
    def new_object_id() -> str:
        return "vu9U3hXa3q0AAAAB" + base64.urlsafe_b64encode(secrets.token_bytes(30)).decode().rstrip("=")

    def items(self, schema_id: str | None = None) -> list[SettingsObject]:
        with self._lock:
            return [o for o in self._objects.values() if schema_id in (None, o.schema_id)]

    def values(self, schema_id: str) -> list[tuple[str, dict]]:
        """(objectId, a copy of value) of each object of the schema, in creation order."""
        import copy

        with self._lock:
            return [(o.object_id, copy.deepcopy(o.value)) for o in self.items(schema_id)]

    def get(self, object_id: str) -> SettingsObject:
        with self._lock:
            found = self._objects.get(object_id)
            if found is None:
                raise ConfigError(404, f"Settings not found: no object with id {object_id}")
            return found

    def create(self, schema_id: str, value: dict, scope: str = "environment", owner: str | None = None,
               external_id: str | None = None, by: str | None = None) -> SettingsObject:
        with self._lock:
            obj = SettingsObject(self.new_object_id(), schema_id, scope, value, owner, external_id,
                                 created_by=by, modified_by=by)
            self._objects[obj.object_id] = obj
            return obj

    def update(self, object_id: str, value: dict, update_token: str | None = None,
               by: str | None = None) -> SettingsObject:
        with self._lock:
            obj = self.get(object_id)
            self._check_token(obj, update_token)
            obj.value, obj.revision, obj.modified = value, obj.revision + 1, _now_ms()
            obj.modified_by = by
            return obj

    def delete(self, object_id: str, update_token: str | None = None) -> None:
        with self._lock:
            obj = self.get(object_id)
            self._check_token(obj, update_token)
            del self._objects[object_id]

    @staticmethod
    def _check_token(obj: SettingsObject, update_token: str | None) -> None:
        # Without a token the write overrides without checks (the API's documented behaviour).
        if update_token is not None and update_token != obj.update_token:
            raise ConfigError(409, "Failed. Conflicting resource.")


@dataclass
class Document:
    id: str
    name: str
    type: str
    content: bytes
    content_type: str = "application/json"
    description: str | None = None
    owner: str = LOCAL_USER
    is_private: bool = True
    version: int = 1
    created: int = field(default_factory=_now_ms)
    modified: int = field(default_factory=_now_ms)
    # {snapshotVersion, documentVersion, description, content, contentType}: the state before a
    # PATCH with create-snapshot=true
    snapshots: list[dict] = field(default_factory=list)
    is_reshareable: bool = True
    deleted: int | None = None  # when it went to the trash


class DocumentStore:
    """Documents by id; a deleted one sits in the trash until purged or restored."""

    def __init__(self):
        self._lock = threading.RLock()
        self.lock = self._lock  # held across a version check and the write by the API
        self._docs: dict[str, Document] = {}
        self._trash: dict[str, Document] = {}
        self._seq = itertools.count(1)

    def create(self, name: str, type: str, content: bytes, id: str | None = None,
               content_type: str = "application/json", description: str | None = None,
               owner: str = LOCAL_USER, is_private: bool = True) -> Document:
        with self._lock:
            doc_id = id or str(uuid.uuid4())
            if doc_id in self._docs or doc_id in self._trash:
                raise ConfigError(409, f"A document with id {doc_id} already exists")
            doc = Document(doc_id, name, type, content, content_type, description, owner, is_private)
            self._docs[doc_id] = doc
            return doc

    def get(self, doc_id: str) -> Document:
        with self._lock:
            found = self._docs.get(doc_id)
            if found is None:
                raise ConfigError(404, f"Document {doc_id} not found")
            return found

    def list(self) -> list[Document]:
        with self._lock:
            return list(self._docs.values())

    def trash(self) -> list[Document]:
        with self._lock:
            return list(self._trash.values())

    def delete(self, doc_id: str, version: int | None = None) -> None:
        """Into the trash (as the API's DELETE does); a stale version is a 409."""
        with self._lock:
            doc = self.get(doc_id)
            if version is not None and version != doc.version:
                raise ConfigError(409, f"Document {doc_id} is at version {doc.version}, not {version}")
            self._trash[doc_id] = self._docs.pop(doc_id)
            self._trash[doc_id].deleted = _now_ms()

    def update(self, doc_id: str, changes: dict, snapshot_description: str | None = None,
               snapshot: bool = False) -> int | None:
        """Apply `changes` (Document field -> value) as one new version; with `snapshot`, keep the
        state before it and return its snapshotVersion."""
        with self._lock:
            doc = self.get(doc_id)
            made = None
            if snapshot:
                made = len(doc.snapshots) + 1
                doc.snapshots.append({"snapshotVersion": made, "documentVersion": doc.version,
                                      "description": snapshot_description, "content": doc.content,
                                      "contentType": doc.content_type})
            for key, value in changes.items():
                setattr(doc, key, value)
            doc.version, doc.modified = doc.version + 1, _now_ms()
            return made

    def restore(self, doc_id: str) -> Document:
        with self._lock:
            doc = self._trash.pop(doc_id, None)
            if doc is None:
                raise ConfigError(404, f"Document {doc_id} is not in the trash")
            doc.deleted = None
            self._docs[doc_id] = doc
            return doc

    def purge(self, doc_id: str) -> None:
        with self._lock:
            if self._trash.pop(doc_id, None) is None:
                raise ConfigError(404, f"Document {doc_id} is not in the trash")
