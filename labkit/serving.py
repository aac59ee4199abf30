"""What the flags say, what flagd serves and what the demo's cart reads of them, in the lab's words.

`Lab`'s flag verbs (flags, served, demo_release, on_variant, layers) are a line each over these
functions; they take the cluster (and, for the cart's own evaluations, Dynatrace) as arguments.
"""
from __future__ import annotations

import dataclasses

from labkit import releases
from labkit.answers import OnVariant
from labkit.errors import BadInput, LabError
from labkit.flags import format_value


def flags_table(cluster):
    """The live flags as a table: key, variants, default, description."""
    from labkit import tables

    rows = []
    for f in cluster.flag_file().flags:
        rows.append({"flag": f.key, "variants": ", ".join(f"{k}={v}" for k, v in f.variants.items()),
                     "default": f.default_variant, "description": f.description})
    return tables.Flags(rows, columns=["flag", "variants", "default", "description"])


def with_cart(cluster, served, flag: str):
    """`served` with what the cart reads of `flag` (only cartFailure: the flag the cart reads)."""
    if flag != releases.FLAG or served is None:
        return served
    try:
        read = cluster.cart_reads(flag)
    except LabError as exc:
        read = f"the cart: {exc}"
    return dataclasses.replace(served, cart=read)


def demo_release(cluster, flag: str):
    """The demo release this lab runs (from the cart's image; else from `flag`'s variant types)."""
    return cluster.demo_release(flag, variants_or_none(cluster, flag))[0]


def on_variant(cluster, flag: str) -> OnVariant:
    """The variant that is the lab page's `on` on this release (3.0.0: '10%', 1 in 10 carts fail)."""
    variants = variants_or_none(cluster, flag)
    release = cluster.demo_release(flag, variants)[0]
    on = release.lab_on_variant if release.lab_on_variant in variants or "on" not in variants else "on"
    return OnVariant(on, release.version, format_value(variants[on]) if on in variants else None)


def variants_or_none(cluster, flag: str) -> dict:
    try:
        return cluster.flag_file().variants(flag)
    except BadInput:
        return {}


def layers(cluster, dynatrace, platform_token, flag: str, since):
    """The change through its three layers: the ConfigMap, every Ready flagd pod (OFREP), the cart
    (asked as it asks); for cartFailure also the cart's own evaluations since `since`."""
    from labkit import cart

    live = cluster.flag_file().flag(flag)
    pods = cluster.served_by_ready_pods(flag)
    try:
        read = cluster.cart_reads(flag) if flag == releases.FLAG else None
    except LabError as exc:
        read = f"unknown: {exc}"
    spans = cart_spans(dynatrace, platform_token, flag, since) if flag == releases.FLAG else None
    return cart.Layers(flag, live.default_variant, live.default_value, pods, read, spans)


def cart_spans(dynatrace, platform_token, flag: str, since):
    """The cart's own evaluations (a DataFrame), or why they are not read."""
    if not platform_token:
        return "not read: span events need a platform token (DT_PLATFORM_TOKEN)"
    try:
        return dynatrace.cart_evaluations(since, flag)
    except LabError as exc:
        return f"not read: {exc}"
