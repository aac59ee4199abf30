"""Speed targets, measured side by side in one run on the local lab; prints a table.

    .venv/bin/python benchmarks/run.py [--repeat 5] [--release 3.0.0|2.2.0|all] [--workbook] [--short-waits]

Ratios and overheads, not absolute times, are what to compare on a shared, noisy machine.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # ReadyGauge: flagd's Ready pods, watched with the kubernetes client

from labkit import releases  # noqa: E402
from labkit.sandbox import LocalLab, Timings  # noqa: E402
from labkit.releases import FLAG  # noqa: E402
from labkit.settings import Settings  # noqa: E402


@dataclass(frozen=True)
class Waits:
    """What the rows wait on that is not what they measure: the local lab's pod lifecycle, the shop's
    run, the seats. README is what the README's table is measured with; SHORT (--short-waits, for the
    test suite) is a tenth of the pod times at the same 3 : 1 ratio: every row runs, its numbers are
    not the README's and its targets mean nothing there."""
    pod_terminate: float      # s the lab's flagd pods stay Terminating (restart_flagd, cart rows)
    pod_start: float          # s they take to start
    change_terminate: float   # restart_rows': the lab's Codespace, ~30 s to terminate ...
    change_start: float       # ... and ~10 s to start, scaled down
    shop_seconds: float
    seats: int                # at least this many seats join the shared tenant
    seats_settle: float       # s for the new seats' flagd pods to start before reading beside them


README = Waits(1.0, 1.0, 3.0, 1.0, shop_seconds=5.0, seats=5, seats_settle=2.0)
SHORT = Waits(0.1, 0.1, 0.3, 0.1, shop_seconds=1.0, seats=2, seats_settle=0.5)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def subprocess_seconds(args: list[str], env: dict, repeat: int) -> list[float]:
    return timed(lambda: subprocess.run(args, env=env, cwd=ROOT, check=True, capture_output=True), repeat)


def settle(lab, timeout: float = 30) -> None:
    """Wait (bench-side) until flagd's pods are all Ready and none is Terminating: each change starts clean."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods, _ = lab.cluster.list("pods", "opentelemetry.io/name=flagd", None)
        if pods and all(lab.cluster.pod_flags(p["metadata"]["name"]) for p in pods):
            return
        time.sleep(0.02)
    raise RuntimeError("flagd did not settle")


def variants(workshop) -> tuple[str, str]:
    """(on, resting) of cartFailure on the lab's demo release: its own on-variant (3.0.0: '10%', 2.2.0:
    'on') and what a fresh install serves ('off'), so the bench flips the flag the release really has."""
    return workshop.on_variant(), workshop.demo_release().resting_variants()[FLAG]


def flip(workshop, on: str, rest: str) -> str:
    """The variant to change to next: on when it rests, else back to rest."""
    return on if workshop.cluster.flag_file().flag(FLAG).default_variant == rest else rest


def rest_again(workshop, rest: str) -> None:
    if workshop.cluster.flag_file().flag(FLAG).default_variant != rest:
        workshop.change_flag(rest, send_event=False)


def restart_rows(lab, settings, repeat: int, waits: Waits) -> list[tuple]:
    """Apply -> every Ready pod serves, rollout vs scale, with the pod lifecycle in the lab's proportions."""
    from kube_sandbox import ReadyGauge

    from labkit.lab import Lab

    t = lab.timings
    saved = (t.pod_terminate, t.pod_start)
    t.pod_terminate, t.pod_start = waits.change_terminate, waits.change_start  # the Codespace's 30 s : 10 s
    workshop = Lab(settings)
    on, rest = variants(workshop)
    seconds = {"rollout": [], "scale": []}
    dark = {"rollout": [], "scale": []}
    try:
        for i in range(repeat):
            for way in ("rollout", "scale"):  # interleaved: both ways see the same machine noise
                settle(lab)
                variant = flip(workshop, on, rest)
                with ReadyGauge(lab.kubeconfig_path) as gauge:
                    start = time.perf_counter()
                    workshop.change_flag(variant, send_event=False, restart=way)
                    seconds[way].append(time.perf_counter() - start)
                dark[way].append(gauge.dark)
        settle(lab)
        rest_again(workshop, rest)
    finally:
        t.pod_terminate, t.pod_start = saved
        workshop.dynatrace.close()
    # rollout waits for a start only; scale for termination + start
    life = {"rollout": waits.change_start, "scale": waits.change_terminate + waits.change_start}
    roll, scale = statistics.median(seconds["rollout"]), statistics.median(seconds["scale"])
    how = (f"median of {repeat}, 1 replica; pods stop {waits.change_terminate:g} s, start "
           f"{waits.change_start:g} s (the lab's 30 s : 10 s)")
    rows = [("Apply -> every pod serves: rollout vs scale", f"{roll / scale:.2f}x",
             f"{roll:.2f} s vs {scale:.2f} s, {how}", "<= 0.5x", roll / scale <= 0.5)]
    rows.append(("no Ready flagd pod during a change (rollout)", f"{max(dark['rollout']):.2f} s",
                 f"worst of {repeat}, watched", "0 s", max(dark["rollout"]) == 0))
    rows.append(("no Ready flagd pod during a change (scale)", f"{statistics.median(dark['scale']):.2f} s",
                 f"median of {repeat}, watched; the lab page's way", "reported", True))
    for way, median in (("rollout", roll), ("scale", scale)):
        over = median - life[way]
        rows.append((f"Apply overhead over the pod lifecycle ({way})", f"{over:.3f} s",
                     f"lifecycle {life[way]:.1f} s", "<= 0.3 s", over <= 0.3))
    return rows


