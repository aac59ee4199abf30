"""The lab and the local lab: `labkit sandbox` (run the local lab), `labkit check` (the preflight)
and `labkit lab` (the workbook in JupyterLab, starting the local lab when nothing is configured)."""
from __future__ import annotations

import argparse
import os

from labkit.cli.common import choose_release, command, err, out, release_arg, settings


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=None,
                   help="where lab.env and kubeconfig are written (default $LABKIT_STATE_DIR or "
                        "~/.cache/labkit/local-lab, where labkit and the notebooks look for it)")
    p.add_argument("--bare-tenant", action="store_true", help="start the local tenant without the runbook, "
                   "pipeline and route getting-started has attendees make (rehearse it: labkit check, then "
                   "labkit tenant setup); also $LABKIT_BARE_TENANT=1")
    release_arg(p)


@command("sandbox", "run the local lab (Kubernetes API, flagd, shop, Dynatrace API) until Ctrl-C",
         _sandbox_args)
def cmd_sandbox(args) -> int:
    import signal
    import threading
    from pathlib import Path

    from labkit.which import default_state_dir, new_local_lab

    state_dir = Path(args.state_dir or default_state_dir()).resolve()
    stop = threading.Event()
    previous = {}

    def on_signal(signum, frame):
        stop.set()

    choose_release(args)
    if args.bare_tenant:
        os.environ["LABKIT_BARE_TENANT"] = "1"  # read by LocalLab, as LABKIT_DEMO_RELEASE is
    lab = new_local_lab(state_dir)  # a lab already running there: StateDirBusy says so, nothing touched
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        lab.start()
        if not stop.is_set():
            _say_ready(lab, state_dir)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            lab.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    err("local lab stopped")
    return 0


def _say_ready(lab, state_dir) -> None:
    """Where each of the local lab's parts listens, and what to try first."""
    out(f"local lab ready: source {state_dir / 'lab.env'}")
    if lab.archive_note:
        out(f"  {lab.archive_note}")
    if lab.restored_flags:
        out(f"  flags restored from {state_dir / 'flagd-config.json'} (delete it to start from "
            f"demo {lab.release.version}'s own flags)")
    out(f"  Kubernetes API  {lab.kube_server.url}   KUBECONFIG={lab.kubeconfig_path}")
    out("                  ConfigMap flagd-config, Deployment flagd, Services flagd (OFREP 8016), "
        "frontend-proxy")
    out(f"  demo shop       {lab.frontend_server.url}   (FRONTEND_URL)")
    out(f"  Dynatrace API   {lab.tenant_server.url}   (DT_URL; the local lab, not a real tenant)")
    out(f"  demo release    {lab.release.version}   (its cart reads {lab.release.cart_call})")
    out("  tenant setup    " + ("none: no runbook, pipeline or route (rehearse getting-started: "
                              "labkit check, labkit tenant setup)" if lab.bare_tenant else
                              "as getting-started leaves it: runbook, Log Errors pipeline, "
                              "Critical Logs route"))
    out("Try: kubectl get pods; python -m labkit flags; "
        f"python -m labkit set cartFailure {lab.release.lab_on_variant}")
    out("Ctrl-C stops the local lab.")


@command("check", "preflight: token scopes, the service, the tenant's pipeline, route and runbook, flagd, the flag",
         lambda p: p.add_argument("--flag", default="cartFailure"))
def cmd_check(args) -> int:
    from labkit.lab import Lab

    lab = Lab(settings(args))
    try:
        result = lab.check(flag=args.flag)
    finally:
        lab.close()
    out(str(result))
    return 0 if result.ok else 1


def _lab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=None, help="JupyterLab's port (default 8888, else a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL; open no browser")


@command("lab", "open the workbook in JupyterLab (starting the local lab when nothing is configured)",
         lambda p: (_lab_args(p), release_arg(p)))
def cmd_lab(args) -> int:
    from labkit.workbook import open_jupyterlab

    choose_release(args)
    return open_jupyterlab(port=args.port, open_browser=not args.no_browser)
