"""What each subject's module reads the tenant through (as api-client-python's services share one
HttpClient): the one request path (`_http`), this lab's seat (`_scope`) and the host of the
tenant's screens; classic GETs, their paging, and DQL kept to the seat."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from labkit.dynatrace._grail import run_dql
from labkit.dynatrace._http import Http, json_object
from labkit.dynatrace._scope import Scope
from labkit.progress import Progress
from labkit.settings import Settings

log = logging.getLogger("labkit.dynatrace")


@dataclass
class Client:
    http: Http
    settings: Settings
    scope: Scope
    ui: str | None  # where the tenant's screens are (links)

    def get_json(self, path: str, *, scope: str, what: str, params: dict | None = None) -> dict:
        resp = self.http.request("classic", "GET", path, params=params, scope=scope, what=what)
        return json_object(resp, what)

    def paged(self, path: str, key: str, *, scope: str, what: str, params: dict,
              keep: Iterable[str] = (), max_pages: int = 100) -> list[dict]:
        """All items of a paged list: the nextPageKey is sent alone (plus `keep` params)."""
        items: list[dict] = []
        page = self.get_json(path, scope=scope, what=what, params=params)
        for _ in range(max_pages):
            got = page.get(key) or []
            items.extend(x for x in got if isinstance(x, dict))
            cursor = page.get("nextPageKey")
            if not cursor:
                return items
            next_params = {"nextPageKey": cursor}
            next_params.update({k: params[k] for k in keep if params.get(k) is not None})
            page = self.get_json(path, scope=scope, what=what, params=next_params)
        log.warning("%s: stopped after %d pages", what, max_pages)
        return items

    def dql(self, query: str, *, timeout: float = 60.0, progress: Progress | None = None,
            max_records: int | None = None, scoped: bool = True) -> list[dict]:
        """A DQL query's records; kept to this seat unless `scoped=False` (a question about the
        other seats)."""
        return run_dql(self.http, self.scope.dql(query) if scoped else query, timeout=timeout,
                       progress=progress, max_records=max_records)
