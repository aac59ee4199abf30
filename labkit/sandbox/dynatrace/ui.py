"""The pages behind labkit's links: the problem, the service, the events and the logs, as the local lab.

A real tenant opens these paths in its own apps (Problems, Services, Logs, Notebooks). Here each is
one small HTML page, labelled as the local lab, showing what the link points to. The Logs and
Notebook links carry their query in the URL fragment, which a browser never sends: their page reads
it in a few lines of script and runs it through /ui/local-lab/query (loopback only, no token; the
page stands for a screen the user is signed in to).
"""
from __future__ import annotations

import html
import re
from urllib.parse import quote

from labkit.sandbox.dynatrace.dql import DqlError, parse_dql
from labkit.sandbox.dynatrace.grail import execute_dql, query_frame
from labkit.sandbox.dynatrace.errors import PlatformError
from labkit.sandbox.dynatrace.telemetry import Event, MonitoredEntity, Problem
from labkit.sandbox.dynatrace.tenant import GrailJob, Tenant
from labkit.sandbox.dynatrace.times import MINUTE_MS, iso_ms, parse_time
from labkit.sandbox.http import HttpError, Request, Response, json_response

HTML = "text/html; charset=utf-8"
BANNER = ("Local lab: a stand-in on loopback, not a real Dynatrace tenant. On a tenant this link "
          "opens the {app}.")
PROBLEM_PATH = "/ui/apps/dynatrace.davis.problems/problem/"
SERVICE_PATH = "/ui/apps/dynatrace.services/explorer?detailsId="


# Fits a 1400 px window: tables wrap long values (ids, stack traces) instead of widening the page.
STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:84em}"
         ".lab{background:#fff3cd;padding:.5em 1em;border:1px solid #e0c36a}"
         "table{border-collapse:collapse;max-width:100%}"
         "td,th{padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:break-word}"
         "th{border-bottom:1px solid #bbb;white-space:nowrap}.when,.flag{white-space:nowrap}"
         ".id{overflow-wrap:anywhere;min-width:8em}.more{color:#666;font-size:.85em}"
         "pre{white-space:pre-wrap;overflow-wrap:anywhere}")


def page(title: str, app: str, body: str, status: int = 200) -> Response:
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} "
            f"(local lab)</title><style>{STYLE}</style></head><body>"
            f"<p class='lab'>{html.escape(BANNER.format(app=app))}</p>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(status, text, HTML)


class PageError(HttpError):
    """A page that cannot be shown, as a page (the router's 404/405 too)."""

    def response(self) -> Response:
        return page(f"{self.status}: not here", "tenant's UI",
                    f"<p>{html.escape(self.message)}</p>", self.status)


