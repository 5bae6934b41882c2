"""The hub's handling of room events: membership, names, deletion and "Notify me".

A mixin of Hub (hub.py), split out to keep each module to one concern; it uses the hub's
lock, users, by_conversation, render_room, recount_unread, _refresh_sidebar and
_push_badge.
"""

from __future__ import annotations

from flask import render_template
from flask_babel import gettext, lazy_gettext as _l

from .. import notify
from .client import Client
from .frames import POLICY_VIOLATION, Frame


def _say_goodbye(pages: list[Client], text: str) -> None:
    """Tell these pages why they stop (in place of the composer), then close their sockets
    (the next handshake gets 404). Best effort: a page whose socket is backed up gets
    only the close."""
    if not pages:
        return
    from .hub import Hub

    # Rendered once per audience present; `text` is marked for translation by the caller.
    Hub.push_per_audience(pages, lambda: render_template(
        "pushes/conversation_gone.html", text=gettext(text)))
    for client in pages:
        client.close(POLICY_VIOLATION, "Not a member of this conversation")


# Marked here, translated per audience when the notice is rendered.
GONE_REMOVED = "You are no longer in this room."
GONE_DELETED = "This room was deleted."
_l("You are no longer in this room.")
_l("This room was deleted.")


class RoomEvents:
    """Events about rooms, delivered by Hub.deliver() like every other event."""

    def _on_members_changed(self, event: dict) -> None:
        # People joined, were added, left or were removed. Whoever lost their seat loses
        # the room's sockets now (their next handshake gets 404) and its badge; each
        # affected person's tabs get a fresh sidebar (the room appears or goes).
        conversation_id = event["conversation_id"]
        gone = set(event.get("removed", ()))
        for user_id in gone:
            pages = [c for c in self.clients_of(user_id) if c.conversation_id == conversation_id]
            _say_goodbye(pages, GONE_REMOVED)
            with self._lock:
                state = self.users.get(user_id)
                if state is not None:
                    state.unread.pop(conversation_id, None)
                    state.levels.pop(conversation_id, None)
        for user_id in event.get("people", ()):
            self._refresh_sidebar(user_id)
        self._refresh_room(event)

    def _on_room_changed(self, event: dict) -> None:
        # Renamed: every member's sidebar shows the new name; the room's open pages too.
        for client in self._viewers(event["conversation_id"]):
            client.title = event["name"]
        for user_id in event.get("member_ids", ()):
            self._refresh_sidebar(user_id)
        self._refresh_room(event)

    def _on_room_deleted(self, event: dict) -> None:
        # Deleted by an administrator: its pages close (their handshake gets 404 now).
        _say_goodbye(self._viewers(event["conversation_id"]), GONE_DELETED)
        for user_id in event.get("member_ids", ()):
            with self._lock:
                state = self.users.get(user_id)
                if state is not None:
                    state.unread.pop(event["conversation_id"], None)
            self._refresh_sidebar(user_id)

    def _on_notify_changed(self, event: dict) -> None:
        # A member chose how much of a conversation counts: recount it in every tab.
        user_id, conversation_id = event["user_id"], event["conversation_id"]
        with self._lock:
            state = self.users.get(user_id)
            if state is None:
                return
            if event["level"] == notify.EVERY:
                state.levels.pop(conversation_id, None)
            else:
                state.levels[conversation_id] = event["level"]
        fresh = self.recount_unread([user_id], conversation_id)
        with self._lock:
            state = self.users.get(user_id)
            if state is not None:
                state.unread[conversation_id] = fresh.get(user_id, 0)
                self._push_badge(state, conversation_id)

    def _viewers(self, conversation_id: int) -> list[Client]:
        with self._lock:
            return list(self.by_conversation.get(conversation_id, ()))

    def _refresh_room(self, event: dict) -> None:
        """Push the room's header (name, members) to its open pages here, rendered once."""
        viewers = self._viewers(event["conversation_id"])
        if viewers and self.render_room is not None:
            conversation_id = event["conversation_id"]
            self.push_per_audience(viewers, lambda: self.render_room(conversation_id))
