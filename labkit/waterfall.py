"""The failing trace as a waterfall: one horizontal bar per span, children under their parent, the
failed ones red (what the Distributed traces app shows: checkout → quote → currency → EmptyCart).

Built from the span frame labkit.dynatrace returns (`fetch spans | filter trace.id == ...`); plotly
is imported when a figure is drawn.
"""
from __future__ import annotations

import html

OK_COLOR = "#1f77b4"
FAILED_COLOR = "#d62728"


def tree_order(spans) -> list[tuple[dict, int]]:
    """(span, depth) depth first from the roots, siblings by start time; a span whose parent is not
    in the trace (not ingested yet) counts as a root."""
    rows = spans.to_dict("records") if spans is not None and len(spans) else []
    ids = {r["span_id"] for r in rows}
    children: dict = {}
    for r in sorted(rows, key=lambda r: r["start"]):
        parent = r["parent_id"] if r["parent_id"] in ids else None
        children.setdefault(parent, []).append(r)
    ordered: list[tuple[dict, int]] = []

    def walk(parent, depth: int) -> None:
        for r in children.get(parent, []):
            ordered.append((r, depth))
            walk(r["span_id"], depth + 1)

    walk(None, 0)
    return ordered


def figure(spans, trace_id: str = "", local: bool = False):
    """A go.Figure of the trace; layout.meta["labkit"] says what it drew (spans, failed, names)."""
    import plotly.graph_objects as go

    ordered = tree_order(spans)
    t0 = min((r["start"] for r, _ in ordered), default=None)
    labels = [f"{'  ' * depth}{r['service']} · {r['name']}" for r, depth in ordered]
    offsets = [(r["start"] - t0).total_seconds() * 1000 for r, _ in ordered]
    widths = [max(float(r["duration_ms"]), 0.05) for r, _ in ordered]
    colors = [FAILED_COLOR if r["failed"] else OK_COLOR for r, _ in ordered]
    hover = [f"{html.escape(str(r['service']))} · {html.escape(str(r['name']))}<br>{r['kind']}, "
             f"{float(r['duration_ms']):.1f} ms{', failed' if r['failed'] else ''}" for r, _ in ordered]
    fig = go.Figure(go.Bar(y=labels, x=widths, base=offsets, orientation="h", marker_color=colors,
                           hovertext=hover, hoverinfo="text", name="spans"))
    failed = [label.strip() for label, (r, _) in zip(labels, ordered) if r["failed"]]
    title = f"trace {trace_id}" + (f": {failed[-1]} failed" if failed else "")
    fig.update_layout(
        title=dict(text=html.escape(title)), bargap=0.3, showlegend=False,
        height=max(220, 60 + 28 * len(ordered)), margin=dict(l=10, r=20, t=60, b=50),
        xaxis=dict(title=dict(text="ms since the trace began"), rangemode="tozero"),
        yaxis=dict(autorange="reversed", automargin=True),
        meta={"labkit": {"spans": len(ordered), "failed": failed, "labels": [s.strip() for s in labels],
                         "local": bool(local)}})
    if local:
        fig.add_annotation(text="<b>local lab</b>: sandbox data, not a tenant", x=1, y=-0.12,
                           xref="paper", yref="paper", xanchor="right", showarrow=False,
                           bgcolor="#fff3cd", font=dict(size=11, color="#7a5b00"))
    return fig
