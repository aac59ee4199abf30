"""The pages behind labkit's links: the problem, the service, the events and the logs, as the local lab.

A real tenant opens these paths in its own apps (Problems, Services, Logs, Notebooks). Here each is
one small HTML page, labelled as the local lab, showing what the link points to. The Logs and
Notebook links carry their query in the URL fragment, which a browser never sends: their page reads
it in a few lines of script and runs it through /ui/local-lab/query (loopback only, no token; the
page stands for a screen the user is signed in to).
"""
from __future__ import annotations

import html
from urllib.parse import quote

from labkit.sandbox.dynatrace.dql import DqlError, parse_dql
from labkit.sandbox.dynatrace.grail import execute_dql, query_frame
from labkit.sandbox.dynatrace.errors import PlatformError
from labkit.sandbox.dynatrace.telemetry import MonitoredEntity, Problem
from labkit.sandbox.dynatrace.tenant import GrailJob, Tenant
from labkit.sandbox.dynatrace.times import MINUTE_MS, iso_ms
from labkit.sandbox.http import HttpError, Request, Response, json_response

HTML = "text/html; charset=utf-8"
BANNER = ("Local lab: a stand-in on loopback, not a real Dynatrace tenant. On a tenant this link "
          "opens the {app}.")
PROBLEM_PATH = "/ui/apps/dynatrace.davis.problems/problem/"
SERVICE_PATH = "/ui/apps/dynatrace.services/explorer?detailsId="


def page(title: str, app: str, body: str, status: int = 200) -> Response:
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} "
            "(local lab)</title><style>body{font-family:sans-serif;margin:2em;max-width:70em}"
            ".lab{background:#fff3cd;padding:.5em 1em;border:1px solid #e0c36a}"
            "td,th{padding:.2em .6em;text-align:left;vertical-align:top}</style></head><body>"
            f"<p class='lab'>{html.escape(BANNER.format(app=app))}</p>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(status, text, HTML)


class PageError(HttpError):
    """A page that cannot be shown, as a page (the router's 404/405 too)."""

    def response(self) -> Response:
        return page(f"{self.status}: not here", "tenant's UI",
                    f"<p>{html.escape(self.message)}</p>", self.status)


def table(rows: list[tuple], header: tuple) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>none</p>"


def _when(ms: int) -> str:
    return "-" if ms is None or ms < 0 else iso_ms(ms)


def _service_link(entity: MonitoredEntity) -> str:
    return (f"<a href='{SERVICE_PATH}{quote(entity.entity_id)}'>{html.escape(entity.name)}</a>")


def _problem_link(p: Problem) -> str:
    return (f"<a href='{PROBLEM_PATH}{quote(p.problem_id)}'>{html.escape(p.display_id)}</a> "
            f"{html.escape(p.title)}")


# ----- the Problems app: one problem ------------------------------------------------------------
def problem_page(tenant: Tenant, req: Request, problemId: str) -> Response:  # noqa: N803
    found = next((p for p in tenant.telemetry.problems() if p.problem_id == problemId), None)
    if found is None:
        raise PageError(404, f"The local lab knows no problem {problemId}.")
    facts = [("status", "OPEN" if found.open else "CLOSED"), ("started", _when(found.start)),
             ("ended", _when(found.end)), ("affected service", _service_link(found.entity)),
             ("k8s.cluster.name", html.escape(", ".join(sorted(found.clusters)) or "-")),
             ("error logs", str(found.error_count)), ("problem id", html.escape(found.problem_id))]
    changes = [(_when(e.start), html.escape(e.event_type), html.escape(e.title),
                html.escape(", ".join(f"{k}={v}" for k, v in sorted(e.properties.items()))))
               for e in tenant.telemetry.change_evidence(found)]
    body = (table([(k, v) for k, v in facts], ("", "")) + "<h2>Root cause evidence: changes "
            "shortly before</h2>" + table(changes, ("time", "type", "title", "properties")))
    return page(f"{found.display_id}: {found.title}", "Problems app", body)


