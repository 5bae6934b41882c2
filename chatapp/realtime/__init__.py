"""Real-time delivery: sockets, the per-process hub and the backplane between processes."""

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
