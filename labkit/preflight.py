"""The preflight as rows: one small function a row (or a few rows of one subject), `check()` over them.

Each row says what it found and, when NO, the one thing to do: the tokens per Dynatrace step, the
service, the tenant's half of the lab (labkit.tenant.check: pipeline, route, runbook, supportInfo, the
collector's tags), the flag file and flagd, the demo release and the cart's types, the load generator.
`Lab.check()` is this module's `check(lab)`; its answer (labkit.answers.Preflight) is what the
notebooks, the CLI and the room show.
"""
from __future__ import annotations

from labkit import cart, releases
from labkit.answers import Check, Preflight
from labkit.errors import BadInput, LabError
from labkit.flags import format_value


def check(lab, service: str, flag: str) -> Preflight:
    """Tenant and cluster: per Dynatrace step the token it takes and the scope it lacks, Grail's error
    logs probed before any wait, the tenant's half, then the cluster's rows."""
    result = Preflight([Check("lab", True, lab.where())])
    try:
        result.extend(access(lab))
        result.append(service_row(lab, service))
    except LabError as exc:
        result.append(Check("Dynatrace", False, str(exc)))
    else:
        result.extend(tenant_half(lab))
    result.extend(flagd(lab, flag))
    result.extend(cart_types(lab, flag))
    result.extend(load_generator(lab))
    return result


def access(lab) -> list[Check]:
    return [Check(a.item, a.ok, a.detail) for a in lab.dynatrace.access()]


def service_row(lab, service: str) -> Check:
    entity = lab.dynatrace.find_service(service)
    return Check(f"service {service!r}", entity is not None,
                 f"seen as {entity.id}: {entity.link}" if entity else
                 "not seen in the last 3 days: is the demo sending data?")


def tenant_half(lab) -> list[Check]:
    """The tenant's half of the lab: can it open the lab's problem at all?"""
    from labkit.tenant import check as tenant_check

    return tenant_check.rows(lab.dynatrace, lab.cluster)


def load_generator(lab) -> list[Check]:
    """Whether the release's load generator sends traffic: 3.0.0's asks flagd (OFREP) for
    loadGeneratorTraffic on every iteration and sends nothing while it is missing or off."""
    try:
        release = lab.demo_release()
    except LabError:
        return []  # the cluster's own check says why
    key = release.traffic_flag
    if key is None:
        return []  # this release's load generator reads no such flag
    try:
        served = lab.cluster.served_value(key)
    except BadInput:  # flagd has no such flag: the load generator's OFREP call is a 404, read as 0
        return [Check("load generator", False, (
            f"flagd has no {key}, so demo {release.version}'s load generator sends no traffic (it reads "
            f"a missing flag as 0; the lab page's flags.yaml has none). Fix: python -m labkit fix {key} "
            f"--restart, or lab.fix_flag_types({key!r}) then lab.restart_flagd() (demo "
            f"{release.version}'s own {key}, on)"))]
    except LabError:
        return []  # flagd's own check says why
    if not release.load_generator_sends(served.value):
        return [Check("load generator", False, (
            f"flagd serves {key} = {served.variant}, so demo {release.version}'s load generator pauses "
            f"all traffic. Fix: python -m labkit set {key} on"))]
    return [Check("load generator", True, f"flagd serves {key} = {served.variant}: demo "
                                          f"{release.version}'s load generator sends traffic")]

def cart_types(lab, flag: str) -> list[Check]:
    """The demo release, whether its cart can read `flag`'s variant types, and what it reads now."""
    if flag != releases.FLAG:
        return []  # the cart reads only this flag
    try:
        variants = lab.cluster.flag_file().variants(flag)
        release, known = lab.cluster.demo_release(flag, variants)
    except LabError:
        return []  # the flag file's checks above say what is wrong
    checks = [Check("demo release", True, f"{release.version} ({known}): its cart reads {flag} with "
                                          f"{release.cart_call}, {release.cart_method} on flagd:8013")]
    why = cart.mismatch(flag, release, variants)
    default = format_value(release.cart_default)
    checks.append(Check(f"{flag} types", not why, (
        f"{why}: flagd answers the cart with TYPE_MISMATCH, the cart reads {default} and never fails. "
        f"Fix: {cart.fix_hint(flag, release)}.") if why else (
        f"every variant is a {release.cart_kind} the cart reads; the lab page's `on` is "
        f"`{release.lab_on_variant}`")))
    try:
        read = lab.cluster.cart_reads(flag)
    except LabError as exc:
        return checks + [Check("the cart", False, str(exc))]
    return checks + [Check("the cart", not read.falls_back, read.summary)]

def flagd(lab, flag: str) -> list[Check]:
    """The flag file and what flagd serves, naming a file flagd cannot load (it then serves nothing)."""
    try:
        live = lab.cluster.flag_file()
    except BadInput as exc:  # not JSON, or no "flags": flagd refuses the whole file
        return [Check("flag file", False, f"{exc} A flagd pod started from it logs \"error setting state\" "
                                           "and serves no flags (every flag FLAG_NOT_FOUND).")]
    except LabError as exc:
        return [Check("cluster", False, str(exc))]
    try:
        variants = live.variants(flag)
    except LabError as exc:
        return [Check("cluster", False, str(exc))]
    checks = [Check(f"flag {flag!r}", True, "variants " + ", ".join(variants))]
    try:
        served = lab.cluster.served_value(flag)
    except BadInput as exc:
        try:
            empty = not lab.cluster.served_values()
        except LabError:
            empty = False
        why = (" flagd serves no flags at all: its pod started from a flag file it could not parse. "
               "Restart flagd now that the file is valid." if empty else "")
        return checks + [Check("cluster", False, f"{exc}{why}")]
    except LabError as exc:
        return checks + [Check("cluster", False, str(exc))]
    how = f" ({served.how})" if served.by_targeting else ""
    return checks + [Check("flagd", True, f"serves {flag} = {served.variant}{how}")]
