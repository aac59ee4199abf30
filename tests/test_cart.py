"""What the demo's cart reads, asked as it asks (its release's typed call on flagd:8013 through the API
server's service proxy), against the local lab's Kubernetes API and tenant on loopback.

Each test gets its own cluster: the demo release is set the way a cluster shows it, by the cart
Deployment's image (patched with the kubernetes client, as `kubectl set image` does), and the flag file
is the lab page's flags.yaml or the release's own ConfigMap.
"""
from __future__ import annotations

import json
import tempfile

import pytest

from labkit import releases
from labkit.errors import BadInput
from labkit.settings import Settings

LAB_PAGE = None  # the lab page's flags.yaml (KubeSandbox's default)
DEMO_300 = releases.get("3.0.0").configmap_yaml()


def expect(rate: str) -> str:
    """The cart's expectation in the verdict's words: its number, unit and window."""
    return (f": the verdict should show about {rate} of EmptyCart calls failed since the change (fewer of all "
            "cart requests, as only empties fail)")


@pytest.fixture
def demo(kube_sandbox):
    """A cluster running demo `version`'s cart with `flags` (None: the lab page's flags.yaml)."""
    def make(version: str, flags: str | None = LAB_PAGE):
        sandbox = kube_sandbox(**({"flags_yaml": flags} if flags else {}))
        sandbox.set_cart_image(version)
        assert sandbox.wait_serving()
        return sandbox
    return make


@pytest.fixture
def lab_of(tenant_sandbox):
    """A labkit Lab on a cluster and a local tenant (check() and served() need both)."""
    from labkit.lab import Lab

    made = []

    def make(sandbox):
        tenant = tenant_sandbox()
        made.append(Lab(Settings.load(environ={
            "DT_URL": tenant.tenant_server.url, "DT_API_TOKEN": tenant.api_token,
            "DT_PLATFORM_TOKEN": tenant.platform_token, "KUBECONFIG": str(sandbox.kubeconfig),
            "LABKIT_LOCAL_LAB": "1", "LABKIT_STATE_DIR": tempfile.mkdtemp()}, dotenv=None)))
        made[-1].prepare_tenant(annotate=True)  # this cluster's cart links that tenant's runbook
        return made[-1]

    yield make
    for lab in made:
        lab.close()


def turn(cluster, variant: str, flag: str = "cartFailure") -> None:
    """The lab's change without the event: ConfigMap, rollout restart, every pod serves it."""
    cluster.set_default_variant(flag, variant)
    cluster.restart_flagd(timeout=20, how="rollout")
    cluster.wait_served(flag, variant, timeout=10)


# ---- cart_reads on both releases ------------------------------------------------------------------
def test_the_300_cart_reads_10_percent_as_a_float(demo):
    sandbox = demo("3.0.0", DEMO_300)
    cluster = sandbox.labkit()
    assert cluster.cart_reads().summary == "the cart reads cartFailure = 0 (off), so no EmptyCart call fails" + expect("0.0 %")
    turn(cluster, "10%")
    read = cluster.cart_reads()
    assert (read.release.version, read.kind, read.value, read.variant, read.reason, read.error_code) == (
        "3.0.0", "float", 0.1, "10%", "STATIC", None)
    assert read.failure_rate == 0.1 and not read.falls_back
    assert read.summary == "the cart reads cartFailure = 0.1 (10%), so about 1 in 10 EmptyCart calls fail" + expect("10.0 %")
    assert "ghcr.io/open-telemetry/demo:3.0.0-cart" in read.release_from


def test_the_lab_pages_on_on_300_is_a_type_mismatch_though_ofrep_says_on(demo):
    cluster = demo("3.0.0").labkit()
    turn(cluster, "on")
    assert cluster.served_value("cartFailure").variant == "on"  # OFREP checks no types
    read = cluster.cart_reads()
    assert (read.error_code, read.value, read.variant, read.falls_back) == ("TYPE_MISMATCH", 0, None, True)
    assert read.summary.startswith("TYPE_MISMATCH: the cart reads 0 and will never fail: demo 3.0.0's cart "
                                   "reads cartFailure as a float")
    assert "boolean (on=true, off=false)" in read.summary and "labkit fix cartFailure" in read.summary
    assert "'10%' (the lab page's `on`)" in read.summary