def cart_rows(lab, settings, repeat: int) -> list[tuple]:
    """Apply -> every Ready pod serves it (OFREP), and -> the cart reads it (its typed call on 8013)."""
    from labkit.lab import Lab

    workshop = Lab(settings)
    cluster, (on, rest) = workshop.cluster, variants(workshop)
    pods, cart = [], []
    try:
        for _ in range(repeat):
            settle(lab)
            variant = flip(workshop, on, rest)
            start = time.perf_counter()
            cluster.set_default_variant(FLAG, variant)
            cluster.restart_flagd(timeout=60, how="rollout")
            cluster.wait_served(FLAG, variant, timeout=30)
            pods.append(time.perf_counter() - start)
            while cluster.cart_reads().variant != variant:  # asked as the cart asks, until it reads it
                if time.perf_counter() - start > 60:
                    raise RuntimeError(f"the cart never read {variant}")
            cart.append(time.perf_counter() - start)
        settle(lab)
        rest_again(workshop, rest)
    finally:
        workshop.dynatrace.close()
    served, read = statistics.median(pods), statistics.median(cart)
    after = statistics.median(c - p for c, p in zip(cart, pods))
    return [("Apply -> every pod serves (rollout)", f"{served:.2f} s", f"median of {repeat}, OFREP per pod",
             "reported", True),
            ("Apply -> the cart reads the new value", f"{read:.2f} s",
             f"median of {repeat}; {after * 1000:.0f} ms after every pod serves (ResolveFloat/Boolean on 8013)",
             "<= every pod + 0.3 s", after <= 0.3)]


def _rss_mb() -> float:
    """This process's resident memory (Linux /proc), MB."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def seat_rows(repeat: int, waits: Waits) -> list[tuple]:
    """Seats on one local tenant: what one more seat costs, and whether a seat's reads slow down
    when the tenant holds other seats' data (they are filtered, not skipped)."""
    from labkit.dynatrace import Dynatrace
    from labkit.sandbox import start_shared_tenant

    timings = Timings.fast()
    timings.shopper_rate = 0.0
    seats = max(repeat, waits.seats)
    with tempfile.TemporaryDirectory() as room:
        shared = start_shared_tenant(room, ["seat-1"], timings)
        try:
            with Dynatrace(Settings.load(environ=shared.env("seat-1"), dotenv=None)) as dt:
                def reads():
                    return dt.failed_requests("cart", since="now-2h", resolution="1m")
                reads()  # warm
                alone = statistics.median(timed(reads, repeat * 4))
                rss, starts = _rss_mb(), []
                for k in range(2, seats + 1):
                    start = time.perf_counter()
                    shared.add_seat(f"seat-{k}")
                    starts.append(time.perf_counter() - start)
                per_seat = (_rss_mb() - rss) / (seats - 1)
                time.sleep(waits.seats_settle)  # the new seats' flagd pods start: not what is measured
                beside = statistics.median(timed(reads, repeat * 4))
        finally:
            shared.stop()
    start = statistics.median(starts)
    return [("a seat joining a shared local tenant", f"{start:.2f} s / {per_seat:.0f} MB",
             f"median of {seats - 1} seats started; RSS per seat", "< 1 s", start < 1.0),
            (f"a seat's failed_requests beside {seats - 1} other seats vs alone", f"{beside / alone:.2f}x",
             f"{beside * 1000:.1f} ms vs {alone * 1000:.1f} ms", "<= 1.5x", beside / alone <= 1.5)]


