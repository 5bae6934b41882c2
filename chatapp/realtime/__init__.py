"""Real-time delivery: sockets, the per-process hub and the backplane between processes."""

import time
from dataclasses import dataclass

from flask import current_app

from .backplane import create_backplane
from .hub import Hub
from .reads import ReadTracker


@dataclass
class Realtime:
    """The real-time machinery of one process."""

    hub: Hub
    backplane: object
    reads: ReadTracker


def init_app(app) -> Realtime:
    """Create this process's hub, backplane and read tracker; add the socket route."""
    from .client import InlineReader

    # Each socket's handler reads it (Client.batches()): no reader thread per socket.
    app.config.setdefault("SOCK_SERVER_OPTIONS", {})["thread_class"] = InlineReader
    hub = Hub()
    realtime = Realtime(hub=hub, backplane=create_backplane(app, hub), reads=ReadTracker(app))
    hub.on_read = realtime.reads.mark

    def refresh(user_id: int) -> None:
        from . import events

        events.refresh_sidebar(user_id)

    hub.on_private_activity = refresh

    def recount(user_ids, conversation_id):
        from . import events

        return events.recount_unread(user_ids, conversation_id)

    hub.recount_unread = recount
    app.extensions["chatapp.realtime"] = realtime

    from . import ws

    app.register_blueprint(ws.bp)
    return realtime


def get() -> Realtime:
    """The real-time machinery of the current app."""
    return current_app.extensions["chatapp.realtime"]


def close_for_restart(app, wait: float = 2.0) -> int:
    """Worker shutting down: close every socket with 1012 so each page reconnects elsewhere.

    Without this a graceful stop waits out gunicorn's graceful_timeout while sockets
    stay open, then cuts them. 1012 ("service restart") makes htmx reconnect at once,
    to a live worker, where the connect snapshot catches the page up. Waits up to
    `wait` seconds for the close frames to leave. Returns how many sockets it closed.
    """
    realtime = getattr(app, "extensions", {}).get("chatapp.realtime")
    if realtime is None:
        return 0
    realtime.backplane.stop()
    clients = realtime.hub.clients()
    realtime.hub.close_all(1012, "Server restarting; reconnect")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(c.ws.connected for c in clients):
        time.sleep(0.05)
    realtime.reads.flush()  # keep read pointers seen so far
    return len(clients)
