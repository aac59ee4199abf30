"""What the demo's cart reads of a flag: flagd's typed answer as the cart gets it, in the lab's words.

The cart does not ask over OFREP. It makes one typed call on flagd:8013 per `EmptyCart` (demo 3.0.0:
`flagd.evaluation.v2.Service/ResolveFloat`), and on any error (a TYPE_MISMATCH included) reads its
code default, 0, so it never fails (../shared/reference/flagd-consumers.md §0, §1.1). OFREP has no type
check and answers `on` either way: only the cart's own question proves a change at the consumer.
Pure: the Connect answer comes from labkit.cluster; nothing here does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from labkit import cards
from labkit.flags import format_value
from labkit.releases import FLAG, Release, kind_of_value

# Connect's error codes (flagd's errFormat: flag_evaluator.go) -> the OpenFeature error the cart's
# .NET provider makes of them (RpcResolver.cs GetOFException)
ERROR_CODES = {"invalid_argument": "TYPE_MISMATCH", "not_found": "FLAG_NOT_FOUND", "data_loss": "PARSE_ERROR",
               "unavailable": "PROVIDER_NOT_READY"}


@dataclass(frozen=True)
class CartRead:
    """flagd's answer to the cart's own typed call, and what the cart makes of it."""

    flag: str
    release: Release
    release_from: str          # how the release was known: the cart's image, or the flag's variant types
    value: object              # what the cart reads: flagd's value, or its code default on an error
    variant: str | None
    reason: str | None
    error_code: str | None = None  # TYPE_MISMATCH, FLAG_NOT_FOUND, PARSE_ERROR, GENERAL, PROVIDER_NOT_READY
    message: str = ""          # flagd's error message
    cause: str = ""            # why, in the lab's words (on an error)
    fix: str = ""              # what to do (on an error)
    variants: dict = field(default_factory=dict, compare=False)  # the ConfigMap's variants of the flag

    @property
    def kind(self) -> str:
        return self.release.cart_kind

    @property
    def falls_back(self) -> bool:
        """True when the cart reads its code default because flagd refused its call."""
        return self.error_code is not None

    @property
    def failure_rate(self) -> float:
        """The share of EmptyCart calls that fail with what the cart reads."""
        return self.release.failure_rate(self.value)

    @property
    def fails(self) -> str:
        rate = self.failure_rate
        if rate <= 0:
            return "no EmptyCart call fails"
        if rate >= 1:
            return "every EmptyCart call fails"
        return f"about 1 in {round(1 / rate):g} EmptyCart calls fail" if round(1 / rate) * rate > 0.95 \
            else f"about {rate:.0%} of EmptyCart calls fail"

    @property
    def expected(self) -> str:
        """The number the verdict should show for it, in the verdict's words (pct, its window and
        unit), so the switch's "1 in 10" and the verdict's rate read as one number; of all cart
        requests the share is smaller, as only EmptyCart fails, and it says so."""
        from labkit.verdict import pct

        return (f"the verdict should show about {pct(self.failure_rate)} of EmptyCart calls failed since the "
                "change (fewer of all cart requests, as only empties fail)")

    @property
    def summary(self) -> str:
        """One sentence: `the cart reads cartFailure = 0.1 (10%), so about 1 in 10 EmptyCart calls fail:
        the verdict should show about 10.0 % of EmptyCart calls failed since the change (...)`,
        or `TYPE_MISMATCH: the cart reads 0 and will never fail: <cause>. Fix: <fix>`."""
        default = format_value(self.release.cart_default)
        if self.falls_back:
            never = "will never fail" if self.failure_rate <= 0 else self.fails
            text = f"{self.error_code}: the cart reads {default} and {never}"
            return text + (f": {self.cause}" if self.cause else "") + (f". Fix: {self.fix}" if self.fix else "")
        if self.reason == "DISABLED":
            return (f"the cart reads {self.flag} = {default} (its code default: the flag is disabled), so "
                    f"{self.fails}: {self.expected}")
        return f"the cart reads {self.flag} = {format_value(self.value)} ({self.variant}), so {self.fails}: {self.expected}"

    def __str__(self) -> str:
        return self.summary

    def __repr__(self) -> str:
        return f"{self.summary} [demo {self.release.version}, {self.release_from}]"

    def _repr_html_(self) -> str:
        return cards.card("cart-read", self.summary.split(": ", 1)[0] if self.falls_back else self.summary, [
            ("demo release", f"{self.release.version} ({self.release_from})"),
            ("the cart asks", f"{self.release.cart_call}: {self.release.cart_method} on flagd:8013"),
            ("flagd answers", f"{self.error_code} ({self.message})" if self.falls_back else
             f"{self.variant} ({format_value(self.value)}), reason {self.reason}"),
            ("the cart reads", f"{format_value(self.value)}: {self.fails}"),
            ("why", self.cause), ("fix", self.fix)], ok=not self.falls_back,
            note="asked as the cart asks (typed, on port 8013), not over OFREP: OFREP checks no types")


def read(flag: str, release: Release, release_from: str, status: int, data, variants: dict) -> CartRead:
    """The CartRead from flagd's Connect answer (`status`, JSON `data`) to the cart's typed call."""
    base = dict(flag=flag, release=release, release_from=release_from, variants=dict(variants or {}))
    if status == 200 and isinstance(data, dict):
        if data.get("reason") == "DISABLED" or "value" not in data:  # no variant: the code default
            return CartRead(value=release.cart_default, variant=data.get("variant"), reason=data.get("reason"),
                            **base)
        return CartRead(value=data["value"], variant=data.get("variant"), reason=data.get("reason"), **base)
    code = ERROR_CODES.get(str((data or {}).get("code")), "GENERAL") if isinstance(data, dict) else "GENERAL"
    message = str((data or {}).get("message", "")) if isinstance(data, dict) else ""
    cause, fix = _why(code, flag, release, variants, message)
    return CartRead(value=release.cart_default, variant=None, reason="ERROR", error_code=code,
                    message=message, cause=cause, fix=fix, **base)


def not_ready(flag: str, release: Release, release_from: str, variants: dict) -> CartRead:
    """No flagd pod is Ready: the cart's calls fail (Unavailable) and it reads its default."""
    cause, fix = _why("PROVIDER_NOT_READY", flag, release, variants, "")
    return CartRead(flag=flag, release=release, release_from=release_from, value=release.cart_default,
                    variant=None, reason="ERROR", error_code="PROVIDER_NOT_READY", message="no endpoints",
                    cause=cause, fix=fix, variants=dict(variants or {}))