def lab_rows(version: str, repeat: int, waits: Waits) -> list[tuple]:
    """The rows measured on one local lab of demo release `version`."""
    import os

    import httpx

    timings = Timings.fast()
    timings.pod_terminate, timings.pod_start, timings.shopper_rate = waits.pod_terminate, waits.pod_start, 0.0
    timings.seed_hours = 24.0
    rows = []
    with LocalLab(tempfile.mkdtemp(), timings, release=version) as lab:
        env = {**os.environ, **lab.env, "PYTHONPATH": str(ROOT)}
        settings = Settings.load(environ=lab.env, dotenv=None)
        from labkit.cluster import Cluster
        from labkit.dynatrace import Dynatrace
        from labkit.shop import Shop

        cluster = Cluster(settings)
        lifecycle = timings.pod_terminate + timings.pod_start
        restarts = timed(lambda: cluster.restart_flagd(timeout=60), repeat)
        overhead = statistics.median(restarts) - lifecycle
        rows.append(("restart_flagd() overhead over the pod lifecycle", f"{overhead:.3f} s",
                     f"median of {repeat}; lifecycle {lifecycle:.1f} s", "<= 0.3 s", overhead <= 0.3))

        flags = statistics.median(subprocess_seconds([sys.executable, "-m", "labkit", "flags"], env, repeat))
        rows.append(("python -m labkit flags", f"{flags:.2f} s", "wall, fresh interpreter", "< 1.5 s", flags < 1.5))

        imp = statistics.median(subprocess_seconds([sys.executable, "-c", "import labkit"], env, repeat))
        rows.append(("import labkit", f"{imp:.3f} s", "fresh interpreter", "< 1.0 s", imp < 1.0))

        from labkit.lab import Lab

        workshop = Lab(settings)  # the release's own variants: the event says what a change would say
        try:
            on, rest = variants(workshop)
        finally:
            workshop.close()
        if on.release != version:  # the lab must run the release asked for, or every row is about another
            raise RuntimeError(f"asked for demo {version}, the local lab runs {on.release}")
        dt = Dynatrace(settings)
        body = {"title": "feature flag changed", "entitySelector": "type(SERVICE),entityName.equals(cart)",
                "eventType": "CUSTOM_CONFIGURATION",
                "properties": {"dt.event.is_rootcause_relevant": "true", "action": "changed",
                               "feature_flag.key": FLAG, "defaultValue": on}}
        bare = httpx.Client(headers={"Authorization": f"Api-Token {lab.api_token}"}, timeout=10)
        n = max(repeat * 8, 40)
        dt.send_change_event("cart", FLAG, on, old=rest)  # warm: the token and entity lookups
        # interleaved, one of each in turn, so a busy moment on a shared machine hits both sides alike
        pairs = [(timed(lambda: bare.post(f"{lab.tenant_server.url}/api/v2/events/ingest",
                                          json=body).raise_for_status(), 1)[0],
                  timed(lambda: dt.send_change_event("cart", FLAG, on, old=rest), 1)[0])
                 for _ in range(n)]
        bare_t, ours_t = (statistics.median(side) for side in zip(*pairs))
        ratio = ours_t / bare_t
        rows.append(("send_change_event vs bare httpx POST", f"{ratio:.2f}x",
                     f"{ours_t * 1000:.1f} ms vs {bare_t * 1000:.1f} ms, median of {n}, interleaved",
                     "<= 1.2x", ratio <= 1.2))

        q = statistics.median(timed(lambda: dt.failed_requests("cart", since="now-24h", resolution="1m"), repeat))
        rows.append(("24 h of cart at 1 min into a DataFrame", f"{q:.3f} s", f"median of {repeat}",
                     "< 0.5 s", q < 0.5))

        rows += restart_rows(lab, settings, repeat, waits)
        rows += cart_rows(lab, settings, repeat)

        seconds = waits.shop_seconds
        result = Shop(settings).run(seconds=seconds, rate=0)
        ops = result.operations / seconds
        rows.append(("shop cart operations per second", f"{ops:.0f}/s", f"one process, {seconds:g} s",
                     ">= 200/s", ops >= 200))
    return rows


def workbook_row() -> tuple:
    import os

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "labkit", "workshop", "--out", tempfile.mkdtemp()],
                   cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wb = time.perf_counter() - start
    return ("whole workbook headless on the local lab", f"{wb:.0f} s", "default timings", "< 180 s", wb < 180)


def release_rows(version: str, args, waits: Waits) -> list[tuple]:
    """Every row on demo release `version`, each led by it. The environment says it too, as `labkit
    --release` does: the seats' labs and the workbook's subprocess start that release."""
    import os

    os.environ["LABKIT_DEMO_RELEASE"] = version
    rows = lab_rows(version, args.repeat, waits) + seat_rows(args.repeat, waits)
    if args.workbook:
        rows.append(workbook_row())
    return [(version, *row) for row in rows]


def print_table(rows: list[tuple]) -> None:
    """rows: (release, what, value, how, target, met)."""
    header = ("release", "what", "value", "how", "target")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)) + " | met")
    print("-+-".join("-" * w for w in widths) + "-+----")
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + f" | {'yes' if row[-1] else 'NO'}")


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--release", choices=[*sorted(releases.RELEASES), "all"],
                        default=os.environ.get("LABKIT_DEMO_RELEASE") or releases.DEFAULT,
                        help="the demo release the local lab runs, each flipping cartFailure to the variant "
                             "that fails on it; all: one after another (default: $LABKIT_DEMO_RELEASE, "
                             f"else {releases.DEFAULT})")
    parser.add_argument("--workbook", action="store_true", help="also time the whole workbook headless")
    parser.add_argument("--short-waits", action="store_true",
                        help="pods stop and start in a tenth of the time, the shop runs 1 s, 2 seats: "
                             "every row runs (the test suite's check), its numbers are not the README's")
    args = parser.parse_args()
    waits = SHORT if args.short_waits else README
    chosen = sorted(releases.RELEASES) if args.release == "all" else [releases.get(args.release).version]
    print_table([row for version in chosen for row in release_rows(version, args, waits)])


if __name__ == "__main__":
    main()
