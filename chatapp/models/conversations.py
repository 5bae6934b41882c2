"""Conversations and memberships: who may see what, and how far each member has read."""

from __future__ import annotations

from flask_babel import gettext
import functools
import secrets
from datetime import datetime

from flask import current_app
from sqlalchemy import (
    ForeignKey, bindparam, String, UniqueConstraint, delete, false, func, select, union, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, joinedload, mapped_column, relationship

from .. import notify
from ..extensions import db
from .base import PUBLIC_KEY, utcnow
from .messages import Image, Message


ROOM_PREFIX = "room:"
PUBLIC_ROOM_ID = "chatapp.public_room_id"  # where the app keeps the public room's id
ROOM_NAME_MAX = 50


class Conversation(db.Model):
    """The public room, a named room (open or members-only), or a private chat."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    # "public" for the public room, "dm:<low id>:<high id>" for a private chat,
    # "room:<random>" for a named room.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    # Rooms only: the name as typed (trimmed), and lower-cased for uniqueness.
    name: Mapped[str | None] = mapped_column(String(ROOM_NAME_MAX), default=None)
    name_key: Mapped[str | None] = mapped_column(String(ROOM_NAME_MAX), unique=True, default=None)
    members_only: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)

    memberships: Mapped[list[Membership]] = relationship(back_populates="conversation")

    @property
    def is_public(self) -> bool:
        return self.key == PUBLIC_KEY

    @property
    def is_room(self) -> bool:
        """A named room (open or members-only); not the public room, not a private chat."""
        return self.key.startswith(ROOM_PREFIX)

    @property
    def is_direct(self) -> bool:
        return self.key.startswith("dm:")

    @property
    def is_open(self) -> bool:
        """Readable by anyone who joins: the public room and open rooms (not private)."""
        return self.is_public or (self.is_room and not self.members_only)

    @staticmethod
    def direct_key(a: int, b: int) -> str:
        """The key of the private chat between two users."""
        low, high = sorted((a, b))
        return f"dm:{low}:{high}"

    @classmethod
    def _get_or_create(cls, key: str) -> Conversation:
        """Fetch the conversation with this key, creating it (race-safely) if missing."""
        found = db.session.scalar(select(cls).where(cls.key == key))
        if found:
            return found
        try:
            with db.session.begin_nested():
                found = cls(key=key)
                db.session.add(found)
        except IntegrityError:
            found = db.session.scalar(select(cls).where(cls.key == key))
        return found

    @classmethod
    def public_room(cls) -> Conversation:
        """The one public room: by its id once this process knows it (no query when the
        request has it loaded already), else by its key."""
        known = current_app.extensions.get(PUBLIC_ROOM_ID)
        if known is not None:
            found = db.session.get(cls, known)
            if found is not None and found.key == PUBLIC_KEY:  # a restored database may differ
                return found
        found = cls._get_or_create(PUBLIC_KEY)
        current_app.extensions[PUBLIC_ROOM_ID] = found.id
        return found

    @classmethod
    def direct(cls, user, peer) -> Conversation:
        """The private chat between two users, created (with both seats) on first use."""
        conversation = cls._get_or_create(cls.direct_key(user.id, peer.id))
        have = set(
            db.session.scalars(
                select(Membership.user_id).where(Membership.conversation_id == conversation.id)
            )
        )
        for member in (user, peer):
            if member.id not in have:
                try:
                    with db.session.begin_nested():
                        db.session.add(Membership(conversation_id=conversation.id, user_id=member.id))
                except IntegrityError:
                    pass  # a concurrent request added it
        return conversation

    @classmethod
    def showing(cls, image: Image) -> Conversation | None:
        """The conversation whose (not deleted) message shows this image, if any."""
        return db.session.scalar(
            select(cls)
            .join(Message, Message.conversation_id == cls.id)
            .where(Message.image_id == image.id, Message.deleted_at.is_(None))
        )

    def latest_message_id(self) -> int:
        """Id of the newest message here, 0 when empty."""
        return Message.latest_id(self.id)

    # -- membership: the one source of truth for who may read what ---------------------

    def is_member(self, user) -> bool:
        """Tell whether the user may read this conversation now (page, history, images,
        socket, pushes, badges, search). O(1): no query, or one indexed lookup."""
        if self.is_public:
            return True
        if self.is_direct:
            return user.id in self.member_ids()
        return self.membership_of(user.id) is not None

    def membership_of(self, user_id: int) -> Membership | None:
        """The user's seat here, if they have one (one indexed query)."""
        return db.session.scalar(
            select(Membership).where(
                Membership.conversation_id == self.id, Membership.user_id == user_id
            )
        )

    @classmethod
    def readable_ids(cls, user_id: int):
        """A SELECT of the ids of every conversation the user may read (use with in_())."""
        return union(
            select(Membership.conversation_id).where(Membership.user_id == user_id),
            select(cls.id).where(cls.key == PUBLIC_KEY),
        )

    def member_ids(self) -> list[int] | None:
        """Who hears of this conversation: None for the public room (everyone), the two
        members of a private chat (from the key), a room's members (one query)."""
        if self.is_public:
            return None
        if self.is_direct:
            _, low, high = self.key.split(":")
            return [int(low), int(high)]
        return list(
            db.session.scalars(
                select(Membership.user_id).where(Membership.conversation_id == self.id)
            )
        )

    def member_count(self) -> int:
        """How many people are in this conversation."""
        return db.session.scalar(
            select(func.count(Membership.id)).where(Membership.conversation_id == self.id)
        )

    def may_manage(self, user) -> bool:
        """Rename a room and remove its members: its creator, or an administrator."""
        return self.is_room and (user.is_admin or user.id == self.created_by_id)

    # -- rooms (models add and flush; the caller commits, then publishes) -------------

    @classmethod
    def by_name(cls, name: str) -> Conversation | None:
        """The room with this name, ignoring case."""
        return db.session.scalar(select(cls).where(cls.name_key == name.lower()))

    @classmethod
    def create_room(cls, name: str, members_only: bool, creator, people=()) -> Conversation:
        """A new room with its creator (and, members-only, these people) as members."""
        room = cls(key=ROOM_PREFIX + secrets.token_hex(16), name=name, name_key=name.lower(),
                   members_only=members_only, created_by_id=creator.id)
        db.session.add(room)
        db.session.flush()  # the name's unique constraint speaks here
        for person in [creator, *people]:
            room._seat(person.id)
        db.session.flush()
        return room

    def _seat(self, user_id: int) -> Membership:
        """Give a user a seat here, read up to now."""
        seat = Membership(conversation_id=self.id, user_id=user_id,
                          last_read_id=self.latest_message_id())
        db.session.add(seat)
        return seat

    def add_member(self, user) -> bool:
        """Seat a user here (joining or being added); False if they already are."""
        if self.membership_of(user.id) is not None:
            return False
        try:
            with db.session.begin_nested():
                self._seat(user.id)
        except IntegrityError:
            return False  # a concurrent request seated them
        return True

    def remove_member(self, user_id: int) -> bool:
        """Take a user's seat away (removed, or leaving); False if they had none."""
        result = db.session.execute(
            delete(Membership).where(
                Membership.conversation_id == self.id, Membership.user_id == user_id
            )
        )
        return result.rowcount > 0

    def rename(self, name: str) -> None:
        """Give the room a new name (the caller checked it is free)."""
        self.name = name
        self.name_key = name.lower()

    @classmethod
    def open_rooms(cls) -> list[tuple[Conversation, int]]:
        """Every open room with its member count, by name."""
        count = (
            select(func.count(Membership.id))
            .where(Membership.conversation_id == cls.id)
            .correlate(cls)
            .scalar_subquery()
        )
        rows = db.session.execute(
            select(cls, count)
            .where(cls.key.startswith(ROOM_PREFIX), cls.members_only.is_(False))
            .order_by(cls.name_key)
        ).all()
        return [(room, n) for room, n in rows]

    def peer_of(self, user):
        """The other member of a private chat (None in a room)."""
        if not self.is_direct:
            return None
        peer_id = next(i for i in self.member_ids() if i != user.id)
        # Through the seat (one statement): the User class builds on this module.
        seat = db.session.scalar(
            select(Membership).options(joinedload(Membership.user))
            .where(Membership.conversation_id == self.id, Membership.user_id == peer_id)
        )
        return seat.user if seat is not None else None

    def title_for(self, user, peer=None) -> str:
        """What a page calls this conversation: "Public room", a room's name, or the
        other member's name."""
        if self.is_public:
            return gettext("Public room")
        if self.is_room:
            return self.name
        peer = peer or self.peer_of(user)
        return peer.username if peer else gettext("Private chat")

    def recent_messages(self, limit: int, before_id: int | None = None) -> list[Message]:
        """Up to `limit` messages, oldest first, optionally older than `before_id`."""
        return Message.window(self.id, limit, before_id)

    def recent_messages_after(self, limit: int, before_id: int | None = None
                              ) -> tuple[list[Message], Message | None]:
        """recent_messages(), and the message shown before the first of them (None at the
        beginning), read by the same statement: grouping needs it."""
        rows = Message.window(self.id, limit + 1, before_id)
        return (rows[1:], rows[0]) if len(rows) > limit else (rows, None)


class Membership(db.Model):
    """A user's seat in a conversation, with how far they have read."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("conversation_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    last_read_id: Mapped[int] = mapped_column(default=0)
    # How much of this conversation counts as unread (notify.py): all, mentions, none.
    notify: Mapped[str] = mapped_column(String(16), default="all", server_default="all")

    conversation: Mapped[Conversation] = relationship(back_populates="memberships")
    user = relationship("User")

    @staticmethod
    def mark_read(user_id: int, conversation: Conversation) -> tuple[int, bool]:
        """Move a user's pointer to the newest message of a conversation; return its id
        and whether the pointer moved (else nothing was written: no need to commit, and a
        commit would expire every row the request has loaded)."""
        latest, pointer = db.session.execute(select(
            select(func.coalesce(func.max(Message.id), 0))
            .where(Message.conversation_id == conversation.id).scalar_subquery(),
            select(Membership.last_read_id)
            .where(Membership.user_id == user_id,
                   Membership.conversation_id == conversation.id).scalar_subquery(),
        )).one()
        if pointer is None or pointer >= latest:
            return latest, False
        db.session.execute(
            update(Membership)
            .where(
                Membership.user_id == user_id,
                Membership.conversation_id == conversation.id,
                Membership.last_read_id < latest,
            )
            .values(last_read_id=latest)
        )
        return latest, True

    @staticmethod
    def advance(pointers: dict[tuple[int, int], int]) -> None:
        """Move many read pointers forward ({(user, conv): id}); the caller commits.

        Everyone viewing a busy room has read the same newest message, so pointers are
        grouped by (conversation, message) and each group is one UPDATE: the statement
        count follows the number of conversations, not the number of readers.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for (user_id, conversation_id), message_id in pointers.items():
            groups.setdefault((conversation_id, message_id), []).append(user_id)
        for (conversation_id, message_id), user_ids in groups.items():
            db.session.execute(
                update(Membership)
                .where(
                    Membership.conversation_id == conversation_id,
                    Membership.user_id.in_(user_ids),
                    Membership.last_read_id < message_id,
                )
                .values(last_read_id=message_id)
            )

    @staticmethod
    def unread_query(*columns):
        """SELECT columns, count(unread) over memberships: what "unread" means, in one place.

        A message is unread for a member when it is past their read pointer, written by
        someone else, not deleted, not a system line, and counted by the member's
        "Notify me" level (notify.py). Callers add their filter and GROUP BY.
        """
        return (
            select(*columns, func.count(Message.id))
            .join(
                Message,
                (Message.conversation_id == Membership.conversation_id)
                & (Message.id > Membership.last_read_id),
            )
            .where(
                Message.author_id != Membership.user_id,
                Message.deleted_at.is_(None),
                Message.system.is_(False),
                notify.counted_clause(Membership, Message),
            )
        )

    @staticmethod
    def levels(user_id: int) -> dict[int, str]:
        """The user's "Notify me" level per conversation, where it is not the default."""
        rows = db.session.execute(
            select(Membership.conversation_id, Membership.notify)
            .where(Membership.user_id == user_id, Membership.notify != notify.EVERY)
        )
        return {conversation_id: level for conversation_id, level in rows}

    @classmethod
    def unread_counts(cls, user_id: int) -> dict[int, int]:
        """Unread messages per conversation for a user (others' messages past the pointer)."""
        rows = db.session.execute(_unread_counts(), {"user": user_id})
        return {conversation_id: count for conversation_id, count in rows}

    @classmethod
    def recount_unread(cls, user_ids, conversation_id: int) -> dict[int, int]:
        """Unread messages in one conversation for several users, in one query."""
        rows = db.session.execute(
            cls.unread_query(cls.user_id)
            .where(cls.conversation_id == conversation_id, cls.user_id.in_(user_ids))
            .group_by(cls.user_id)
        )
        return {user_id: count for user_id, count in rows}


@functools.cache
def _unread_counts():
    """Membership.unread_counts's statement, built once (every page's sidebar runs it)."""
    return (Membership.unread_query(Membership.conversation_id)
            .where(Membership.user_id == bindparam("user"))
            .group_by(Membership.conversation_id))
