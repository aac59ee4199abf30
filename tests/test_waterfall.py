"""The failing trace as a waterfall, from spans in the shape Grail's `fetch spans` returns (contract C3)."""
from __future__ import annotations

from labkit import waterfall
from labkit.dynatrace._frames import span_frame
from labkit.dynatrace._links import trace_link

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_764_684_000_000_000_000  # ns


def _span(span_id, parent, service, name, kind, start_ms, ms, failed=False):
    return {"start_time": str(T0 + start_ms * 1_000_000), "end_time": str(T0 + (start_ms + ms) * 1_000_000),
            "duration": str(ms * 1_000_000), "trace.id": TRACE, "span.id": span_id, "span.parent_id": parent,
            "span.name": name, "span.kind": kind, "service.name": service, "dt.entity.service": "SERVICE-1",
            "request.is_failed": failed, "span.status_code": "error" if failed else "unset",
            "k8s.cluster.name": "obslab"}


# As Grail may return them: not in tree order.
RECORDS = [
    _span("e1", "c3", "cart", "oteldemo.CartService/EmptyCart", "server", 40, 6, failed=True),
    _span("c1", None, "checkout", "oteldemo.CheckoutService/PlaceOrder", "server", 0, 60),
    _span("c3", "c1", "checkout", "oteldemo.CartService/EmptyCart", "client", 39, 8, failed=True),
    _span("q1", "c1", "quote", "POST /getquote", "server", 5, 10),
    _span("x1", "c1", "currency", "Currency/Convert", "server", 20, 3),
]


def test_the_waterfall_runs_checkout_then_quote_currency_and_the_failed_empty_cart():
    spans = span_frame(RECORDS)
    assert list(spans["span_id"]) == ["c1", "q1", "x1", "c3", "e1"]  # by start time
    assert spans.loc[spans.span_id == "e1", "duration_ms"].item() == 6.0
    fig = waterfall.figure(spans, TRACE, local=True)
    meta = fig.layout.meta["labkit"]
    assert meta["labels"] == ["checkout · oteldemo.CheckoutService/PlaceOrder", "quote · POST /getquote",
                              "currency · Currency/Convert", "checkout · oteldemo.CartService/EmptyCart",
                              "cart · oteldemo.CartService/EmptyCart"]
    assert meta["failed"][-1] == "cart · oteldemo.CartService/EmptyCart" and "EmptyCart failed" in fig.layout.title.text
    bar = fig.data[0]
    assert bar.orientation == "h" and list(bar.base) == [0, 5, 20, 39, 40]
    assert list(bar.marker.color).count(waterfall.FAILED_COLOR) == 2
    assert any("local lab" in a.text for a in fig.layout.annotations)


def test_iso_times_and_a_parent_not_yet_ingested():
    records = [dict(_span("e1", "gone", "cart", "EmptyCart", "server", 0, 2, failed=True),
                    start_time="2026-12-02T10:00:00.000000000Z", end_time="2026-12-02T10:00:00.002000000Z")]
    spans = span_frame(records)
    assert spans["start"].iloc[0].isoformat().startswith("2026-12-02T10:00:00")
    assert [d for _, d in waterfall.tree_order(spans)] == [0]  # a root, not lost


def test_the_trace_link_opens_the_distributed_traces_app():
    link = trace_link("https://abc12345.apps.dynatrace.com", TRACE)
    assert link == ("https://abc12345.apps.dynatrace.com/ui/intent/dynatrace.distributedtracing/view-trace"
                    "#%7B%22trace_id%22%3A%22" + TRACE + "%22%7D")


def test_children_are_indented_under_their_parents_and_the_labels_left_aligned():
    """checkout at the left edge, its calls one step in, the cart's EmptyCart under checkout's client
    span two steps in: what the Distributed traces app's tree shows."""
    fig = waterfall.figure(span_frame(RECORDS), TRACE)
    assert fig.layout.meta["labkit"]["depths"] == [0, 1, 1, 1, 2]
    assert fig.layout.yaxis.showticklabels is False  # tick labels are right-aligned: no indent shows
    labels = [a for a in fig.layout.annotations if a.yref == "y"]
    assert [a.text for a in labels] == fig.layout.meta["labkit"]["labels"]
    assert {a.xanchor for a in labels} == {"left"} and [a.y for a in labels] == list(fig.data[0].y)
    shifts = [a.xshift for a in labels]
    assert shifts[1] - shifts[0] == shifts[4] - shifts[3] == waterfall.INDENT_PX and shifts[1:4] == [shifts[1]] * 3
    assert -shifts[0] < fig.layout.margin.l  # the root's label starts inside the figure, at its left


def test_two_spans_of_one_name_keep_two_rows():
    records = [_span("c1", None, "checkout", "PlaceOrder", "server", 0, 60),
               _span("x1", "c1", "currency", "Convert", "server", 5, 3),
               _span("x2", "c1", "currency", "Convert", "server", 10, 3)]
    fig = waterfall.figure(span_frame(records), TRACE)
    assert len(set(fig.data[0].y)) == 3
