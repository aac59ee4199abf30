"""HTML cards for what a cell shows (event, served value, traffic, verdict, ...): escaped, cheap, no secrets.

Each result class has a two-line `_repr_html_` calling one function here. The functions read the
objects' attributes only (duck typing), so this module imports nothing from labkit, nor pandas or
plotly. Every value goes through `html.escape`; a `link` (a deep link into the Dynatrace UI) is
rendered when the object has one, and only when it is an http(s) URL.
"""
from __future__ import annotations

import html
import re
from datetime import datetime, timezone

_BOX = ("border:1px solid #d0d7de;border-left:4px solid {accent};border-radius:6px;padding:8px 12px;"
        "margin:4px 0;max-width:60em;font-family:var(--jp-ui-font-family,sans-serif);font-size:13px")
_OK, _BAD, _INFO = "#1b7f3b", "#b00020", "#1f6feb"
_ROW = '<tr><th style="text-align:left;padding:1px 12px 1px 0;font-weight:600">{}</th><td>{}</td></tr>'


class Html(str):
    """Markup made here (a link, a styled value): inserted as is, never escaped again."""


def _e(value) -> str:
    """Text as element content (quotes stay readable; attributes go through _attr)."""
    if isinstance(value, Html):
        return value
    return html.escape("" if value is None else str(value), quote=False)


_PROSE = re.compile(r"`([^`\n]+)`|(https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]])")


def prose(value) -> Html:
    """A sentence as a person reads it: `code` in backticks as code, an http(s) URL as a link
    (the texts are also the CLI's, where backticks and bare URLs read fine)."""
    if isinstance(value, Html):
        return value
    text, parts, at = _text(value), [], 0
    for m in _PROSE.finditer(text):
        parts.append(_e(text[at:m.start()]))
        parts.append(f"<code>{_e(m.group(1))}</code>" if m.group(1) else anchor(m.group(2), m.group(2)))
        at = m.end()
    return Html("".join(parts) + _e(text[at:]))


def _attr(value) -> str:
    return html.escape(str(value), quote=True)


def when(value: datetime | None, missing: str = "-") -> str:
    """'14:03:07 UTC', how cards and one-line texts give a time; `missing` for None or NaT."""
    if value is None or value != value:  # NaT is not equal to itself
        return missing
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%H:%M:%S UTC")


def _is_url(url) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://"))


def _link(url) -> str:
    if not _is_url(url):
        return ""
    return (f'<div style="margin-top:4px"><a href="{_attr(url)}" target="_blank" rel="noopener">'
            "open in Dynatrace ↗</a></div>")


def anchor(text, url) -> Html:
    """`text` linked to `url` (a new tab), or just the text when there is no http(s) URL."""
    if not _is_url(url):
        return Html(_e(text))
    return Html(f'<a href="{_attr(url)}" target="_blank" rel="noopener">{_e(text)}</a>')


def card(kind: str, title: str, rows=(), *, ok: bool | None = None, note: str = "", link=None) -> str:
    """A titled box of label/value rows (plain text, escaped); green/red when ok is known."""
    accent = _INFO if ok is None else _OK if ok else _BAD
    body = "".join(_ROW.format(_e(label), prose(value)) for label, value in rows if value not in (None, ""))
    table = f'<table style="border-collapse:collapse;margin-top:4px">{body}</table>' if body else ""
    extra = f'<div style="margin-top:4px;color:#57606a">{prose(note)}</div>' if note else ""
    return (f'<div class="labkit-card labkit-card-{_attr(kind)}" style="{_BOX.format(accent=accent)}">'
            f"<b>{_e(title)}</b>{table}{extra}{_link(link)}</div>")


_CELL = 'style="text-align:left;padding:1px 12px 1px 0;vertical-align:top;white-space:pre-wrap{}"'


def grid(kind: str, title: str, headers, rows, *, ok: bool | None = None, note: str = "", link=None,
         long=None) -> str:
    """A titled box with a small table (a header row, then rows of plain text). In the `long`
    columns (default: the last) a long word (a trace id, a URL, a stack frame) wraps inside its
    column rather than pushing the table past the card's edge; short columns never break a word."""
    long = {len(headers) - 1} if long is None else set(long)
    cells = [_CELL.format(";overflow-wrap:anywhere" if i in long else "") for i in range(len(headers))]
    head = "".join(f"<th {c}>{_e(h)}</th>" for c, h in zip(cells, headers))
    body = "".join("<tr>" + "".join(f"<td {c}>{_e(v)}</td>" for c, v in zip(cells, row)) + "</tr>"
                   for row in rows)
    accent = _INFO if ok is None else _OK if ok else _BAD
    extra = f'<div style="margin-top:4px;color:#57606a">{prose(note)}</div>' if note else ""
    return (f'<div class="labkit-card labkit-card-{_attr(kind)}" style="{_BOX.format(accent=accent)}">'
            f'<b>{_e(title)}</b><table style="border-collapse:collapse;margin-top:4px">'
            f"<tr>{head}</tr>{body}</table>{extra}{_link(link)}</div>")


