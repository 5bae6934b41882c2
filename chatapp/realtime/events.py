"""What happened, told to every process: built here, published only after the commit.

This module builds events and hands them to the backplane; the hub (hub.py) delivers
them to sockets. It runs no query and commits nothing. Every change to a message (new,
edited, deleted, reacted to) is built and published by posting.py, the one road for
messages; what is left here concerns people and their reading.
"""

from __future__ import annotations

from .current import get


def publish(event: dict) -> None:
    """Send an event to every process's hub (this one included)."""
    get().backplane.publish(event)


def conversation_read(user_id: int, conversation_id: int, message_id: int) -> None:
    """A user has read a conversation up to a message: its badge clears everywhere."""
    publish(
        {
            "type": "conversation_read",
            "user_id": user_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
        }
    )


def reads_saved(batch: dict[tuple[int, int], int]) -> None:
    """A batch of read pointers was saved: other processes clear those badges too.

    One event for the whole batch: a busy room's viewers all read each message, and an
    event per viewer would be a publish (and a delivery on every worker) per viewer.
    """
    if batch and get().backplane.remote:
        publish(
            {
                "type": "conversations_read",
                "reads": [[u, c, m] for (u, c), m in batch.items()],
            }
        )


def user_deactivated(user_id: int) -> None:
    """An account was deactivated: every process closes that user's sockets."""
    publish({"type": "user_deactivated", "user_id": user_id})


def session_ended(user_id: int, session_key: str | None) -> None:
    """Someone logged out: every process closes the sockets of that session."""
    publish({"type": "session_ended", "user_id": user_id, "session_key": session_key})


def person_joined(user_id: int) -> None:
    """Someone registered: the people list in everyone's open sidebars shows them."""
    publish({"type": "person_joined", "user_id": user_id})


def members_changed(conversation_id: int, member_ids, removed=()) -> None:
    """People joined, were added to, left or were removed from a room: their sidebars
    change, and whoever was removed loses the room's sockets on every process."""
    # "people", not "member_ids": every process must hear it, as the room's open pages
    # there (other members') show the member list.
    publish({"type": "members_changed", "conversation_id": conversation_id,
             "people": sorted(set(member_ids) | set(removed)), "removed": list(removed)})


def room_changed(conversation_id: int, name: str, member_ids) -> None:
    """A room was renamed: its members' sidebars and its open pages show the new name."""
    publish({"type": "room_changed", "conversation_id": conversation_id, "name": name,
             "member_ids": list(member_ids)})


def room_deleted(conversation_id: int, member_ids) -> None:
    """An administrator deleted a room: its pages close, members' sidebars drop it."""
    publish({"type": "room_deleted", "conversation_id": conversation_id,
             "member_ids": list(member_ids)})


def notify_changed(user_id: int, conversation_id: int, level: str) -> None:
    """A member chose a "Notify me" level: their badge is recounted in every tab."""
    publish({"type": "notify_changed", "user_id": user_id, "conversation_id": conversation_id,
             "level": level})


def typing(conversation_id: int, user_id: int, name: str) -> None:
    """Someone is typing in a conversation: its open pages say so for a few seconds."""
    publish({"type": "typing", "conversation_id": conversation_id, "user_id": user_id,
             "name": name})
