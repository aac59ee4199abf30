"""The local tenant's Documents API over real HTTP (httpx) with a platform token: the runbook
notebook as labkit uploads it (custom id, isPrivate=false), found by the filter labkit uses, read
whole (multipart) and in parts, updated under optimistic locking with snapshots, deleted to the
trash, restored and purged; an Api-Token and a token without the scope refused as on a tenant."""
from __future__ import annotations

import email.parser
import email.policy
import json

import httpx
import pytest

from labkit.sandbox import make_token

DOCS = "/platform/document/v1/documents"
TRASH = "/platform/document/v1/trash/documents"
NOTEBOOK = {"version": "6", "defaultTimeframe": {"from": "now()-30m", "to": "now()"}, "sections": []}


@pytest.fixture
def sandbox(tenant_sandbox):
    """A bare tenant (nothing made yet), as a tenant is before getting-started."""
    return tenant_sandbox(bare=True)


def form(**fields) -> dict:
    """Plain form fields sent as multipart/form-data parts (the API takes nothing else)."""
    return {k: (None, v) for k, v in fields.items()}


def create(client, doc_id="labkit-redis-troubleshooting", name="Redis Troubleshooting", **form):
    data = {"name": name, "type": "notebook", **({"id": doc_id} if doc_id else {}), **form}
    return client.post(DOCS, data=data, files={"content": ("content.json", json.dumps(NOTEBOOK),
                                                           "application/json")})


def test_the_runbook_is_created_with_its_custom_id_and_found_by_name_and_type(sandbox):
    made = create(sandbox.grail, isPrivate="false")
    assert made.status_code == 201
    meta = made.json()
    assert meta["id"] == "labkit-redis-troubleshooting" and meta["version"] == 1
    assert meta["isPrivate"] is False and meta["type"] == "notebook"
    create(sandbox.grail, doc_id=None, name="Someone else's notebook")
    found = sandbox.grail.get(DOCS, params={"filter": "name == 'Redis Troubleshooting' and type == 'notebook'"})
    assert [d["id"] for d in found.json()["documents"]] == ["labkit-redis-troubleshooting"]
    by_id = sandbox.grail.get(DOCS, params={"filter": "id == 'labkit-redis-troubleshooting'"}).json()
    assert by_id["totalCount"] == 1
    assert create(sandbox.grail).status_code == 409  # the id is taken
    private = sandbox.grail.get(f"{DOCS}/{found.json()['documents'][0]['id']}/metadata").json()
    assert private["isPrivate"] is False


@pytest.mark.parametrize("bad_id", ["has space", "x" * 101, "c21c01cb-b4ad-4eae-9279-a3853f38b1de"])
def test_custom_ids_follow_the_rules(sandbox, bad_id):
    resp = create(sandbox.grail, doc_id=bad_id)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 400
    assert "errorRef" in resp.json()["error"]["details"]
    assert create(sandbox.grail, doc_id="my-c21c01cb-b4ad-4eae-9279-a3853f38b1de").status_code == 201


def test_read_whole_as_multipart_and_in_parts(sandbox):
    create(sandbox.grail)
    whole = sandbox.grail.get(f"{DOCS}/labkit-redis-troubleshooting")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("multipart/form-data;boundary=")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + whole.headers["content-type"].encode() + b"\r\n\r\n" + whole.content)
    parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
             for p in msg.iter_parts()}
    assert json.loads(parts["metadata"])["name"] == "Redis Troubleshooting"
    assert json.loads(parts["content"]) == NOTEBOOK
    content = sandbox.grail.get(f"{DOCS}/labkit-redis-troubleshooting/content")
    assert content.json() == NOTEBOOK and content.headers["content-type"] == "application/json"
    assert sandbox.grail.get(f"{DOCS}/nothing-here/metadata").status_code == 404