# ----- the Services app: one service -------------------------------------------------------------
def service_page(tenant: Tenant, req: Request) -> Response:
    entity_id = req.query.get("detailsId", "")
    entity = tenant.telemetry.entity_by_id(entity_id)
    if entity is None:
        raise PageError(404, f"The local lab knows no service {entity_id or '(no detailsId)'}.")
    now = tenant.telemetry.clock()
    minutes = tenant.telemetry.minute_counts(entity.entity_id, now // MINUTE_MS - 30, now // MINUTE_MS + 1)
    requests = sum(m[0] for m in minutes if m)
    failed = sum(m[1] for m in minutes if m)
    problems = [(_problem_link(p), "OPEN" if p.open else "CLOSED", _when(p.start))
                for p in tenant.telemetry.problems() if p.entity.entity_id == entity.entity_id]
    events = [(_when(e.start), html.escape(e.event_type), html.escape(e.title),
               html.escape(", ".join(f"{k}={v}" for k, v in sorted(e.properties.items()))))
              for e in tenant.telemetry.events() if e.entity.entity_id == entity.entity_id]
    facts = [("entity id", html.escape(entity.entity_id)), ("last seen", _when(entity.last_seen)),
             ("k8s.cluster.name", html.escape(entity.cluster or "-")),
             ("requests, last 30 min", str(requests)), ("failed, last 30 min", str(failed))]
    body = (table(facts, ("", "")) + "<h2>Problems</h2>" + table(problems[::-1], (
        "problem", "status", "started")) + "<h2>Events</h2>" + table(events[::-1], (
            "time", "type", "title", "properties")))
    return page(f"Service {entity.name}", "Services app", body)


# ----- the Logs app and a Notebook: the query travels in the fragment ----------------------------
_SCRIPT = """<pre id=q></pre><p id=n></p><table id=t></table><script>
(async () => {
  const say = (t) => { document.getElementById('n').textContent = t; };
  let state = {};
  try { state = JSON.parse(decodeURIComponent(location.hash.slice(1)) || '{}'); }
  catch (e) { say('The link carries no readable query.'); return; }
  const query = state['dt.query'] || (((state.data || {}).queryConfig) || {}).query;
  if (!query) { say('The link carries no query.'); return; }
  document.getElementById('q').textContent = query;
  const resp = await fetch('/ui/local-lab/query', {method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({query: query, timeframe: state['dt.timeframe'] || null})});
  const body = await resp.json();
  if (!resp.ok) { say(body.error); return; }
  const rows = body.records, table = document.getElementById('t');
  say(rows.length + ' record(s)');
  if (!rows.length) return;
  const cols = body.columns;
  const line = (cells, tag) => { const tr = table.insertRow();
    cells.forEach((c) => { const td = document.createElement(tag);
      td.textContent = c == null ? '' : String(c); tr.appendChild(td); }); };
  line(cols, 'th');
  rows.forEach((r) => line(cols.map((c) => r[c]), 'td'));
})();
</script>"""


def query_page(tenant: Tenant, req: Request) -> Response:
    app = "Logs app" if "dynatrace.logs" in req.path else "Notebooks app (the query in a notebook)"
    title = "Logs" if "dynatrace.logs" in req.path else "Notebook: query"
    return page(title, app, _SCRIPT)


_FIRST = ("timestamp", "status", "loglevel", "event.type", "event.name", "display_id", "content")


def run_query(tenant: Tenant, req: Request) -> Response:
    """The records of the DQL a Logs or Notebook link carries, for its page."""
    try:
        body = req.json()
        query = parse_dql(body["query"])
        frame = body.get("timeframe") or {}
        now = tenant.telemetry.clock()
        start, end = query_frame(query, {"defaultTimeframeStart": frame.get("from"),
                                         "defaultTimeframeEnd": frame.get("to")}, now)
    except DqlError as err:
        return json_response({"error": f"The local lab cannot run this query: {err.message}"}, 400)
    except PlatformError as err:
        return json_response({"error": err.message}, 400)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return json_response({"error": 'The body must be JSON with a "query" string.'}, 400)
    result = execute_dql(tenant, GrailJob(query, (start, end), 0.0, 1000))
    records = result["records"]
    keys = list(dict.fromkeys(k for r in records for k in r))
    columns = [k for k in _FIRST if k in keys] + [k for k in keys if k not in _FIRST][:6]
    return json_response({"records": records, "columns": columns, "local_lab": True})
