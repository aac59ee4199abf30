"""`labkit shop`: cart traffic (add an item, view the cart, empty it), counting failures."""
from __future__ import annotations

import argparse

from labkit.cli.common import command, err, out, settings
from labkit.errors import BadInput
from labkit.progress import printer


def _shop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=1.0, help="how long (default 1)")
    p.add_argument("--rate", type=float, default=5.0, help="cart sessions per second (default 5; 0 = flat out)")


@command("shop", "cart traffic: add an item, view the cart, empty it; counts failures", _shop_args)
def cmd_shop(args) -> int:
    from labkit.shop import Shop

    if not 0 < args.minutes <= 60:
        raise BadInput("--minutes must be more than 0 and at most 60.")
    with printer() as progress:  # one line rewritten in place on a terminal
        result = Shop(settings(args)).run(seconds=args.minutes * 60, rate=args.rate, progress=progress)
    out(result.summary())
    for note in result.notes:
        err(f"note: {note}")
    for f in result.failures[:5]:
        out(f"  {f.timestamp:%H:%M:%S} {f.operation}: {f.detail}")
    return 1 if result.unreachable else 0
