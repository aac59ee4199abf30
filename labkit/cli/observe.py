"""Observing: `labkit failures` (the service's failed requests per minute, and the verdict since the
change), `labkit problems` (problems on the service; --wait until Davis opens one) and `labkit logs`
(the service's error logs)."""
from __future__ import annotations

import argparse
import re

from labkit.cli.common import (ago, check_limit, command, dynatrace, frame_table, limit_arg, out, run_timeline,
                               say_shown, since_args, table)
from labkit.errors import BadInput, LabError


@command("failures", "the service's failed requests per minute, from Dynatrace",
         lambda p: (since_args(p, "30m"), p.add_argument("--resolution", default="1m",
                                                            help="slot size: 1m, 5m, 1h (default 1m)"),
                    limit_arg(p, 30, "minutes (the newest)")))
def cmd_failures(args) -> int:
    from labkit import verdict

    if not re.match(r"^\d{1,4}[mhdw]$", args.resolution):
        raise BadInput(f"--resolution {args.resolution[:40]!r} must be a number and a unit: 1m, 5m, 1h or 1d.")
    check_limit(args.limit)
    since = ago(args.since)
    timeline = run_timeline(args)
    with dynatrace(args) as dt:
        df = dt.failed_requests(args.service, since=since, resolution=args.resolution)
        link = _service_link(dt, args.service)
        judged = (verdict.judge(dt, timeline, df, args.service)
                  if verdict.windows(timeline) is not None else None)
    shown = df.tail(args.limit)
    rows = [[f"{r.timestamp:%Y-%m-%d %H:%M}", str(r.requests) + (" (so far)" if r.partial else ""),
             str(r.failed), verdict.pct(r.failure_rate)] for r in shown.itertuples()]
    if rows:  # each row is the minute it covers (Dynatrace stamps a slot by its end)
        out(table(rows, ["MINUTE (UTC)", "REQUESTS", "FAILED", "RATE THAT MINUTE"]))
    else:
        out(f"no requests of {args.service} yet")
    say_shown(len(shown), len(df), "minutes (the newest)")
    # the verdict's count over all of --since, named by its times (the verdict below: since the change)
    total = verdict.count(df, df["timestamp"].min(), None) if len(df) else verdict.Count(0, 0)
    span = f", {verdict.span_text(df['timestamp'].min(), total.upto)}" if total.upto is not None else ""
    out(f"{args.service}: {verdict.share_text(total, f'{args.service} requests', f'in the last {args.since}{span}')}")
    if judged is not None:
        out(f"verdict: {judged.text}" + (f"\n  ({judged.how})" if judged.how else ""))
    if link:
        out(f"the {args.service} service in Dynatrace: {link}")
    return 0


def _service_link(dt, service: str) -> str | None:
    """The service screen's link, when the token may look the service up (else no link)."""
    try:
        entity = dt.find_service(service)
    except LabError:
        return None
    return entity.link if entity else None


@command("problems", "problems affecting the service", lambda p: (
    since_args(p, "1d"), limit_arg(p, 20, "problems (the newest)"), _wait_arg(p)))
def cmd_problems(args) -> int:
    check_limit(args.limit)
    with dynatrace(args) as dt:
        df = _problems(dt, args.service, ago(args.since), wait=args.wait)
    shown = df.head(args.limit)
    frame_table(shown, ["display_id", "status", "title", "start", "end", "affected"],
           f"no problems on {args.service} in the last {args.since}")
    say_shown(len(shown), len(df), "problems (the newest)")
    for display_id, link in zip(shown["display_id"], shown["link"]):  # links last: they are long
        out(f"  {display_id}: {link}")
    return 0


@command("logs", "the service's error logs (status ERROR; Grail with DT_PLATFORM_TOKEN)",
         lambda p: (since_args(p, "1h"), limit_arg(p, 20, "error logs (the newest)")))
def cmd_logs(args) -> int:
    from labkit import verdict

    check_limit(args.limit)
    with dynatrace(args) as dt:  # up to 1000 read, so the listing can say how many there are
        df = dt.error_logs(args.service, since=ago(args.since), limit=1000)
    link = df.attrs.get("link")
    shown = df.head(args.limit)
    if len(shown):  # one line per log: the first line of the message says what failed
        shown = shown.assign(content=shown["content"].str.split("\n").str[0].str.strip())
    frame_table(shown, ["timestamp", "loglevel", "trace_id", "content"], f"no error logs of {args.service} "
           f"in the last {args.since}")
    say_shown(len(shown), len(df), f"error logs in the last {args.since} (the newest)", capped=len(df) >= 1000)
    w = verdict.windows(run_timeline(args))
    if w is not None and len(df):  # one error log per failed EmptyCart: the verdict's failures
        after = int((df["timestamp"].dt.tz_localize(None) >= w.change_at).sum())
        out(f"{after} of them since {w.label} at {w.change_at:%H:%M:%S} UTC")
    if link:
        out(f"in the Logs app: {link}")
    return 0


def _wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=None, nargs="?", const=600.0, metavar="SECONDS",
                   help="wait until a problem opens (default 600 s); stops at once when the tenant cannot open "
                        "the lab's problem, saying why")


def _problems(dt, service: str, since, wait: float | None = None):
    """`labkit problems`: the service's problems since `since`; with `wait`, once one opened (after
    checking the tenant can open the lab's problem at all, else a LabError saying why)."""
    from datetime import datetime, timezone

    from labkit.progress import printer
    from labkit.tenant.check import require_problem_possible

    if wait is None:
        return dt.problems(service, since=since)
    require_problem_possible(dt)
    with printer() as progress:
        return dt.wait_for_problem(service, since=datetime.now(timezone.utc), timeout=wait, progress=progress)