def mismatch(flag: str, release: Release, variants: dict) -> str:
    """'' when the release's cart can read every variant of the flag; else why not, naming them."""
    bad = {k: v for k, v in (variants or {}).items() if not release.reads_kind(v)}
    if not variants:
        return f"{flag} has no variants"
    if not bad:
        return ""
    shown = ", ".join(f"{k}={format_value(v)}" for k, v in bad.items())
    kinds = " and ".join(sorted({kind_of_value(v) for v in bad.values()}))
    which = "its variants are" if len(bad) == len(variants) else f"{len(bad)} of its variants are"
    return (f"demo {release.version}'s cart reads {flag} as a {release.cart_kind} ({release.cart_call}) "
            f"but {which} {kinds} ({shown})")


def fix_hint(flag: str, release: Release) -> str:
    return (f"give {flag} demo {release.version}'s variants with lab.fix_flag_types() or "
            f"`python -m labkit fix {flag}` (every other flag kept; undo with .undo() or --undo), then restart "
            f"flagd; to turn it on, pick {release.lab_on_variant!r} (the lab page's `on`)")


def _why(code: str, flag: str, release: Release, variants: dict, message: str) -> tuple[str, str]:
    if code == "TYPE_MISMATCH":
        why = mismatch(flag, release, variants)
        if why:
            return why + ", so flagd refuses the cart's typed read", fix_hint(flag, release)
        return (f"flagd still serves an older flag file whose {flag} demo {release.version}'s cart cannot read "
                f"as a {release.cart_kind} (the ConfigMap's variants are fine now)",
                "restart flagd, which loads the ConfigMap only when its pod starts (lab.restart_flagd())")
    if code == "FLAG_NOT_FOUND":
        return (f"flagd has no flag {flag} ({message or 'Flag not found'})",
                f"add it with lab.fix_flag_types() or `python -m labkit fix {flag}`, then restart flagd")
    if code == "PROVIDER_NOT_READY":
        return ("no flagd pod is Ready, so the cart's calls fail (Unavailable)",
                "wait for flagd or restart it: kubectl rollout restart deploy flagd")
    return f"flagd could not evaluate {flag} ({message or code})", "check the flag file: python -m labkit check"




