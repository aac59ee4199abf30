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


INDENT_PX = 16  # a child's label starts this far right of its parent's
_CHAR_PX = 7.2   # about one character of the 12 px label font


def figure(spans, trace_id: str = "", local: bool = False):
    """A go.Figure of the trace; layout.meta["labkit"] says what it drew (spans, failed, names, depths).

    The labels are annotations in the left margin, left-aligned and indented by depth, as the
    Distributed traces app shows a tree: axis tick labels are right-aligned, so an indentation there
    never shows. One row a span (y is its place), so two spans of one name keep two rows."""
    from labkit.charts import graph_objects

    go = graph_objects()

    ordered = tree_order(spans)
    t0 = min((r["start"] for r, _ in ordered), default=None)
    labels = [f"{r['service']} · {r['name']}" for r, _ in ordered]
    depths = [depth for _, depth in ordered]
    offsets = [(r["start"] - t0).total_seconds() * 1000 for r, _ in ordered]
    widths = [max(float(r["duration_ms"]), 0.05) for r, _ in ordered]
    colors = [FAILED_COLOR if r["failed"] else OK_COLOR for r, _ in ordered]
    hover = [f"{html.escape(str(r['service']))} · {html.escape(str(r['name']))}<br>{r['kind']}, "
             f"{float(r['duration_ms']):.1f} ms{', failed' if r['failed'] else ''}" for r, _ in ordered]
    rows = list(range(len(ordered)))
    fig = go.Figure(go.Bar(y=rows, x=widths, base=offsets, orientation="h", marker_color=colors,
                           hovertext=hover, hoverinfo="text", name="spans"))
    margin = 12 + max((INDENT_PX * d + _CHAR_PX * len(t) for t, d in zip(labels, depths)), default=0)
    for row, text, depth, color in zip(rows, labels, depths, colors):
        fig.add_annotation(text=html.escape(text), x=0, xref="paper", y=row, yref="y", xanchor="left",
                           xshift=-margin + 4 + INDENT_PX * depth, showarrow=False,
                           font=dict(size=12, color=color if color == FAILED_COLOR else "#24292f"))
    failed = [label for label, (r, _) in zip(labels, ordered) if r["failed"]]
    title = f"trace {trace_id}" + (f": {failed[-1]} failed" if failed else "")
    fig.update_layout(
        title=dict(text=html.escape(title)), bargap=0.3, showlegend=False,
        height=max(220, 60 + 28 * len(ordered)), margin=dict(l=int(margin), r=20, t=60, b=50),
        xaxis=dict(title=dict(text="ms since the trace began"), rangemode="tozero"),
        yaxis=dict(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False),
        meta={"labkit": {"spans": len(ordered), "failed": failed, "labels": labels, "depths": depths,
                         "local": bool(local)}})
    if local:
        # over the bars' top right, under the title: below the axis it covered the ms ticks
        fig.add_annotation(text="<b>local lab</b>: sandbox data, not a tenant", x=1, y=1, yshift=4,
                           xref="paper", yref="paper", xanchor="right", yanchor="bottom", showarrow=False,
                           bgcolor="#fff3cd", font=dict(size=11, color="#7a5b00"))
    return fig
