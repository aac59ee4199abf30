"""Watches: a resource's events after a resourceVersion, bookmarks while quiet, 410 once compacted."""
from __future__ import annotations

import copy
import time
from typing import Iterator

from labkit.sandbox.kube.discovery import KINDS
from labkit.sandbox.kube.errors import StatusError, bad_request
from labkit.sandbox.kube.selectors import Selector

BOOKMARK_SECONDS = 60.0


class Watches:
    """The Store's watch verb (it provides _cond, _events, _rv, _stopped and _sorted)."""

    def watch(self, resource: str, label_selector: str | None, field_selector: str | None,
              resource_version: str | None, timeout: float, bookmarks: bool) -> Iterator[tuple[str, dict]]:
        """(type, object) events after resource_version until timeout, a hangup or stop().

        A bad selector or resourceVersion raises here, before the stream starts (a 400, not a stream)."""
        selector = Selector(label_selector, field_selector, resource)
        if resource_version and not resource_version.isdigit():
            raise bad_request(f'invalid resource version "{resource_version}"')
        return self._stream(resource, selector, resource_version, time.monotonic() + timeout, bookmarks)

    def _stream(self, resource: str, selector: Selector, resource_version: str | None, deadline: float,
                bookmarks: bool) -> Iterator[tuple[str, dict]]:
        with self._cond:
            since, pending = self._replay(resource, selector, resource_version)
        last_bookmark = time.monotonic()
        yield from pending
        while since is not None:
            with self._cond:
                events = self._wait_for_events(since, deadline, last_bookmark if bookmarks else None)
                if events is None:
                    return
                if events and events[0][0] > since + 1:  # the history moved on past this watcher
                    yield "ERROR", StatusError(410, "Expired", f"too old resource version: {since} "
                                                               f"({events[0][0] - 1})").body()
                    return
                if events:
                    since = events[-1][0]
                    pending = [(kind, obj) for _, res, kind, obj in events if res == resource and selector(obj)]
                else:  # nothing happened for a while: tell the client how far it is
                    last_bookmark, since = time.monotonic(), self._rv
                    _, api_version, kind = KINDS[resource]
                    pending = [("BOOKMARK", {"kind": kind, "apiVersion": api_version,
                                             "metadata": {"resourceVersion": str(self._rv)}})]
            yield from pending

    def _replay(self, resource: str, selector: Selector, resource_version: str | None):
        """Where a watch starts: (rv, events to send first); rv None when its history is gone."""
        if resource_version in (None, "", "0"):  # no RV: the current objects as synthetic ADDED
            return self._rv, [("ADDED", copy.deepcopy(o)) for o in self._sorted(resource) if selector(o)]
        since = int(resource_version)
        oldest = self._events[0][0] - 1 if self._events else self._rv
        if since < oldest:  # compacted away: the client must relist
            return None, [("ERROR", StatusError(410, "Expired",
                                                f"too old resource version: {since} ({oldest})").body())]
        return since, []

    def _wait_for_events(self, since: int, deadline: float, last_bookmark: float | None) -> list | None:
        """Events after `since`; [] when a bookmark is due; None at the deadline or stop()."""
        while True:
            if self._stopped or time.monotonic() >= deadline:
                return None
            events = [e for e in self._events if e[0] > since]
            if events or (last_bookmark is not None and time.monotonic() - last_bookmark >= BOOKMARK_SECONDS):
                return events
            self._cond.wait(min(deadline - time.monotonic(), BOOKMARK_SECONDS))