# ---- the fix: the release's own variants for the flag, and back ------------------------------------
@dataclass(frozen=True)
class FlagFix:
    """A flag given a demo release's own variants (or put back as it was: release None)."""

    flag: str
    release: Release | None   # None: this is the undo of a fix
    before: dict | None       # the flag before this write (None: it was missing)
    after: dict | None        # the flag after it (None: removed again by the undo)
    changed: bool
    undo: Callable = field(repr=False, compare=False)  # undo() reverses this write

    @property
    def summary(self) -> str:
        restart = ("flagd loads it only when its pod starts: restart flagd (lab.restart_flagd(), or "
                   "kubectl rollout restart deploy flagd)")
        if self.release is None:
            now = _variants(self.after) if self.after else "removed (the fix had added it)"
            return f"{self.flag} is back as it was before the fix: {now}. {restart}."
        if not self.changed:
            return f"{self.flag} already has demo {self.release.version}'s variants; nothing to fix."
        was = _variants(self.before) if self.before else "missing"
        return (f"{self.flag} now has demo {self.release.version}'s variants: {_variants(self.after)} "
                f"(was {was}); every other flag and field kept. {restart}. Undo: .undo() or "
                f"python -m labkit fix {self.flag} --undo")

    __repr__ = summary.fget  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.summary

    def _repr_html_(self) -> str:
        title = (f"{self.flag} put back" if self.release is None else
                 f"{self.flag}: demo {self.release.version}'s variants")
        return cards.card("flag-fix", title, [("change", self.summary)], ok=True)


def fixed_flag(release: Release, before: dict | None, flag: str = FLAG) -> dict:
    """`before` with the release's variants; the default mapped: a variant that still exists stays,
    one that was on (true, above 0) becomes the release's lab_on_variant, any other `off`."""
    theirs = release.flag(flag)
    if not isinstance(before, dict):
        return theirs
    body = dict(before, variants=dict(theirs["variants"]))
    old = before.get("defaultVariant")
    if old not in body["variants"]:
        on = _on((before.get("variants") or {}).get(old))
        body["defaultVariant"] = _pick(body["variants"], on, release.lab_on_variant if on else None,
                                       theirs.get("defaultVariant"))
    return body


def restored_flag(flag: str, kept: dict, now: dict | None) -> dict | None:
    """The flag as it was before the fix (`kept`: {"before", "fixed"}), with a default changed since
    the fix carried over (on stays on); None when the fix had added it. Refused when someone gave the
    flag other variants since (their change wins)."""
    before, fixed = kept.get("before"), kept.get("fixed") or {}
    if now is not None and now.get("variants") != fixed.get("variants"):
        from labkit.errors import BadInput

        raise BadInput(f"{flag}'s variants changed since labkit's fix (now {_variants(now)}), so there is "
                       "nothing of the fix to undo; nothing was changed.")
    if before is None:
        return None
    body = dict(now or {}, **{k: v for k, v in before.items()})
    default = (now or {}).get("defaultVariant")
    if default != fixed.get("defaultVariant"):  # changed after the fix: keep it on or off
        body["defaultVariant"] = _pick(before.get("variants") or {}, _on(fixed["variants"].get(default)),
                                       None, before.get("defaultVariant"))
    return body