def test_the_220_cart_reads_on_as_a_boolean(demo):
    cluster = demo("2.2.0").labkit()
    turn(cluster, "on")
    read = cluster.cart_reads()
    assert (read.release.version, read.value, read.variant, read.error_code) == ("2.2.0", True, "on", None)
    assert read.summary == "the cart reads cartFailure = true (on), so every EmptyCart call fails" + expect("100.0 %")


def test_with_a_cart_image_labkit_does_not_know_the_release_comes_from_the_variant_types(demo):
    sandbox = demo("3.0.0", DEMO_300)
    from kubernetes import client

    client.AppsV1Api(sandbox.api()).patch_namespaced_deployment("cart", "default", {"spec": {"template": {
        "spec": {"containers": [{"name": "cart", "image": "registry.example/my-cart:dev"}]}}}})
    release, known = sandbox.labkit().demo_release("cartFailure", releases.get("3.0.0").flag()["variants"])
    assert release.version == "3.0.0"
    assert known == "cartFailure's float variants; no cart image labkit knows (registry.example/my-cart:dev)"
    assert sandbox.labkit().cart_reads().value == 0


def test_a_missing_flag_and_no_flagd_pod_read_the_default(demo):
    sandbox = demo("3.0.0", DEMO_300)
    cluster = sandbox.labkit()
    sandbox.scale(0)
    sandbox.wait_ready(0)  # the controllers delete the pod after the scale returns, as a real cluster's do
    read = cluster.cart_reads()
    assert read.error_code == "PROVIDER_NOT_READY" and read.value == 0
    assert "no flagd pod is Ready" in read.summary
    sandbox.scale(1)
    sandbox.wait_ready(1)
    cm = sandbox.configmap()  # the flag gone from the file, as a hand edit could leave it
    flags = json.loads(cm.data["demo.flagd.json"])
    del flags["flags"]["cartFailure"]
    from kubernetes import client

    client.CoreV1Api(sandbox.api()).patch_namespaced_config_map(
        "flagd-config", "default", {"data": {"demo.flagd.json": json.dumps(flags)}})
    cluster.restart_flagd(timeout=20, how="rollout")
    read = cluster.cart_reads()
    assert read.error_code == "FLAG_NOT_FOUND" and read.falls_back
    assert read.summary.startswith("FLAG_NOT_FOUND: the cart reads 0 and will never fail: flagd has no flag "
                                   "cartFailure")


# ---- the fix and its undo -------------------------------------------------------------------------
def test_the_fix_gives_the_release_variants_keeps_the_rest_and_is_undone(demo):
    sandbox = demo("3.0.0")
    cluster = sandbox.labkit()
    turn(cluster, "on")
    before = json.loads(sandbox.flags_json())

    fix = cluster.fix_flag_types()
    after = json.loads(sandbox.flags_json())
    assert fix.changed and after["flags"]["cartFailure"]["variants"] == releases.get("3.0.0").flag()["variants"]
    assert after["flags"]["cartFailure"]["defaultVariant"] == "10%"  # the lab page's `on` on 3.0.0
    assert after["flags"]["cartFailure"]["description"] == before["flags"]["cartFailure"]["description"]
    assert {k: v for k, v in after["flags"].items() if k != "cartFailure"} == \
        {k: v for k, v in before["flags"].items() if k != "cartFailure"}
    assert "restart flagd" in fix.summary and "--undo" in fix.summary
    assert cluster.cart_reads().error_code == "TYPE_MISMATCH"  # flagd still has the old file
    assert "restart flagd" in cluster.cart_reads().fix
    cluster.restart_flagd(timeout=20, how="rollout")
    assert cluster.cart_reads().value == 0.1
    assert not cluster.fix_flag_types().changed  # nothing left to fix

    undone = fix.undo()
    assert json.loads(sandbox.flags_json()) == before
    assert "labkit/before-fix-cartFailure" not in (sandbox.configmap().metadata.annotations or {})
    assert undone.summary.startswith("cartFailure is back as it was before the fix: on=true, off=false "
                                     "(default on)")
    with pytest.raises(BadInput, match="no fix of cartFailure to undo"):
        cluster.undo_flag_fix()