def table(rows: list[tuple], header: tuple) -> str:
    """Rows of HTML cells under a header (none when every header cell is empty: a list of facts)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    head = f"<tr>{head}</tr>" if any(header) else ""
    return f"<table>{head}{body}</table>" if rows else "<p>none</p>"


def _when(ms: int) -> str:
    """'2026-12-02 17:10:14.715 UTC' in a cell that does not wrap."""
    if ms is None or ms < 0:
        return "-"
    return f"<span class='when'>{iso_ms(ms).replace('T', ' ').rstrip('Z')} UTC</span>"


def status_word(active: bool) -> str:
    """The Problems app's words for a problem's (and Grail's event.status) ACTIVE / CLOSED."""
    return "Active" if active else "Closed"


# A change event's properties that name the change (labkit.dynatrace sends them; the lab's notebook
# charts `by:{feature_flag.key, defaultValue}`); the rest are shown smaller beside them.
CHANGE_KEYS = ("feature_flag.key", "previousValue", "defaultValue")


def _change(e: Event) -> str:
    """'cartFailure: off → on' for a flag change event, else what it names."""
    p = e.properties
    flag = p.get("feature_flag.key")
    if not flag:
        return "-"
    old, new = p.get("previousValue"), p.get("defaultValue", "?")
    text = html.escape(f"{flag}: {old} → {new}" if old else f"{flag} → {new}")
    return f"<span class='flag'>{text}</span>"


def _event_rows(events: list[Event], now: int) -> list[tuple]:
    rows = []
    for e in events:
        rest = ", ".join(f"{k}={v}" for k, v in sorted(e.properties.items()) if k not in CHANGE_KEYS)
        rows.append((_when(e.start), html.escape(e.event_type), html.escape(e.title), _change(e),
                     status_word(e.end > now), f"<span class='more'>{html.escape(rest)}</span>"))
    return rows


EVENT_HEADER = ("time", "type", "title", "flag changed", "status", "other properties")


def _service_link(entity: MonitoredEntity) -> str:
    return (f"<a href='{SERVICE_PATH}{quote(entity.entity_id)}'>{html.escape(entity.name)}</a>")


def _entity_cell(entity: MonitoredEntity) -> str:
    """A service links its page; a pod shows as the Problems app lists it (name, type)."""
    if entity.type == "SERVICE":
        return _service_link(entity)
    kind = "Kubernetes pod" if entity.type == "CLOUD_APPLICATION_INSTANCE" else entity.type
    return f"{html.escape(entity.name)} ({kind}, <span class='id'>{html.escape(entity.entity_id)}</span>)"


def _problem_link(p: Problem) -> str:
    return (f"<a href='{PROBLEM_PATH}{quote(p.problem_id)}'>{html.escape(p.display_id)}</a> "
            f"{html.escape(p.title)}")


# ----- the Problems app: one problem ------------------------------------------------------------
def problem_page(tenant: Tenant, req: Request, problemId: str) -> Response:  # noqa: N803
    found = next((p for p in tenant.telemetry.problems() if p.problem_id == problemId), None)
    if found is None:
        raise PageError(404, f"The local lab knows no problem {problemId}.")
    facts = [("status", status_word(found.open)), ("started", _when(found.start)),
             ("ended", _when(found.end)), ("category", html.escape(found.category.title())),
             ("affected entity", _entity_cell(found.entity)),
             ("k8s.cluster.name", html.escape(", ".join(sorted(found.clusters)) or "-")),
             ("events", html.escape(", ".join(f"{e.title} ({e.records} records)" for e in found.events))),
             ("problem id", f"<span class='id'>{html.escape(found.problem_id)}</span>")]
    changes = _event_rows(tenant.telemetry.change_evidence(found), tenant.telemetry.clock())
    body = (table([(k, v) for k, v in facts], ("", "")) + _description(found.description)
            + "<h2>Root cause evidence: changes shortly before</h2>" + table(changes, EVENT_HEADER))
    return page(f"{found.display_id}: {found.title}", "Problems app", body)


def _description(markdown: str) -> str:
    """The problem's description (the pod's supportInfo markdown): its links clickable."""
    if not markdown:
        return ""
    text = html.escape(markdown.strip())
    text = re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r"<a href='\2'>\1</a>", text)
    return f"<h2>Description</h2><p>{'<br>'.join(text.splitlines())}</p>"


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
    problems = [(_problem_link(p), status_word(p.open), _when(p.start)) for p in tenant.telemetry.problems()
                if entity.entity_id in (p.entity.entity_id, p.entity.runs)]
    events = _event_rows([e for e in tenant.telemetry.events()
                          if e.entity.entity_id == entity.entity_id], now)
    facts = [("entity id", html.escape(entity.entity_id)), ("last seen", _when(entity.last_seen)),
             ("k8s.cluster.name", html.escape(entity.cluster or "-")),
             ("requests, last 30 min", str(requests)), ("failed, last 30 min", str(failed))]
    body = (table(facts, ("", "")) + "<h2>Problems</h2>" + table(problems[::-1], (
        "problem", "status", "started")) + "<h2>Events</h2>" + table(events[::-1], (
            EVENT_HEADER)))
    return page(f"Service {entity.name}", "Services app", body)


# ----- the Logs app and a Notebook: the query travels in the fragment ----------------------------
_SCRIPT = r"""<pre id=q></pre><p id=n></p><table id=t></table><script>
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
  const iso = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d(\.\d{3})?)\d*Z$/;
  const text = (c) => { if (c == null) return '';
    const m = typeof c === 'string' && c.match(iso);  // a Notebook shows times, not ns strings
    return m ? m[1] + ' ' + m[2] + ' UTC' : (typeof c === 'object' ? JSON.stringify(c) : String(c)); };
  const line = (cells, tag) => { const tr = table.insertRow();
    cells.forEach((c) => { const td = document.createElement(tag); td.textContent = text(c);
      if (iso.test(String(c))) td.className = 'when';
      else if (/\S{24}/.test(td.textContent)) td.className = 'id';  // ids and paths may break anywhere
      tr.appendChild(td); }); };
  line(cols, 'th');
  rows.forEach((r) => line(cols.map((c) => r[c]), 'td'));
})();
</script>"""


