"""What people add to a message without writing: mentions of them, and reactions."""

from __future__ import annotations

from ..i18n import N_
import functools

from sqlalchemy import (
    ForeignKey, Index, String, UniqueConstraint, bindparam, delete, func, select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .messages import Message

# The fixed set, in the order the picker shows it: emoji -> accessible name.
REACTIONS = {
    "👍": N_("Thumbs up"),
    "❤️": N_("Heart"),
    "😂": N_("Joy"),
    "🎉": N_("Party"),
    "👀": N_("Eyes"),
    "🙏": N_("Thanks"),
}


class Mention(db.Model):
    """A member named by @username in a message: counted as a mention badge until read.

    conversation_id is copied from the message so the badge count is one indexed range
    (user, conversation, message id past the read pointer) without a join per row.
    """

    __tablename__ = "mentions"
    __table_args__ = (
        UniqueConstraint("message_id", "user_id", name="uq_mentions_message_user"),
        Index("ix_mentions_user_conversation_message", "user_id", "conversation_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))

    @classmethod
    def record(cls, message: Message, user_ids, replace: bool = False) -> None:
        """Store who a (new or edited) message mentions; the caller commits."""
        if replace:  # an edit: the old text's mentions go
            db.session.execute(delete(cls).where(cls.message_id == message.id))
        for user_id in sorted(set(user_ids)):
            db.session.add(cls(message_id=message.id, user_id=user_id,
                               conversation_id=message.conversation_id))

    @classmethod
    def of(cls, message_id: int) -> list[int]:
        """Who a message mentions."""
        return list(db.session.scalars(select(cls.user_id).where(cls.message_id == message_id)))


class Reaction(db.Model):
    """One person's emoji on one message (at most one of each emoji per person)."""

    __tablename__ = "reactions"
    __table_args__ = (
        UniqueConstraint("message_id", "user_id", "emoji", name="uq_reactions_message_user_emoji"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    emoji: Mapped[str] = mapped_column(String(16))

    @classmethod
    def toggle(cls, message: Message, user, emoji: str) -> bool:
        """Add this person's emoji to the message, or take it back; True when added."""
        found = db.session.scalar(select(cls).where(
            cls.message_id == message.id, cls.user_id == user.id, cls.emoji == emoji))
        if found is not None:
            db.session.delete(found)
            db.session.flush()
            return False
        try:
            with db.session.begin_nested():  # a double click's twin may have added it first
                db.session.add(cls(message_id=message.id, user_id=user.id, emoji=emoji))
        except IntegrityError:
            pass
        return True

    @classmethod
    def summary(cls, message_ids) -> dict[int, list[tuple[str, str, list[str]]]]:
        """Per message: [(emoji, name, [usernames])] in the fixed order, only those used."""
        from .users import User  # users builds on this module

        ids = list(message_ids)
        if not ids:
            return {}
        rows = db.session.execute(_summary(), {"ids": ids}).all()
        found: dict[int, dict[str, list[str]]] = {}
        for message_id, emoji, username in rows:
            found.setdefault(message_id, {}).setdefault(emoji, []).append(username)
        return {
            message_id: [(e, name, by_emoji[e]) for e, name in REACTIONS.items() if e in by_emoji]
            for message_id, by_emoji in found.items()
        }


@functools.cache
def _summary():
    """Reaction.summary's statement, built once (every page of messages runs it)."""
    from .users import User

    return (select(Reaction.message_id, Reaction.emoji, User.username)
            .join(User, User.id == Reaction.user_id)
            .where(Reaction.message_id.in_(bindparam("ids", expanding=True)))
            .order_by(Reaction.id))


def _unread(*columns):
    """SELECT columns, count(unread mentions): mentions past the member's read pointer, of
    shown messages. Callers add their filter and GROUP BY."""
    from .conversations import Membership  # conversations builds on messages, as this does

    return (
        select(*columns, func.count(Mention.id))
        .join(Membership, (Membership.conversation_id == Mention.conversation_id)
              & (Membership.user_id == Mention.user_id))
        .join(Message, Message.id == Mention.message_id)
        .where(Mention.message_id > Membership.last_read_id, Message.deleted_at.is_(None))
    )


def unread_mentions(user_id: int) -> dict[int, int]:
    """Unread mentions of a user, per conversation."""
    rows = db.session.execute(_unread_mentions(), {"user": user_id})
    return {c: n for c, n in rows}


@functools.cache
def _unread_mentions():
    """unread_mentions's statement, built once (every page's sidebar runs it)."""
    return (_unread(Mention.conversation_id).where(Mention.user_id == bindparam("user"))
            .group_by(Mention.conversation_id))


def recount_mentions(user_ids, conversation_id: int) -> dict[int, int]:
    """Unread mentions in one conversation for several users, in one query."""
    rows = db.session.execute(
        _unread(Mention.user_id)
        .where(Mention.conversation_id == conversation_id, Mention.user_id.in_(list(user_ids)))
        .group_by(Mention.user_id))
    return {u: n for u, n in rows}
