"""The hub's authenticator for a room: each seat (and the facilitator) has its own generated password.

Loaded by JupyterHub as `labkit.room.auth.SeatAuthenticator`; the passwords are read from the room's
secrets.json (0600), never from the config file, so the rendered config holds no secret.
"""
from __future__ import annotations

import hmac
import json

from jupyterhub.auth import Authenticator
from traitlets import Unicode


class SeatAuthenticator(Authenticator):
    """Username seat-K or facilitator, with the password `labkit room` printed for it."""

    secrets_file = Unicode(config=True, help="the room's secrets.json")

    def _passwords(self) -> dict[str, str]:
        with open(self.secrets_file, encoding="utf-8") as f:
            return json.load(f)["passwords"]

    async def authenticate(self, handler, data):
        name, password = (data or {}).get("username", ""), (data or {}).get("password", "")
        expected = self._passwords().get(name)
        if expected is None or not hmac.compare_digest(expected.encode(), str(password).encode()):
            self.log.warning("labkit room: refused a login as %r (unknown seat or wrong password)", name[:40])
            return None
        return name