def test_undo_keeps_a_later_change_of_the_default_and_refuses_after_other_variants(demo):
    sandbox = demo("3.0.0")
    cluster = sandbox.labkit()
    cluster.fix_flag_types()  # off -> off
    cluster.set_default_variant("cartFailure", "50%")
    cluster.undo_flag_fix()
    assert json.loads(sandbox.flags_json())["flags"]["cartFailure"]["defaultVariant"] == "on"  # still on

    cluster.fix_flag_types()
    from kubernetes import client

    cm = sandbox.configmap()  # someone applies the lab page's flags.yaml again after the fix
    text = cm.data["demo.flagd.json"]
    flags = json.loads(text)
    flags["flags"]["cartFailure"]["variants"] = {"on": True, "off": False}
    client.CoreV1Api(sandbox.api()).patch_namespaced_config_map(
        "flagd-config", "default", {"data": {"demo.flagd.json": json.dumps(flags)}})
    with pytest.raises(BadInput, match="variants changed since labkit's fix"):
        cluster.undo_flag_fix()


# ---- the preflight, served(), the layers ----------------------------------------------------------
def test_check_fails_on_the_mismatch_naming_the_fix_and_passes_after_it(demo, lab_of):
    sandbox = demo("3.0.0")
    lab = lab_of(sandbox)
    turn(lab.cluster, "on")
    checks = {c.item: c for c in lab.check()}
    assert checks["demo release"].ok and checks["demo release"].detail.startswith("3.0.0 (the cart's image")
    types = checks["cartFailure types"]
    assert not types.ok and "cartFailure as a float" in types.detail and "lab.fix_flag_types()" in types.detail
    assert not checks["the cart"].ok and checks["the cart"].detail.startswith("TYPE_MISMATCH")
    assert not lab.check().ok

    fix = lab.fix_flag_types()
    lab.restart_flagd()
    checks = {c.item: c for c in lab.check()}
    assert checks["cartFailure types"].ok and "the lab page's `on` is `10%`" in checks["cartFailure types"].detail
    assert checks["the cart"].detail == "the cart reads cartFailure = 0.1 (10%), so about 1 in 10 EmptyCart calls fail" + expect("10.0 %")
    # the lab page's file also lacks loadGeneratorTraffic: 3.0.0's load generator then sends nothing
    assert [c.item for c in lab.check() if not c.ok] == ["load generator"]
    assert "lab.fix_flag_types('loadGeneratorTraffic')" in checks["load generator"].detail
    lab.fix_flag_types("loadGeneratorTraffic")
    lab.restart_flagd()
    assert lab.check().ok, lab.check()
    fix.undo()
    lab.restart_flagd()
    assert not lab.check().ok


def test_reset_puts_every_flag_back_to_the_releases_own_defaults(demo, lab_of):
    """Not every flag's rest is `off`: 3.0.0's load generator sends nothing while loadGeneratorTraffic is."""
    lab = lab_of(demo("3.0.0", DEMO_300))
    turn(lab.cluster, "10%")
    turn(lab.cluster, "off", "loadGeneratorTraffic")
    check = {c.item: c for c in lab.check()}["load generator"]
    assert not check.ok and check.detail.endswith("pauses all traffic. Fix: python -m labkit set loadGeneratorTraffic on")
    done = lab.reset()
    assert done.flags == {"cartFailure": "off", "loadGeneratorTraffic": "on"}
    assert repr(done).startswith("Lab reset: set cartFailure = off, loadGeneratorTraffic = on back to demo "
                                 "3.0.0's defaults; flagd restarted (rollout, ")
    assert lab.cluster.served_value("loadGeneratorTraffic").variant == "on"
    assert {c.item: c for c in lab.check()}["load generator"].ok
    again = lab.reset()
    assert again.flags == {}  # nothing left to put back, and flagd restarted all the same (its card says so)
    assert "already at demo 3.0.0's defaults; flagd restarted (rollout, " in repr(again)
    assert [s.kind for s in lab.timeline.steps] == ["lab reset"] and lab.timeline.run_id == again.run_id
    assert lab.verdict().text.startswith("the lab was reset at ")  # not "apply one"


