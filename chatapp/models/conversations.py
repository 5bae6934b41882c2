"""Conversations and memberships: who may see what, and how far each member has read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, joinedload, mapped_column, relationship

from ..extensions import db
from .base import PUBLIC_KEY, utcnow
from .messages import Image, Message


class Conversation(db.Model):
    """The public room, or a private chat between two users."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    # "public" for the room, "dm:<low id>:<high id>" for a private chat.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime | None] = mapped_column(default=None, index=True)

    memberships: Mapped[list[Membership]] = relationship(back_populates="conversation")

    @property
    def is_public(self) -> bool:
        return self.key == PUBLIC_KEY

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
        """The one public room."""
        return cls._get_or_create(PUBLIC_KEY)

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

    def is_member(self, user) -> bool:
        """Tell whether the user may see this conversation."""
        if self.is_public:
            return True
        return user.id in self.member_ids()

    def member_ids(self) -> list[int] | None:
        """The two members of a private chat; None for the public room (everyone)."""
        if self.is_public:
            return None
        _, low, high = self.key.split(":")
        return [int(low), int(high)]

    def peer_of(self, user):
        """The other member of a private chat (None in the public room)."""
        if self.is_public:
            return None
        peer_id = next(i for i in self.member_ids() if i != user.id)
        # Through the seat (one statement): the User class builds on this module.
        seat = db.session.scalar(
            select(Membership).options(joinedload(Membership.user))
            .where(Membership.conversation_id == self.id, Membership.user_id == peer_id)
        )
        return seat.user if seat is not None else None

    def title_for(self, user, peer=None) -> str:
        """What a page calls this conversation: "Public room" or the other member's name."""
        if self.is_public:
            return "Public room"
        peer = peer or self.peer_of(user)
        return peer.username if peer else "Private chat"

    def recent_messages(self, limit: int, before_id: int | None = None) -> list[Message]:
        """Up to `limit` messages, oldest first, optionally older than `before_id`."""
        return Message.window(self.id, limit, before_id)


class Membership(db.Model):
    """A user's seat in a conversation, with how far they have read."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("conversation_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    last_read_id: Mapped[int] = mapped_column(default=0)

    conversation: Mapped[Conversation] = relationship(back_populates="memberships")
    user = relationship("User")

    @staticmethod
    def mark_read(user_id: int, conversation: Conversation) -> int:
        """Move a user's pointer to the newest message of a conversation; return its id."""
        latest = conversation.latest_message_id()
        db.session.execute(
            update(Membership)
            .where(
                Membership.user_id == user_id,
                Membership.conversation_id == conversation.id,
                Membership.last_read_id < latest,
            )
            .values(last_read_id=latest)
        )
        return latest

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
        someone else, and not deleted. Callers add their filter and GROUP BY.
        """
        return (
            select(*columns, func.count(Message.id))
            .join(
                Message,
                (Message.conversation_id == Membership.conversation_id)
                & (Message.id > Membership.last_read_id),
            )
            .where(Message.author_id != Membership.user_id, Message.deleted_at.is_(None))
        )

    @classmethod
    def unread_counts(cls, user_id: int) -> dict[int, int]:
        """Unread messages per conversation for a user (others' messages past the pointer)."""
        rows = db.session.execute(
            cls.unread_query(cls.conversation_id)
            .where(cls.user_id == user_id)
            .group_by(cls.conversation_id)
        )
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