def test_updates_need_the_current_version_and_snapshots_keep_the_old_content(sandbox):
    create(sandbox.grail)
    path = f"{DOCS}/labkit-redis-troubleshooting"
    assert sandbox.grail.patch(path, files=form(name="x")).status_code == 400  # version required
    new = {**NOTEBOOK, "sections": [{"id": "a", "type": "markdown", "markdown": "# Contacts"}]}
    patched = sandbox.grail.patch(path, params={"optimistic-locking-version": "1", "create-snapshot": "true"},
                                  files={"content": ("content.json", json.dumps(new), "application/json")})
    assert patched.status_code == 200
    assert patched.json()["documentMetadata"]["version"] == 2 and patched.json()["createdSnapshot"] == {
        "snapshotVersion": 1}
    stale = sandbox.grail.patch(path, params={"optimistic-locking-version": "1"}, files=form(name="lost"))
    assert stale.status_code == 409
    assert sandbox.grail.get(f"{path}/content").json() == new
    assert sandbox.grail.get(f"{path}/content", params={"snapshot-version": "1"}).json() == NOTEBOOK
    put = sandbox.grail.put(f"{path}/content", params={"optimistic-locking-version": "2"},
                            files={"content": ("content.json", json.dumps(NOTEBOOK), "application/json")})
    assert put.status_code == 200 and put.json()["version"] == 3


def test_delete_goes_to_the_trash_which_restores_or_purges(sandbox):
    create(sandbox.grail)
    path = f"{DOCS}/labkit-redis-troubleshooting"
    assert sandbox.grail.delete(path).status_code == 400  # version required
    assert sandbox.grail.delete(path, params={"optimistic-locking-version": "7"}).status_code == 409
    assert sandbox.grail.delete(path, params={"optimistic-locking-version": "1"}).status_code == 204
    assert sandbox.grail.get(path).status_code == 404
    trash = sandbox.grail.get(TRASH).json()
    assert [d["id"] for d in trash["documents"]] == ["labkit-redis-troubleshooting"]
    assert trash["documents"][0]["deletionInfo"]["deletedTime"]
    assert create(sandbox.grail).status_code == 409  # still taken while in the trash
    assert sandbox.grail.post(f"{TRASH}/labkit-redis-troubleshooting/restore").status_code == 204
    assert sandbox.grail.get(f"{path}/metadata").json()["version"] == 1
    sandbox.grail.delete(path, params={"optimistic-locking-version": "1"})
    assert sandbox.grail.delete(f"{TRASH}/labkit-redis-troubleshooting").status_code == 204
    assert sandbox.grail.get(TRASH).json()["totalCount"] == 0
    assert create(sandbox.grail).status_code == 201  # purged: the id is free again


def test_paging_with_page_size_and_page_key(sandbox):
    for i in range(5):
        create(sandbox.grail, doc_id=f"doc-{i}", name=f"N{i}")
    first = sandbox.grail.get(DOCS, params={"page-size": 2}).json()
    seen, key = [d["id"] for d in first["documents"]], first.get("nextPageKey")
    while key:
        page = sandbox.grail.get(DOCS, params={"page-key": key}).json()
        seen, key = seen + [d["id"] for d in page["documents"]], page.get("nextPageKey")
    assert seen == [f"doc-{i}" for i in range(5)] and first["totalCount"] == 5
    assert sandbox.grail.get(DOCS, params={"page-size": 1001}).status_code == 400


def test_an_api_token_and_a_token_without_the_scope_are_refused(sandbox):
    resp = sandbox.api.get(DOCS)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 401
    reader = make_token("dt0s16")
    sandbox.tenant.platform_tokens.add(reader, {"document:documents:read"})
    with httpx.Client(base_url=sandbox.tenant_server.url, headers={"Authorization": f"Bearer {reader}"}) as c:
        assert c.get(DOCS).status_code == 200
        denied = create(c)
        assert denied.status_code == 403
        assert denied.json()["error"]["details"]["missingScopes"] == ["document:documents:write"]
        assert c.get(TRASH).status_code == 403
