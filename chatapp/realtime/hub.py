"""The per-process hub: which sockets are open where, and how an event reaches them."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from flask import render_template

from .. import metrics, notify
from ..i18n import rendering_as
from .client import DEFAULT_AUDIENCE, Client
from .frames import POLICY_VIOLATION, Frame
from .presence import PresenceEvents
from .room_events import RoomEvents

log = logging.getLogger(__name__)
# How long a logged-out session is remembered, to close a socket whose handshake passed
# its check just before the logout and attaches just after the event (seconds).
ENDED_SESSION_MEMORY = 60.0


@dataclass
class UserState:
    """What this process knows about a connected user: unread counts per conversation."""

    unread: dict[int, int]
    # Messages with ids up to this were already counted when `unread` was loaded.
    watermark: int
    clients: set[Client] = field(default_factory=set)
    # The room and the private chat at the head of their groups in this user's sidebar as
    # last rendered here: a message there changes no order, so the sidebar needs no
    # re-rendering for it.
    heads: set[int] = field(default_factory=set)
    # "Notify me" levels that are not the default, per conversation (notify.py).
    levels: dict[int, str] = field(default_factory=dict)
    # Unread messages that mention the user, per conversation (a subset of `unread`).
    mentions: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.unread.values())

    @property
    def total_mentions(self) -> int:
        return sum(self.mentions.values())


class Hub(RoomEvents, PresenceEvents):
    """Routes events to the sockets of this process.

    Every event arrives through deliver(), whether it was published here or by another
    worker through Redis. Per-recipient work is in memory: the message partial comes
    pre-rendered in the event, and unread counts live in UserState, so fan-out to a
    thousand sockets costs no database statement.
    """

    def __init__(self, *, on_read, render_sidebars, recount_unread, render_room=None,
                 recount_mentions=None, render_push=None):
        """on_read(user_ids, conversation_id, message_id): these users saw a message
        (the read tracker saves it later). render_sidebars(user_id, clients, unread):
        push a fresh sidebar to these sockets of a user; returns the private chats as
        rendered, or None. recount_unread(user_ids, conversation_id): unread counts of
        one conversation for these users, from the database (after a deletion).
        render_room(conversation_id): the room header's push (name, member list).
        render_push(event, audience, rendered): a message event's push rendered again for
        another audience (language and time zone) than the one it was rendered for, given
        the renderings made so far (audience -> Frame)."""
        self._lock = threading.RLock()
        self.by_conversation: dict[int, set[Client]] = defaultdict(set)
        self.users: dict[int, UserState] = {}
        self.on_read = on_read
        self.render_sidebars = render_sidebars
        self.recount_unread = recount_unread
        self.render_room = render_room
        self.recount_mentions = recount_mentions
        self.render_push = render_push
        # Per conversation, how many of its sockets here have each audience key: the
        # groups a push is rendered for (once each), whatever the number of sockets.
        self.audiences: dict[int, dict[str, int]] = defaultdict(dict)
        # Sockets per user, from the handshake's check to the socket's end (see claim_slot).
        self.slots: dict[int, int] = {}
        # Sessions logged out lately (key -> when), for handshakes already past their check.
        self.ended_sessions: dict[str, float] = {}
        self._init_presence()  # who is online (every worker's), who is typing where

    # -- who is connected --------------------------------------------------------------

    def attach(self, client: Client, load_state) -> UserState:
        """Register a socket; load_state() gives (unread, watermark, levels, mentions) for
        a new user (levels and mentions may be left out: none)."""
        with self._lock:
            state = self.users.get(client.user_id)
        if state is None:
            unread, watermark, *rest = load_state()  # queries: done outside the lock
            levels = rest[0] if rest else {}
            mentions = dict(rest[1]) if len(rest) > 1 else {}
            with self._lock:
                state = self.users.setdefault(
                    client.user_id, UserState(unread, watermark, levels=levels, mentions=mentions))
        with self._lock:
            state.clients.add(client)
            self.by_conversation[client.conversation_id].add(client)
            groups = self.audiences[client.conversation_id]
            groups[client.audience] = groups.get(client.audience, 0) + 1
            ended = getattr(client, "session_key", None) in self.ended_sessions
        if ended:  # logged out while this socket's handshake was on its way
            client.close(POLICY_VIOLATION, "Logged out")
        return state

    def detach(self, client: Client) -> None:
        """Forget a socket that has closed."""
        with self._lock:
            viewers = self.by_conversation.get(client.conversation_id)
            if viewers is not None and client in viewers:
                viewers.discard(client)
                if not viewers:
                    del self.by_conversation[client.conversation_id]
                groups = self.audiences.get(client.conversation_id)
                if groups is not None:
                    left = groups.get(client.audience, 0) - 1
                    if left > 0:
                        groups[client.audience] = left
                    else:
                        groups.pop(client.audience, None)
                        if not groups:
                            del self.audiences[client.conversation_id]
            state = self.users.get(client.user_id)
            if state is not None:
                state.clients.discard(client)
                if not state.clients:
                    del self.users[client.user_id]

    def claim_slot(self, user_id: int, limit: int) -> bool:
        """Count a socket of the user from its handshake on; False if `limit` are taken.

        Counted at the check, in one step under the lock: between a handshake's check and
        its attach() come database calls that yield (PostgreSQL) and the upgrade itself,
        so a burst of handshakes counting attached sockets would all pass together.
        """
        with self._lock:
            taken = self.slots.get(user_id, 0)
            if taken >= limit:
                return False
            self.slots[user_id] = taken + 1
            return True

    def release_slot(self, user_id: int) -> None:
        """A socket (or its refused or failed handshake) has ended."""
        with self._lock:
            taken = self.slots.get(user_id, 0) - 1
            if taken > 0:
                self.slots[user_id] = taken
            else:
                self.slots.pop(user_id, None)

    def clients(self):
        """Every open socket of this process."""
        with self._lock:
            return [c for s in self.users.values() for c in s.clients]

    def clients_of(self, user_id: int) -> list[Client]:
        """The open sockets of one user in this process."""
        with self._lock:
            state = self.users.get(user_id)
            return list(state.clients) if state else []

    # -- rendering per audience ----------------------------------------------------------

    def _frames(self, event: dict) -> dict[str, Frame]:
        """The event's push as one frame per audience present in its conversation here.

        The event's own HTML serves the audience it was rendered for (the poster's; with
        everybody in one group, the only one); each other group present is rendered once,
        before the fan-out (rendering reads the database, never under the lock).
        """
        home = event.get("audience", DEFAULT_AUDIENCE)
        frames = {home: Frame(event["html"])}
        if self.render_push is None:
            return frames
        with self._lock:
            present = list(self.audiences.get(event["conversation_id"], ()))
        for key in present:
            if key not in frames:
                frames[key] = Frame(self.render_push(event, key, frames))
        return frames

    def _late(self, event: dict, frames: dict[str, Frame], clients: list[Client]) -> None:
        """Sockets that joined with a new audience while the frames were being made."""
        for client in clients:
            frame = frames.get(client.audience)
            if frame is None:
                frame = frames[client.audience] = Frame(
                    self.render_push(event, client.audience, frames))
            client.push(frame)

    @staticmethod
    def push_per_audience(clients, render) -> None:
        """Push render() to each socket as rendered for its audience: once per audience.

        For pushes the hub renders itself (sidebars, room headers, notices): the render
        runs under rendering_as() for the first socket of each group, never per socket.
        """
        frames: dict[str, Frame] = {}
        for client in clients:
            frame = frames.get(client.audience)
            if frame is None:
                with rendering_as(client.audience):
                    frame = frames[client.audience] = Frame(render())
            client.push(frame)

    # -- events ------------------------------------------------------------------------

    def deliver(self, event: dict) -> None:
        """Hand one event to the local sockets it concerns."""
        handler = getattr(self, f"_on_{event['type']}", None)
        if handler is None:
            log.warning("unknown event type %r", event["type"])
            return
        handler(event)

    def _on_message_created(self, event: dict) -> None:
        conversation_id = event["conversation_id"]
        message_id = event["message_id"]
        author_id = event["author_id"]
        members = event.get("member_ids")  # None: the public room, everyone is a member
        system = event.get("system", False)  # "ann added ben": shown, never counted
        mentioned = event.get("mention_ids") or ()
        # One frame per audience (language, time zone) present: the same HTML for every
        # viewer of a group, rendered and encoded once.
        frames = self._frames(event)
        late = []
        sidebar_refresh = []
        with self._lock:
            readers = set()
            for client in self.by_conversation.get(conversation_id, ()):
                # Cheap test first: nearly every message is newer than the snapshot.
                if message_id <= client.skip_ids.newest and message_id in client.skip_ids:
                    continue
                frame = frames.get(client.audience)
                if frame is None:
                    late.append(client)
                else:
                    client.push(frame)
                readers.add(client.user_id)
            recipients = self.users.keys() if members is None else members
            for user_id in list(recipients):
                state = self.users.get(user_id)
                if state is None:
                    continue
                if user_id != author_id and user_id not in readers \
                        and message_id > state.watermark and not system \
                        and notify.counts(state.levels.get(conversation_id, notify.EVERY),
                                          user_id, event):
                    state.unread[conversation_id] = state.unread.get(conversation_id, 0) + 1
                    if user_id in mentioned:
                        state.mentions[conversation_id] = state.mentions.get(conversation_id, 0) + 1
                    if members is None or conversation_id in state.heads \
                            or user_id in mentioned:
                        self._push_badge(state, conversation_id)
                if members is not None and conversation_id not in state.heads:
                    sidebar_refresh.append(user_id)
        if late:
            self._late(event, frames, late)
        metrics.delivered(event, len(readers))
        if not system:
            self.typing_stopped(conversation_id, author_id)  # their message is here
        readers.discard(author_id)
        if readers:
            self.on_read(readers, conversation_id, message_id)
        # A message in a room or private chat moves it to the head of its group in each
        # member's sidebar (and may add it): re-rendered for a member unless it is at the
        # head already, where a badge (above) is all that changes.
        for user_id in sidebar_refresh:
            self._refresh_sidebar(user_id)

    def _refresh_sidebar(self, user_id: int) -> None:
        """Re-render the sidebar in each of a user's sockets here (private chat activity)."""
        with self._lock:
            state = self.users.get(user_id)
            if state is None:
                return
            clients = list(state.clients)
            # These in-memory counts are newer than the database: read pointers of what
            # is on screen are saved in batches a moment later.
            unread = {c: n for c, n in state.unread.items() if n}
        heads = self.render_sidebars(user_id, clients, unread)
        if heads is not None:
            self.sidebar_rendered(user_id, heads)

    def _on_conversations_read(self, event: dict) -> None:
        # Pointers saved elsewhere in one batch; only users connected here cost anything.
        for user_id, conversation_id, _message_id in event["reads"]:
            if user_id in self.users:
                self._clear_unread(user_id, conversation_id)

    def _on_conversation_read(self, event: dict) -> None:
        self._clear_unread(event["user_id"], event["conversation_id"])

    def _clear_unread(self, user_id: int, conversation_id: int) -> None:
        """A user has read a conversation: its badge clears in each of their tabs here."""
        with self._lock:
            state = self.users.get(user_id)
            if state is None or not (state.unread.get(conversation_id)
                                     or state.mentions.get(conversation_id)):
                return
            state.unread[conversation_id] = 0
            state.mentions[conversation_id] = 0
            self._push_badge(state, conversation_id)

    def _viewers_holding(self, conversation_id: int, message_id: int) -> list[Client]:
        """Sockets of a conversation whose page may show this message: a page whose
        snapshot began after it never loaded it, and is not told of its changes."""
        with self._lock:
            return [c for c in self.by_conversation.get(conversation_id, ())
                    if message_id >= c.skip_ids.oldest]

    def _on_message_reacted(self, event: dict) -> None:
        # The fragment, rendered once per audience, replaces the old one in place.
        viewers = self._viewers_holding(event["conversation_id"], event["message_id"])
        if viewers:
            self._push_frames(event, viewers)

    def _push_frames(self, event: dict, viewers: list[Client]) -> None:
        """Push the event's frame for each viewer's audience (rendered once per audience)."""
        frames = self._frames(event)
        late = []
        for client in viewers:
            frame = frames.get(client.audience)
            if frame is None:
                late.append(client)
            else:
                client.push(frame)
        if late:
            self._late(event, frames, late)

    def _on_message_edited(self, event: dict) -> None:
        self._on_message_reacted(event)
        conversation_id = event["conversation_id"]
        with self._lock:
            # Someone the edit now names (or no longer names), connected here and not
            # reading that conversation: their mention badge is recounted (a rare event).
            changed = [u for u in event.get("mentions_changed", ()) if u in self.users
                       and not any(c.conversation_id == conversation_id
                                   for c in self.users[u].clients)]
        if not changed or self.recount_mentions is None:
            return
        fresh = self.recount_mentions(changed, conversation_id)
        with self._lock:
            for user_id in changed:
                state = self.users.get(user_id)
                if state is not None:
                    state.mentions[conversation_id] = fresh.get(user_id, 0)
                    self._push_badge(state, conversation_id)

    def _on_message_deleted(self, event: dict) -> None:
        # Whoever has the conversation open loses the message at once; the push also mends
        # the grouping and day separator of the message after it (rendered once).
        if not event.get("html"):  # an event from before the push was rendered with it
            event = dict(event, html=render_template(
                "pushes/message_deleted.html", message_id=event["message_id"]))
        conversation_id = event["conversation_id"]
        viewers = self._viewers_holding(conversation_id, event["message_id"])
        with self._lock:
            # Counts say how many, not which: whoever has unread here may have counted it.
            counted = [u for u, s in self.users.items() if s.unread.get(conversation_id)]
        if viewers:
            self._push_frames(event, viewers)
        if counted:
            fresh = self.recount_unread(counted, conversation_id)  # one query, rare event
            mentions = (self.recount_mentions(counted, conversation_id)
                        if self.recount_mentions else {})
            with self._lock:
                for user_id in counted:
                    state = self.users.get(user_id)
                    if state is not None and state.unread.get(conversation_id):
                        state.unread[conversation_id] = fresh.get(user_id, 0)
                        if self.recount_mentions:
                            state.mentions[conversation_id] = mentions.get(user_id, 0)
                        self._push_badge(state, conversation_id)

    def _on_user_deactivated(self, event: dict) -> None:
        # The account is closed: its sockets go now, not at the next reconnect (which
        # the handshake then refuses, as the session epoch has moved on).
        for client in self.clients_of(event["user_id"]):
            client.close(POLICY_VIOLATION, "Account deactivated")

    def _on_person_joined(self, event: dict) -> None:
        # A new account: every connected person's sidebar may list them under People (the
        # start-chat list). A render per connected user and page on screen, but only
        # once per registration, which is rare and rate-limited.
        with self._lock:
            user_ids = [u for u in self.users if u != event["user_id"]]
        for user_id in user_ids:
            self._refresh_sidebar(user_id)

    def _on_session_ended(self, event: dict) -> None:
        # Logged out: the sockets of that session go now (the handshake refuses new ones);
        # the user's other sessions, elsewhere, stay.
        now = time.monotonic()
        with self._lock:
            self.ended_sessions = {
                k: t for k, t in self.ended_sessions.items() if now - t < ENDED_SESSION_MEMORY
            }
            self.ended_sessions[event["session_key"]] = now
        for client in self.clients_of(event["user_id"]):
            if getattr(client, "session_key", None) == event["session_key"]:
                client.close(POLICY_VIOLATION, "Logged out")

    @staticmethod
    def _push_badge(state: UserState, conversation_id: int) -> None:
        """Show a user's new count for one conversation, and the total in each tab's title."""
        for client in state.clients:
            with rendering_as(client.audience):  # "3 unread" in the tab's language
                client.push(
                    render_template(
                        "pushes/badge_changed.html",
                        conversation_id=conversation_id,
                        count=state.unread.get(conversation_id, 0),
                        mentions=state.mentions.get(conversation_id, 0),
                        total=state.total,
                        total_mentions=state.total_mentions,
                        title=client.title,
                    )
                )

    def sidebar_rendered(self, user_id: int, heads: set[int]) -> None:
        """A sidebar of this user was rendered with these conversations at its groups' heads."""
        state = self.users.get(user_id)
        if state is not None:
            state.heads = set(heads)

    def close_all(self, code: int, reason: str) -> None:
        """Close every socket of this process (shutdown, restart)."""
        for client in self.clients():
            client.close(code, reason)
