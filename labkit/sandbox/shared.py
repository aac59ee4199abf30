"""One local Dynatrace tenant shared by several local labs: the seats of a workshop on one tenant.

Each seat is a whole LocalLab (its own Kubernetes API, flagd, shop, state dir and tokens) whose
shop's data reaches the shared tenant through its own collector, stamped with the seat's
`k8s.cluster.name`; its lab.env points labkit at the shared tenant with LABKIT_CLUSTER_NAME set, so
labkit scopes everything to that seat. All seats live in this process (one tenant, N labs), which
is how `python -m labkit.sandbox.shared --seats N` and `labkit room --shared-tenant` run them.
"""
from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from labkit.sandbox import LocalLab, Timings, _write_atomic

SEATS_FILE = "seats.json"  # name -> state dir, for whoever hands out seats (the room)


class SharedTenant:
    """The tenant (Telemetry, Tenant, its loopback server) and the seats that send to it."""

    def __init__(self, state_dir: str | Path, timings: Timings | None = None,
                 split_by_cluster: bool = True, bare_tenant: bool = False):
        from labkit.sandbox import dynatrace
        from labkit.sandbox.dynatrace import seed
        from labkit.sandbox.http import LabServer

        self.state_dir = Path(state_dir)
        self.timings = timings or Timings.from_env()
        # split_by_cluster=False: a tenant older than SaaS 1.317, one `cart` entity for every seat
        self.telemetry = dynatrace.Telemetry(self.timings, cluster=None,
                                             split_by_cluster=split_by_cluster)
        self.tenant = dynatrace.Tenant(self.telemetry, self.timings, {})
        if not bare_tenant:  # set up once, as a workshop's facilitator does before the room arrives
            seed.set_up(self.tenant)
        self.server = LabServer(dynatrace.app(self.tenant))
        self.seats: dict[str, LocalLab] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "SharedTenant":
        self.server.start()
        self.tenant.start()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self

    def add_seat(self, name: str, timings: Timings | None = None) -> LocalLab:
        """A started local lab named `name` (its k8s.cluster.name) in <state_dir>/<name>, sending
        to this tenant; its variables are `.env` and its <state dir>/lab.env."""
        with self._lock:
            if name in self.seats:
                return self.seats[name]
            lab = LocalLab(self.state_dir / name, timings or self.timings, cluster_name=name,
                           tenant=self, bare_tenant=False).start()
            self.seats[name] = lab
            self._write_seats()
            return lab

    def remove_seat(self, name: str) -> None:
        """Stop seat `name`'s lab (culled or done) and revoke its tokens; what it sent stays on the
        tenant, as a real tenant keeps a cluster's data after the cluster is gone."""
        with self._lock:
            lab = self.seats.pop(name, None)
            if lab is None:
                return
            lab.stop()
            for token in (lab.api_token, lab.ingest_token):
                self.tenant.tokens.pop(token, None)
            self.tenant.platform_tokens.discard(lab.platform_token)
            self._write_seats()

    def env(self, name: str) -> dict[str, str]:
        """The variables that point labkit, kubectl and a kernel at seat `name`."""
        return self.seats[name].env

    def _write_seats(self) -> None:
        _write_atomic(self.state_dir / SEATS_FILE, json.dumps(
            {"tenant": self.url, "seats": {n: str(lab.state_dir) for n, lab in self.seats.items()}},
            indent=1))

    def stop(self) -> None:
        with self._lock:
            for lab in self.seats.values():
                lab.stop()
            self.seats.clear()
        self.tenant.stop()
        self.server.stop()
        (self.state_dir / SEATS_FILE).unlink(missing_ok=True)

    def __enter__(self) -> "SharedTenant":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    """Run N seats on one local tenant in the foreground until Ctrl-C."""
    from labkit.sandbox import start_shared_tenant

    parser = argparse.ArgumentParser(prog="python -m labkit.sandbox.shared",
                                     description="Several local labs (seats) on ONE local tenant.")
    parser.add_argument("--seats", type=int, default=2, help="how many seats (seat-1 ... seat-N)")
    parser.add_argument("--state-dir", required=True, help="each seat's state dir is <this>/seat-K")
    args = parser.parse_args(argv)
    names = [f"seat-{k}" for k in range(1, max(args.seats, 0) + 1)]
    shared = start_shared_tenant(args.state_dir, names)
    print(f"Shared local tenant at {shared.url}")
    for name in names:
        print(f"  {name}: source {shared.seats[name].state_dir / 'lab.env'}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        shared.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