# --- one function per result --------------------------------------------------------------------
def change_event(event) -> str:
    change = f"{event.old} → {event.new}" if event.old is not None else f"→ {event.new}"
    status = ", ".join(event.statuses) or "no entity matched"
    return card("change-event", f"Dynatrace told: {event.flag} {change}", [
        ("landed on", f"service {event.service} ({event.report_count} "
                      f"entit{'y' if event.report_count == 1 else 'ies'})"),
        ("ingest status", status), ("sent", when(event.sent_at)), ("run", event.run_id),
        ("warnings", "; ".join(event.warnings))], ok=event.ok, link=getattr(event, "link", None))


def served(value, text_value: str) -> str:
    pods = getattr(value, "pods", None)
    return card("served", f"flagd serves {value.key} = {value.variant}", [
        ("variant", value.variant), ("value", text_value), ("reason", value.reason),
        ("pods", ", ".join(pods) if pods else None)],
        note="asked from flagd itself (OFREP), not from the ConfigMap", link=getattr(value, "link", None))


def restart(result) -> str:
    return card("restart", f"flagd restarted ({result.how}) in {result.seconds:.1f} s", [
        ("replicas", result.replicas), ("new pods", ", ".join(result.pods) or "-")],
        ok=True, link=getattr(result, "link", None))


def shop_result(result) -> str:
    rows = [("took", f"{result.seconds:.1f} s ({result.ops_per_second:.0f} operations/s)"),
            ("EmptyCart calls", getattr(result, "empties_text", "") or None),
            ("first failure", when(result.first_failure_at) if result.first_failure_at else None),
            ("interrupted", "yes" if result.interrupted else None)]
    title = f"Cart traffic: {result.sessions} sessions, {result.operations} operations, {result.failure_count} failed"
    return card("traffic", title, rows, ok=None, note=" ".join(result.notes),
                link=getattr(result, "link", None))


def verdict(v) -> str:
    note = v.how if (v.before_requests or v.after_requests) else ""
    return card("verdict", v.text, ok=not v.rose, note=note, link=getattr(v, "link", None))


def preflight(checks) -> str:
    rows = [("ok" if c.ok else "NO", c.item, prose(c.detail)) for c in checks]
    title = "Preflight: all checks passed" if checks.ok else "Preflight: fix what is marked NO"
    return grid("preflight", title, ["", "check", "detail"], rows, ok=checks.ok)


def timeline(t) -> str:
    rows = [(when(s.time), s.kind, s.detail) for s in t.in_order()]
    if not rows:
        return card("timeline", f"Timeline of run {t.run_id}", note="nothing happened yet in this run")
    return grid("timeline", f"Timeline of run {t.run_id}", ["time", "step", "detail"], rows)


def reset(r, text: str) -> str:
    back = ", ".join(f"{k} = {v}" for k, v in r.flags.items()) or "none: every flag was already there"
    return card("reset", "Lab reset", [(f"flags set back to demo {r.release}'s defaults", back),
                                       ("flagd restarted", r.restart), ("new run", r.run_id)],
                ok=True, note=text)


def flag_change(change, text: str) -> str:
    return card("flag-change", f"ConfigMap: {change.flag}", [("change", text)], ok=True)


def lab(where: str, run_id: str) -> str:
    return card("lab", f"Connected to the {where}", [("run", run_id)])


def trace_logs(logs) -> str:
    """The logs of one trace, oldest first, or why there are none."""
    if not len(logs.frame):
        return card("trace-logs", f"No logs of {logs.trace_id or 'a failed trace'}", ok=False,
                    note=logs.why, link=getattr(logs, "link", None))
    rows = [(when(r.get("timestamp"), "—"), _text(r.get("loglevel")), _text(r.get("service")),
             _log_text(r)) for r in _records(logs.frame)]
    return grid("trace-logs", f"All {len(rows)} logs of trace {logs.trace_id}, oldest first",
                ["time", "level", "service", "content"], rows, link=getattr(logs, "link", None))


# --- the lab's tables (DataFrames shown as cards; rows read by column name) -----------------------
_MAX_ROWS = 25


