"""Real-time delivery: sockets, the per-process hub and the backplane between processes.

Who does what: events.py builds events and publishes them; backplane.py (or
redis_backplane.py) carries them to every process; hub.py delivers them to the sockets
of its process (client.py writes the bytes). The hub is given everything it calls back
at construction, here: the read tracker, the sidebar renderer and the unread recount.
The socket route (ws.py) is a blueprint the app factory registers.
"""

import time

from ..extensions import db
from ..models import Membership, recount_mentions
from . import events
from .backplane import create_backplane
from .reading import InlineReader
from .current import EXTENSION, Realtime, get
from .hub import Hub
from .presence import Presence, last_seen
from .reads import ReadTracker
from .sidebars import render_push, render_room, render_sidebars

__all__ = ["Realtime", "close_for_restart", "get", "init_app"]


def _recount_unread(user_ids, conversation_id: int) -> dict[int, int]:
    """Unread counts of one conversation for these users, holding no transaction after."""
    counts = Membership.recount_unread(user_ids, conversation_id)
    db.session.rollback()  # the hub holds no transaction open
    return counts


def _recount_mentions(user_ids, conversation_id: int) -> dict[int, int]:
    """Unread mentions of one conversation for these users (after a deletion)."""
    counts = recount_mentions(user_ids, conversation_id)
    db.session.rollback()
    return counts


def init_app(app) -> Realtime:
    """Create this process's hub, backplane and read tracker."""
    # Each socket's handler reads it (Client.batches()): no reader thread per socket.
    app.config.setdefault("SOCK_SERVER_OPTIONS", {})["thread_class"] = InlineReader
    reads = ReadTracker(app, on_saved=events.reads_saved)
    hub = Hub(on_read=reads.mark, render_sidebars=render_sidebars, recount_unread=_recount_unread,
              render_room=render_room, recount_mentions=_recount_mentions,
              render_push=render_push)
    backplane = create_backplane(app, hub)
    realtime = Realtime(hub=hub, backplane=backplane, reads=reads,
                        presence=Presence(app, hub, backplane))
    app.extensions[EXTENSION] = realtime
    app.jinja_env.globals["is_online"] = lambda user_id: get().presence.is_online(user_id)
    app.jinja_env.globals["last_seen"] = last_seen
    return realtime


def close_for_restart(app, wait: float = 2.0) -> int:
    """Worker shutting down: close every socket with 1012 so each page reconnects elsewhere.

    Without this a graceful stop waits out gunicorn's graceful_timeout while sockets
    stay open, then cuts them. 1012 ("service restart") makes htmx reconnect at once,
    to a live worker, where the connect snapshot catches the page up. Waits up to
    `wait` seconds for the close frames to leave. Returns how many sockets it closed.
    """
    realtime = getattr(app, "extensions", {}).get(EXTENSION)
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
