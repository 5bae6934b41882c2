"""How events travel between processes: directly in one process, or through Redis."""

from __future__ import annotations

import logging

from flask import has_app_context

log = logging.getLogger(__name__)


class LocalBackplane:
    """One process: an event published here is delivered to this process's hub at once."""

    remote = False  # no other process needs to hear about per-user bookkeeping

    def __init__(self, app, hub):
        self.app = app
        self.hub = hub

    def publish(self, event: dict) -> None:
        """Deliver an event (after its transaction committed) to the local sockets."""
        if has_app_context():
            # Deliver in the publisher's own context and database session: a second
            # session here would want a second pooled connection while the publisher's
            # first is still checked out, and enough concurrent publishers would then
            # wait on each other for the pool until it times out.
            self.hub.deliver(event)
            return
        with self.app.app_context():
            self.hub.deliver(event)

    def start(self) -> None:
        """Nothing to start in one process."""

    def stop(self) -> None:
        """Nothing to stop in one process."""


def create_backplane(app, hub):
    """The Redis backplane when REDIS_URL is set, else the in-process one."""
    if app.config.get("REDIS_URL"):
        # Imported only when configured: one process without Redis never loads its client.
        from .redis_backplane import RedisBackplane

        return RedisBackplane(app, hub, app.config["REDIS_URL"])
    return LocalBackplane(app, hub)
