"""A room started on this machine (its folder, shared tenant if asked, and hub) and stopped again:
what `labkit room` and `labkit room rehearse` both do, kept here so that room/ imports in one
direction (cli -> rehearse -> start -> hub/seats/tenant/prestart)."""
from __future__ import annotations

from pathlib import Path

from labkit.room.hub import Hub, HubConfig, passed_env, proxy_command
from labkit.room.prestart import start_servers
from labkit.room.seats import FACILITATOR, Room
from labkit.room.tenant import SharedTenant


def start_room(args):
    """The room of `args` (cli's options) prepared and its hub running: (room, config, hub, tenant)."""
    room = Room(Path(args.dir), args.seats, shared=args.shared_tenant)
    room.prepare()
    env = passed_env()
    tenant = SharedTenant(room).start() if args.shared_tenant else None
    if tenant is not None:
        env.update(tenant.seat_env())
    config = HubConfig(room, port=args.port, proxy=proxy_command(room.folder), cull_timeout=args.cull_after,
                       silent_after=args.silent_after, passed_env=env)
    hub = None
    try:
        hub = Hub(config).start()
        if getattr(args, "start_servers", False):
            took = start_servers(config.url, room.secrets()["passwords"][FACILITATOR], room.names)
            print(f"started {room.seats} seats' servers in {took:.1f} s (before anyone logs in)", flush=True)
    except BaseException:  # a failure or Ctrl-C while the hub or the servers start: nothing left running
        if hub is not None:
            hub.stop()
        if tenant is not None:
            tenant.stop()
        raise
    return room, config, hub, tenant


def stop_room(hub, tenant) -> list[int]:
    """Stop the hub (and every seat's server), then the shared tenant; the leftover pids killed."""
    left = hub.stop()
    if tenant is not None:
        tenant.stop()
    return left