def _records(frame) -> list[dict]:
    return frame.to_dict("records") if frame is not None and len(frame) else []


def _shown(kind: str, title: str, headers, rows: list, frame, *, empty: str, note: str = "",
           ok: bool | None = None, long=None) -> str:
    """A table card of at most _MAX_ROWS rows, saying when it shows part; `empty` when none."""
    link = getattr(frame, "attrs", {}).get("link")
    if not rows:
        return card(kind, title, note=empty, link=link)
    more = f"the first {_MAX_ROWS} of {len(rows)} rows shown. " if len(rows) > _MAX_ROWS else ""
    return grid(kind, title, headers, rows[:_MAX_ROWS], ok=ok, note=(more + note).strip(), link=link,
                long=long)


def _log_text(r: dict) -> str:
    """A log's content whole (the key phrase is never cut), with its status code when it has one."""
    detail = _text(r.get("detail"))
    content = _text(r.get("content"))
    code = _text(r.get("statuscode"))
    text = content if not detail or detail in content else f"{content}\ndetail: {detail}"
    return f"[{code}] {text}" if code else text


_MD_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")


def markdown(text) -> Html:
    """A problem description's markdown as HTML: its links clickable, headings bold, the rest text."""
    lines = []
    for line in _text(text).strip().splitlines():
        heading = line.startswith("#")
        parts, at = [], 0
        for m in _MD_LINK.finditer(line):
            parts += [_e(line[at:m.start()]), anchor(m.group(1), m.group(2))]
            at = m.end()
        body = "".join(parts) + _e(line[at:])
        lines.append(f"<b>{body.lstrip('#').strip()}</b>" if heading else body)
    return Html("<br>".join(lines))


def problems(frame) -> str:
    rows = [(anchor(_text(r.get("display_id")) or "problem", r.get("link")), _text(r.get("title")),
             _text(r.get("status")), when(r.get("start"), "—"), when(r.get("end"), "open"),
             _text(r.get("affected")), markdown(r.get("description")))
            for r in _records(frame)]
    n = len(rows)
    return _shown("problems", f"{n} problem{'s' if n != 1 else ''}", ["problem", "title", "status",
                  "started", "ended", "affected", "description"], rows, frame, ok=not n or None,
                  empty="No problems in this timeframe: Davis opens one a few minutes after the "
                        "error logs start (01's wait_for_problem).")


def change_events(frame) -> str:
    rows = []
    for r in _records(frame):
        old, new = _text(r.get("old")), _text(r.get("new"))
        change = f"{_text(r.get('flag'))}: {old} → {new}" if old else f"{_text(r.get('flag'))} → {new}"
        rows.append((when(r.get("timestamp"), "—"), anchor(change, r.get("link")), _text(r.get("title")),
                     _text(r.get("status")), _text(r.get("run_id"))))
    return _shown("change-events", f"{len(rows)} change event{'s' if len(rows) != 1 else ''}, oldest first",
                  ["time", "change", "title", "status", "run"], rows, frame,
                  empty="No change events in this timeframe: 01's inform_dynatrace() sends one.")


# The log fields the review page names, shown where the record has them (the lab's collector maps
# no dt.cost.product, so its logs carry none, and the column says only what is there).
LOG_FIELDS = ("trace_id", "span_id", "dt.owner", "dt.cost.product", "dt.cost.costcenter")


def _log_fields(r: dict) -> str:
    return "\n".join(f"{k}: {_text(r.get(k))}" for k in LOG_FIELDS if _text(r.get(k)))


def error_logs(frame) -> str:
    rows = [(when(r.get("timestamp"), "—"), _text(r.get("loglevel")) or _text(r.get("status")),
             _text(r.get("service")), _log_text(r), _log_fields(r))
            for r in _records(frame)]
    return _shown("logs", f"{len(rows)} log line{'s' if len(rows) != 1 else ''}",
                  ["time", "level", "service", "content", "fields"], rows, frame,
                  empty="No logs in this timeframe.", long=(3, 4))


def flags(frame) -> str:
    rows = [(_text(r.get("flag")), _text(r.get("default")), _text(r.get("variants")),
             _text(r.get("description"))) for r in _records(frame)]
    return _shown("flags", f"{len(rows)} flags in the ConfigMap", ["flag", "default", "variants",
                  "description"], rows, frame, empty="The flag file has no flags.")


def _text(value) -> str:
    """A value as text; None, NaN and NaT as nothing (never the word 'NaT')."""
    try:
        if value is None or value != value:
            return ""
    except (TypeError, ValueError):  # an array-like compares elementwise
        pass
    return str(value)