def test_served_and_change_flag_say_what_the_cart_reads(demo, lab_of):
    lab = lab_of(demo("3.0.0", DEMO_300))
    assert lab.on_variant() == "10%"
    served = lab.change_flag(lab.on_variant(), send_event=False)
    assert served.variant == "10%" and served.cart.value == 0.1
    assert repr(lab.served()) == ("flagd serves cartFailure = 10% (0.1), reason STATIC\n"
                                  "the cart reads cartFailure = 0.1 (10%), so about 1 in 10 EmptyCart calls fail" + expect("10.0 %"))
    assert "labkit-card-cart-read" in lab.served()._repr_html_()
    layers = repr(lab.layers()).splitlines()
    assert layers[0].split()[:5] == ["ConfigMap", "flagd-config", "defaults", "to", "10%"]
    assert any(" (OFREP)  serves 10% (0.1)" in line for line in layers)
    assert any(line.startswith("the cart (demo 3.0.0)") and "= 0.1 (10%)" in line for line in layers)


def test_the_switch_shows_what_the_cart_reads_and_a_fallback_in_red(demo, lab_of):
    from labkit import widgets

    lab = lab_of(demo("3.0.0"))  # the lab page's flags.yaml: even `off` (false) is no float
    switch = widgets.FlagSwitch(lab, "cartFailure", send_event=False)
    assert switch.served_text == "flagd serves: off"
    assert switch.cart_text.startswith("TYPE_MISMATCH: the cart reads 0 and will never fail")
    assert "labkit-cart" in switch.cart_label._dom_classes and "color:#b00020" in switch.cart_label.value
    assert switch.apply("on") is not None, switch.status.value
    assert switch.served_text == "flagd serves: on"
    assert "✘" in switch.status.value and "but TYPE_MISMATCH: the cart reads 0" in switch.status.value

    lab.fix_flag_types()
    assert switch.apply("10%") is not None, switch.status.value
    assert switch.cart_text == "the cart reads cartFailure = 0.1 (10%), so about 1 in 10 EmptyCart calls fail" + expect("10.0 %")
    assert "✔" in switch.status.value and "the cart reads cartFailure = 0.1" in switch.status.value


def test_the_carts_own_span_events_say_which_variant_it_evaluated(local_lab):
    """On the local lab (its cart asks flagd and writes the demo hook's span events to the tenant)."""
    from labkit.lab import Lab

    lab = Lab(Settings.load(environ=dict(local_lab.env), dotenv=None))
    try:
        try:
            lab.dynatrace.cart_evaluations("now-1m")
        except BadInput as exc:  # a local tenant without `fetch spans` (branch i17-cart adds it)
            pytest.skip(f"the local tenant has no spans yet: {exc}")
        on = lab.on_variant()
        lab.change_flag(on, send_event=False)
        since = lab.timeline.last("flag applied").time
        lab.generate_traffic(seconds=3, rate=20, until_failures=2)
        frame = lab.dynatrace.cart_evaluations(since)
        assert list(frame.columns) == ["variant", "value", "reason", "error", "calls", "first_seen", "last_seen"]
        mine = frame[frame["variant"] == on]
        assert len(mine) == 1 and mine["calls"].iloc[0] > 0 and mine["reason"].iloc[0] == "static", frame
        spans = [line for line in repr(lab.layers()).splitlines() if line.startswith("the cart's own spans")]
        assert spans and f"evaluated {on} (" in spans[0], spans
    finally:
        if lab.served().variant != "off":
            lab.change_flag("off", send_event=False)
        lab.close()