def _on(value) -> bool:
    return value is True or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)


def _pick(variants: dict, on: bool, named: str | None, otherwise):
    """The variant `named` if there, else the first that is on (off) as asked, else `otherwise`."""
    if named in variants:
        return named
    if not on and "off" in variants:
        return "off"
    return next((k for k, v in variants.items() if _on(v) == on), otherwise)


def _variants(flag: dict | None) -> str:
    variants = (flag or {}).get("variants") or {}
    shown = ", ".join(f"{k}={format_value(v)}" for k, v in variants.items())
    return f"{shown} (default {(flag or {}).get('defaultVariant')})"


# ---- the three layers of a change ------------------------------------------------------------------
@dataclass(frozen=True)
class Layers:
    """A flag's change through its layers: the ConfigMap, every Ready flagd pod (OFREP), the cart (asked
    as it asks), and the variant the cart itself evaluated (its span events), when they were read."""

    flag: str
    default_variant: str | None
    default_value: object
    pods: dict                 # pod name -> Served (OFREP) or None while it answers nothing
    cart: object               # a CartRead, or why it is unknown (None: the cart does not read this flag)
    spans: object = None       # a DataFrame of the cart's own evaluations, or why not read

    def rows(self) -> list[tuple[str, str]]:
        rows = [(f"ConfigMap flagd-config", f"defaults to {self.default_variant} "
                                            f"({format_value(self.default_value)}); a flagd pod loads it when it starts")]
        for pod, served in self.pods.items():
            rows.append((f"flagd pod {pod} (OFREP)",
                         f"serves {served.variant} ({format_value(served.value)})" if served else "answers nothing yet"))
        if not self.pods:
            rows.append(("flagd pods", "no Ready pod: flagd serves nothing"))
        if self.cart is not None:
            who = f"the cart (demo {self.cart.release.version})" if isinstance(self.cart, CartRead) else "the cart"
            rows.append((who, str(self.cart)))
        if self.spans is not None:
            rows.append(("the cart's own spans", spans_text(self.spans)))
        return rows

    def __repr__(self) -> str:
        width = max(len(label) for label, _ in self.rows())
        return "\n".join(f"{label.ljust(width)}  {text}" for label, text in self.rows())

    def _repr_html_(self) -> str:
        ok = not (isinstance(self.cart, CartRead) and self.cart.falls_back) and isinstance(self.cart, CartRead)
        return cards.grid("layers", f"{self.flag}: ConfigMap → every flagd pod → the cart", ("layer", "says"),
                          self.rows(), ok=ok if self.cart is not None else None,
                          note="OFREP (port 8016) checks no types; the cart asks typed on port 8013")


def spans_text(spans) -> str:
    """'evaluated 10% (0.1) in 42 calls, last at 14:03:07 UTC; ...' from Dynatrace.cart_evaluations, or
    why there is nothing (`spans` may be that reason already)."""
    if isinstance(spans, str):
        return spans
    if spans is None or not len(spans):
        return "no feature_flag.evaluation span event yet (they come with the cart's next EmptyCart)"
    parts = []
    for r in spans.itertuples():
        answer = f"{r.variant} ({r.value})" if isinstance(r.variant, str) and r.variant else f"value {r.value}"
        if isinstance(r.error, str) and r.error:
            answer = f"{r.error}, so {r.value}"
        parts.append(f"{answer} in {r.calls} call{'s' if r.calls != 1 else ''}, last at {cards.when(r.last_seen)}")
    return "evaluated " + "; ".join(parts)


__all__ = ["CartRead", "ERROR_CODES", "FlagFix", "Layers", "fix_hint", "fixed_flag", "mismatch", "not_ready", "read",
           "restored_flag", "spans_text"]
