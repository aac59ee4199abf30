"""What the cart reads: the demo release the lab runs (from the cart's image), flagd asked as the cart
asks (its release's typed call on 8013, through the service proxy), and the fix of the flag's types
so that cart can read it (kept in a ConfigMap annotation, and undone from it)."""
from __future__ import annotations

import json
from typing import Callable

from labkit import cart, releases
from labkit import settings as names
from labkit._kube import Kube
from labkit.cart import CartRead
from labkit.cluster.flag_file import FlagConfigMap, parse
from labkit.cluster.served import OFREP_TIMEOUT
from labkit.errors import BadInput, Forbidden, LabError, NotFound
from labkit.releases import Release


def demo_release(kube: Kube, flag: str = names.FLAG, variants: dict | None = None) -> tuple[Release, str]:
    """(the demo release the lab runs, how that is known): from the cart Deployment's image, else
    from `flag`'s variant types (numbers: a cart that reads a float; booleans: one that reads a
    boolean), else labkit's default release."""
    image = _cart_image(kube)
    found = releases.from_image(image)
    if found is not None:
        return found, f"the cart's image {image}"
    kind = releases.kind_of_variants(variants or {})
    by_kind = next((r for r in releases.RELEASES.values() if r.cart_kind == kind), None)
    unknown = f"no cart image labkit knows ({image})" if image else "no cart Deployment found"
    if by_kind is not None:
        return by_kind, f"{flag}'s {kind} variants; {unknown}"
    return releases.get(), f"labkit's default; {unknown}"


def _cart_image(kube: Kube) -> str | None:
    """The image of the demo's cart container (Deployment labelled opentelemetry.io/name=cart)."""
    try:
        found, _ = kube.list_objects("deployments", names.CART_SELECTOR)
    except (Forbidden, NotFound, BadInput):
        return None
    for deployment in found.values():
        containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        for c in sorted(containers, key=lambda c: c.get("name") != names.SERVICE):  # `cart` first
            return c.get("image")
    return None


def cart_reads(config: FlagConfigMap, flag: str = names.FLAG) -> CartRead:
    """Ask flagd AS THE DEMO'S CART ASKS: its release's typed call (3.0.0: ResolveFloat) on flagd:8013
    with no context, Connect JSON through the API server's service proxy; say what the cart reads
    (its code default on any error: TYPE_MISMATCH, FLAG_NOT_FOUND, no flagd pod Ready)."""
    kube = config.kube
    try:
        variants = config.flag_file().variants(flag)
    except (BadInput, NotFound):
        variants = {}  # no such flag, or no flag file: flagd's answer says what that means
    release, known_from = demo_release(kube, flag, variants)
    target = f"{names.FLAGD_SERVICE}:{names.FLAGD_RPC_PORT}"
    reply = kube.send("POST", kube.path("services") + f"/{target}/proxy/{release.cart_method}",
                      body={"flagKey": flag, "context": {}}, timeout=OFREP_TIMEOUT)
    data = reply.data if isinstance(reply.data, dict) else None
    if data is not None and data.get("kind") == "Status":  # the API server's own answer
        if reply.status == 503:
            return cart.not_ready(flag, release, known_from, variants)
        raise kube.error(reply.status, reply.text, "create", "services/proxy", target)
    if reply.status == 200 or (data is not None and isinstance(data.get("code"), str)):
        return cart.read(flag, release, known_from, reply.status, data, variants)
    raise LabError(f"flagd did not answer the cart's call {release.cart_method} on port {names.FLAGD_RPC_PORT} "
                   f"({reply.status}: {(reply.text or '').strip()[:120]}), so what the cart reads is unknown. "
                   f"Is this flagd v0.16 with its evaluation port? Check: kubectl -n {kube.namespace} get svc "
                   f"{names.FLAGD_SERVICE}")


def fix_flag_types(config: FlagConfigMap, flag: str, release: Release | str | None, dry_run: bool,
                   undo: Callable[[], cart.FlagFix]) -> cart.FlagFix:
    """Give `flag` the demo release's own variants (Cluster.fix_flag_types), `undo` the FlagFix's undo."""
    if isinstance(release, str):
        release = releases.get(release)
    if release is None:
        try:
            release = demo_release(config.kube, flag, config.flag_file().variants(flag))[0]
        except (BadInput, NotFound):
            release = demo_release(config.kube, flag)[0]

    def edit(cm: dict):
        live = parse(cm)
        before = live.data["flags"].get(flag)
        body = cart.fixed_flag(release, before, flag)
        after = live.with_flag(flag, body)
        result = cart.FlagFix(flag, release, before, body, after.text != live.text, undo=undo)
        if dry_run or not result.changed:
            return result, None
        kept = json.dumps({"before": before, "fixed": body}, separators=(",", ":"))
        meta = cm.setdefault("metadata", {})
        meta["annotations"] = dict(meta.get("annotations") or {}, **{_before_fix(flag): kept})
        cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: after.to_json()})
        return result, cm

    return config.update(edit, f"{flag} was not fixed")


def undo_flag_fix(config: FlagConfigMap, flag: str, fix_again: Callable[[], cart.FlagFix]) -> cart.FlagFix:
    """Put `flag` back as it was before fix_flag_types() (kept in the ConfigMap's annotation);
    `fix_again` is the FlagFix's undo."""
    def edit(cm: dict):
        annotations = (cm.get("metadata") or {}).get("annotations") or {}
        if _before_fix(flag) not in annotations:
            raise BadInput(f"There is no fix of {flag} to undo: ConfigMap {names.CONFIGMAP} has no "
                           f"annotation {_before_fix(flag)} (labkit writes it when it fixes the flag).")
        live = parse(cm)
        now = live.data["flags"].get(flag)
        restored = cart.restored_flag(flag, json.loads(annotations[_before_fix(flag)]), now)
        after = live.with_flag(flag, restored) if restored is not None else live.without_flag(flag)
        cm["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != _before_fix(flag)}
        cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: after.to_json()})
        return cart.FlagFix(flag, None, now, restored, True, undo=fix_again), cm

    return config.update(edit, f"{flag} was not put back")


def _before_fix(flag: str) -> str:
    """The ConfigMap annotation that keeps `flag` as it was before labkit's fix (for the undo)."""
    return f"labkit/before-fix-{flag}"[:len("labkit/") + 63]  # a name part has at most 63 characters
