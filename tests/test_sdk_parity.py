"""Dynatrace's own TypeScript SDK drives the local tenant: `settingsObjectsClient`
(@dynatrace-sdk/client-classic-environment-v2 9.0.1) creates, lists, updates (with the
updateToken, and gets a 409 on a stale one) and deletes a pipeline and the routing object;
`documentsClient` / `trashClient` (@dynatrace-sdk/client-document 1.30.0) create, list, read,
update and delete a document and purge it from the trash (tests/sdk/drive.mjs).

How the SDK finds the environment and the token outside a Dynatrace app, from its own code
(node_modules/@dynatrace-sdk/http-client 1.3.1, cjs/index.js): every client is built on the shared
`httpClient`, a `HttpClient` whose `_baseUrl` and `_defaultHeaders` are unset (in an app the
platform runtime serves relative URLs); nothing reads the process environment. So the script sets
them with `httpClient._setBaseURL(url)` and `_setDefaultHeaders({Authorization: "Bearer ..."})`
(the alternative, `_OAuthHttpClient`, fetches an OAuth token from an SSO URL first). Two things the
SDK needs that Node 20 lacks or the registry lacks: its multipart decoder reads `navigator.vendor`
(Node 21+ has a navigator; the script gives Node 20 one), and the registry serves http-client
only up to 1.3.1 while client-classic-environment-v2 9.0.1 asks ^1.5.1 (package.json overrides it).

Skips with the reason when node or the installed SDK is missing (`.ci/run` installs it with
`npm install --prefix tests/sdk`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit import tenant as lab

SDK = Path(__file__).parent / "sdk"


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    for package in ("client-classic-environment-v2", "client-document", "http-client"):
        if not (SDK / "node_modules" / "@dynatrace-sdk" / package).is_dir():
            return f"@dynatrace-sdk/{package} is not installed (npm install --prefix tests/sdk)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_dynatraces_own_sdk_drives_the_local_tenants_settings_and_documents(tenant_sandbox):
    sandbox = tenant_sandbox(bare=True)  # the SDK creates the pipeline itself: a tenant not yet set up
    env = {**os.environ, "LAB_URL": sandbox.tenant_server.url, "LAB_TOKEN": sandbox.platform_token,
           "LAB_PIPELINE": json.dumps(lab.pipeline_value()),
           "LAB_ROUTE": json.dumps(lab.route_entry("set-by-the-script"))}
    run = subprocess.run(["node", str(SDK / "drive.mjs")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    steps = {line["step"]: line for line in map(json.loads, run.stdout.splitlines())}
    assert steps["pipeline created"]["code"] == 200
    assert steps["pipelines listed"] == {"step": "pipelines listed", "totalCount": 1, "names": ["Log Errors"]}
    assert steps["routing updated"]["code"] == 200
    assert steps["stale updateToken"]["status"] == 409
    assert steps["referenced pipeline delete"]["status"] == 400
    assert steps["routes"]["descriptions"] == ["Critical Logs", "Everything else"]
    assert steps["settings deleted"]["totalCount"] == 0
    assert steps["document created"]["version"] == 1
    assert steps["documents listed"]["ids"] == ["labkit-sdk-runbook"]
    assert steps["document read"]["content"] == {"version": "6", "sections": []}
    assert steps["document updated"]["name"] == "SDK Runbook v2" and steps["document updated"]["version"] == 2
    assert steps["stale version"]["status"] == 409
    assert steps["document trashed"]["ids"] == ["labkit-sdk-runbook"]
    assert steps["document purged"] == {"step": "document purged", "trash": 0, "documents": 0}
    # What the SDK did is what the tenant holds.
    assert sandbox.tenant.settings.items() == [] and sandbox.tenant.documents.list() == []