def query_page(tenant: Tenant, req: Request) -> Response:
    app = "Logs app" if "dynatrace.logs" in req.path else "Notebooks app (the query in a notebook)"
    title = "Logs" if "dynatrace.logs" in req.path else "Notebook: query"
    return page(title, app, _SCRIPT)


# The columns a page shows first (a change event's flag among them), then others up to MAX_COLUMNS.
_FIRST = ("timestamp", "status", "loglevel", "event.type", "event.name", "feature_flag.key",
          "previousValue", "defaultValue", "event.status", "display_id", "content", "trace_id")
MAX_COLUMNS = 9


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
    columns = ([k for k in _FIRST if k in keys] + [k for k in keys if k not in _FIRST])[:MAX_COLUMNS]
    return json_response({"records": records, "columns": columns, "local_lab": True})


# ----- a notebook document: the runbook the problem's description links ("Redis Troubleshooting")
def _runbook_section(tenant: Tenant, title: str, text: str) -> str:
    """A DQL section run now: its records as a table (a timeseries or makeTimeseries as one row per
    slot with data, each series named by its column and its `by:` values)."""
    now = tenant.telemetry.clock()
    try:
        query = parse_dql(text)
        result = execute_dql(tenant, GrailJob(query, query_frame(query, {}, now), 0.0, 1000))
    except (DqlError, PlatformError) as err:
        return (f"<h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre>"
                f"<p>The local lab cannot run this query: {html.escape(err.message)}</p>")
    records = result["records"]
    if records and all("timeframe" in r and "interval" in r for r in records):
        rows = []  # timeseries and makeTimeseries: one row per slot, the trend as a table
        for r in records:
            start = parse_time(r["timeframe"]["start"], now)
            step = int(r["interval"]) // 1_000_000
            label = " ".join(str(v) for k, v in r.items() if not isinstance(v, (list, dict)) and k != "interval")
            for name in (k for k, v in r.items() if isinstance(v, list)):
                series = html.escape(f"{name} {label}".strip())
                rows += [(iso_ms(start + i * step), series, f"{v:g}")
                         for i, v in enumerate(r[name]) if v]  # the slots with data: not null, not 0
        body = table(rows[-30:], ("time", "series", "value"))
    else:
        cols = [c for c in dict.fromkeys(k for r in records for k in r)][:MAX_COLUMNS]
        body = table([tuple(html.escape(str(r.get(c, ""))) for c in cols) for r in records[:100]], tuple(cols))
    return f"<h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre>{body}"


def _section(tenant: Tenant, section: dict) -> str:
    if section.get("type") == "markdown":
        return f"<pre class='markdown'>{html.escape(str(section.get('markdown', '')))}</pre>"
    if section.get("type") == "dql":
        query = (((section.get("state") or {}).get("input")) or {}).get("value", "")
        return _runbook_section(tenant, str(section.get("title") or "Query"), str(query))
    return ""


def runbook_page(tenant: Tenant, req: Request, documentId: str) -> Response:  # noqa: N803
    """A notebook document as the Notebooks app opens it: its markdown, its DQL sections run now."""
    import json

    from labkit.sandbox.dynatrace.store import ConfigError

    try:
        doc = tenant.documents.get(documentId)
    except ConfigError:
        raise PageError(404, f"This tenant has no document {documentId}: the link names a document "
                             "that was never uploaded here (or was deleted).") from None
    try:
        sections = json.loads(doc.content).get("sections") or []
    except (ValueError, AttributeError):
        sections = []
    body = "".join(_section(tenant, s) for s in sections if isinstance(s, dict)) or "<p>(empty)</p>"
    return page(f"{doc.name} (a {doc.type})", "Notebooks app (the uploaded runbook)", body)


# ----- the Distributed traces app: one trace (its id travels in the fragment, like a query) ------
_TRACE_QUERY = ("const query = state.trace_id ? 'fetch spans | filter trace.id == \"' + "
                "String(state.trace_id).replace(/[^0-9a-fA-F]/g, '') + '\" | sort start_time asc' : '';")


def trace_page(tenant: Tenant, req: Request) -> Response:
    """The spans of the trace a view-trace link names, run as `fetch spans` through the query page."""
    script = _SCRIPT.replace(
        "const query = state['dt.query'] || (((state.data || {}).queryConfig) || {}).query;", _TRACE_QUERY)
    return page("Distributed trace", "Distributed traces app (one trace)", script)
