"""The Documents API (`/platform/document/v1`): the runbook notebook. Platform token only.

No classic API token reaches documents (tenant-setup.md, open question 10), so every call here takes
DT_PLATFORM_TOKEN: document:documents:read / :write / :delete and document:trash.documents:delete.
A document is created as multipart/form-data with labkit's own id and `isPrivate=false` (the Oct-2026
REST docs accept it on create; without it only its owner could open the runbook link). Deleting
takes the version it was read at (`optimistic-locking-version`) and moves it to the trash; labkit
then purges the trash entry (as monaco's core client does), so the id can be used again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from labkit.dynatrace._http import json_object
from labkit.errors import NotFound

if TYPE_CHECKING:  # pragma: no cover
    from labkit.dynatrace._http import Http

DOCUMENTS = "/platform/document/v1/documents"
TRASH = "/platform/document/v1/trash/documents"
READ, WRITE, DELETE = "document:documents:read", "document:documents:write", "document:documents:delete"
PURGE = "document:trash.documents:delete"


@dataclass
class Document:
    """A document's metadata: its id, name, type, owner and version (for optimistic locking)."""

    id: str
    name: str
    type: str
    version: str  # the SDK types it a string, monaco's core an int: kept as sent back
    owner: str | None = None
    is_private: bool | None = None

    @classmethod
    def from_metadata(cls, body: dict) -> "Document":
        return cls(str(body.get("id") or ""), str(body.get("name") or ""), str(body.get("type") or ""),
                   str(body.get("version") if body.get("version") is not None else ""),
                   body.get("owner"), body.get("isPrivate"))


class Documents:
    """The tenant's documents (notebooks, dashboards), through the lab's one request path."""

    def __init__(self, http: "Http"):
        self._http = http

    def list(self, filter: str | None = None, max_pages: int = 20) -> list[Document]:
        """Documents matching a Documents filter, e.g. `name == 'Redis Troubleshooting'`."""
        what = "to list documents"
        params: dict = {"filter": filter, "page-size": 1000}
        found: list[Document] = []
        for _ in range(max_pages):
            resp = self._http.request("platform", "GET", DOCUMENTS, scope=READ, what=what, params=params)
            page = json_object(resp, what)
            found += [Document.from_metadata(d) for d in page.get("documents") or [] if isinstance(d, dict)]
            if not page.get("nextPageKey"):
                return found
            params = {"page-key": page["nextPageKey"]}
        return found

    def metadata(self, document_id: str) -> Document | None:
        """The document's metadata, or None when the tenant has no document of that id."""
        what = f"to read the document {document_id}"
        try:
            resp = self._http.request("platform", "GET", f"{DOCUMENTS}/{document_id}/metadata",
                                      scope=READ, what=what)
        except NotFound:
            return None
        return Document.from_metadata(json_object(resp, what))

    def create(self, name: str, type: str, content: bytes, *, document_id: str | None = None,
               private: bool = False) -> Document:
        """POST one document (201); Conflict (409) when its id is taken."""
        what = f"to create the {type} {name!r}"
        form = {"name": name, "type": type, "isPrivate": "true" if private else "false"}
        if document_id:
            form["id"] = document_id
        resp = self._http.request("platform", "POST", DOCUMENTS, scope=WRITE, what=what, idempotent=False,
                                  form=form, files={"content": ("content.json", content, "application/json")})
        return Document.from_metadata(json_object(resp, what))

    def delete(self, document: Document) -> None:
        """DELETE at the version it was read (Conflict when it changed since); it goes to the trash."""
        self._http.request("platform", "DELETE", f"{DOCUMENTS}/{document.id}", scope=DELETE,
                           what=f"to delete the document {document.id}", idempotent=False,
                           params={"optimistic-locking-version": document.version})

    def purge(self, document_id: str) -> None:
        """Remove a deleted document from the trash for good (its id is free again)."""
        self._http.request("platform", "DELETE", f"{TRASH}/{document_id}", scope=PURGE,
                           what=f"to purge the document {document_id} from the trash", idempotent=False)