# ---- the CLI --------------------------------------------------------------------------------------
def labkit_cli(sandbox, *args, tenant=None):
    """python -m labkit as a user runs it, against `sandbox` (and `tenant` when given)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "KUBECONFIG", "LABKIT_", "LAB_"))}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), KUBECONFIG=str(sandbox.kubeconfig))
    if tenant is not None:
        env.update(DT_URL=tenant.tenant_server.url, DT_API_TOKEN=tenant.api_token)
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=sandbox.tmp, env=env, capture_output=True,
                          text=True, timeout=90)


def test_labkit_set_exits_non_zero_when_the_cart_reads_its_fallback_and_fix_makes_it_read(demo, tenant_sandbox):
    sandbox = demo("3.0.0")
    proc = labkit_cli(sandbox, "set", "cartFailure", "on", "--no-event")
    assert proc.returncode == 1, proc.stderr
    assert "serves cartFailure = on (true)" in proc.stdout  # every pod serves it ...
    cart = proc.stdout.splitlines()[-1]  # ... and the cart cannot read it
    assert cart.startswith("the cart (demo 3.0.0, flagd.evaluation.v2.Service/ResolveFloat on flagd:8013): "
                           "TYPE_MISMATCH: the cart reads 0 and will never fail")

    proc = labkit_cli(sandbox, "check", tenant=tenant_sandbox())
    assert proc.returncode == 1
    assert "NO  cartFailure types: demo 3.0.0's cart reads cartFailure as a float" in proc.stdout
    # the lab page's file has no loadGeneratorTraffic: 3.0.0's load generator reads it as 0 and pauses
    assert ("NO  load generator: flagd has no loadGeneratorTraffic, so demo 3.0.0's load generator sends no "
            "traffic") in proc.stdout
    proc = labkit_cli(sandbox, "fix", "loadGeneratorTraffic", "--restart")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("loadGeneratorTraffic now has demo 3.0.0's variants: off=0, on=1 (default on) (was missing)")
    proc = labkit_cli(sandbox, "check", tenant=tenant_sandbox())
    assert ("ok  load generator: flagd serves loadGeneratorTraffic = on: demo 3.0.0's load generator sends "
            "traffic") in proc.stdout, proc.stdout

    proc = labkit_cli(sandbox, "fix", "cartFailure", "--restart")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cartFailure now has demo 3.0.0's variants: 10%=0.1, 100%=1")
    assert proc.stdout.rstrip().endswith("the cart reads cartFailure = 0.1 (10%), so about 1 in 10 EmptyCart "
                                         "calls fail" + expect("10.0 %"))
    flags = labkit_cli(sandbox, "flags")
    assert flags.returncode == 0 and "the cart (demo 3.0.0, flagd.evaluation.v2.Service/ResolveFloat on " \
        "flagd:8013): the cart reads cartFailure = 0.1 (10%)" in flags.stdout

    proc = labkit_cli(sandbox, "set", "cartFailure", "off", "--no-event")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("the cart reads cartFailure = 0 (off), so no EmptyCart call fails" + expect("0.0 %"))

    proc = labkit_cli(sandbox, "fix", "--undo")
    assert proc.returncode == 0 and proc.stdout.startswith("cartFailure is back as it was before the fix")
    assert json.loads(sandbox.flags_json())["flags"]["cartFailure"]["variants"] == {"on": True, "off": False}


def test_labkit_set_on_names_the_releases_on_where_there_is_no_on(demo):
    proc = labkit_cli(demo("3.0.0", DEMO_300), "set", "cartFailure", "on", "--no-event")
    assert proc.returncode == 2
    assert "On demo 3.0.0 the lab page's `on` is '10%': python -m labkit set cartFailure 10%" in proc.stderr
