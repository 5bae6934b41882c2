"""Messages and the images they show."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from sqlalchemy import (
    ForeignKey, Index, String, Text, UniqueConstraint, bindparam, false, func, select, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, make_transient_to_detached, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from ..i18n import local_date
from ..extensions import db
from .base import GROUP_GAP, utcnow


class Image(db.Model):
    """A stored, re-encoded image and its thumbnail."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Random storage names relative to the upload directory; never the user's file name.
    path: Mapped[str] = mapped_column(String(128), unique=True)
    thumb_path: Mapped[str] = mapped_column(String(128))
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int]
    thumb_width: Mapped[int]
    thumb_height: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(db.Model):
    """Something a user said in a conversation."""

    __tablename__ = "messages"
    __table_args__ = (
        # A resend of the same composer (same client_id) must not make a second row.
        UniqueConstraint("author_id", "client_id", name="uq_messages_author_client"),
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    body: Mapped[str] = mapped_column(Text, default="")
    client_id: Mapped[str] = mapped_column(String(36))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    # A line the room itself says ("ann added ben"): shown, never counted as unread.
    system: Mapped[bool] = mapped_column(default=False, server_default=false())
    edited_at: Mapped[datetime | None] = mapped_column(default=None)
    # The body as HTML (formatting.py): rendered once when stored or edited, never per
    # viewer. NULL for rows stored before formatting existed: rendered when shown.
    body_html: Mapped[str | None] = mapped_column(Text, default=None)
    # Not stored: the message shown before this one, as looked up when its push was first
    # rendered (posting.message_event), for renderings for other audiences.
    shown_after = None

    author = relationship("User", lazy="joined")
    conversation = relationship("Conversation")
    image: Mapped[Image | None] = relationship(lazy="joined")

    @classmethod
    def post(cls, conversation, author, body: str, client_id: str,
             image: Image | None = None, system: bool = False,
             body_html: str | None = None) -> tuple[Message, bool]:
        """Store a message once per (author, client_id); return it and whether it is new.

        The caller commits, and may first render the message while it and its author and
        conversation are still loaded (a commit expires them). It publishes only after
        the commit, so an event never announces an uncommitted row. A resend rolls the
        caller's transaction back (its insert failed) and returns the stored message.

        Every row is written by a plain (Core) statement, not by the ORM's unit of work,
        which cost more than all of them together: the message (its body already
        rendered, so it is written once), its search terms, the conversation's
        last_message_at and the author's read pointer. The new Message then joins the
        session as if loaded, with nothing pending.
        """
        if image is not None and image.id is None:
            db.session.add(image)
            db.session.flush()  # the image's row first: the message points to it
        now = utcnow()
        values = {
            "conversation_id": conversation.id, "author_id": author.id, "body": body,
            "client_id": client_id, "image_id": image.id if image is not None else None,
            "created_at": now, "deleted_at": None, "system": system, "edited_at": None,
            "body_html": body_html,
        }
        statements = _statements()
        connection = db.session.connection()
        # Insert first: a resend is rare, and the unique (author, client_id) catches it.
        try:
            message_id = connection.execute(statements.insert, values).inserted_primary_key[0]
        except IntegrityError:  # a resend: this composer's message is already stored
            db.session.rollback()
            return db.session.scalar(
                select(cls).where(cls.author_id == author.id, cls.client_id == client_id)
            ), False
        from ..search_index import index_new  # the index builds on this module

        index_new(connection, message_id, conversation.id, body)
        connection.execute(statements.last_message_at,
                           {"conversation": conversation.id, "at": now})
        set_committed_value(conversation, "last_message_at", now)
        # The author has read everything up to their own message.
        connection.execute(
            statements.author_read,
            {"reader": author.id, "conversation": conversation.id, "message": message_id},
        )
        message = cls(id=message_id, **values)
        message.author, message.conversation, message.image = author, conversation, image
        make_transient_to_detached(message)  # as if just loaded: nothing left to flush
        db.session.add(message)
        return message, True

    @classmethod
    def latest_id(cls, conversation_id: int) -> int:
        """Id of the newest message in a conversation, 0 when empty."""
        return db.session.scalar(
            select(func.coalesce(func.max(cls.id), 0)).where(cls.conversation_id == conversation_id)
        )

    @classmethod
    def newest_id(cls) -> int:
        """Id of the newest message anywhere, 0 when there is none."""
        return db.session.scalar(select(func.coalesce(func.max(cls.id), 0)))

    @classmethod
    def window(cls, conversation_id: int, limit: int, before_id: int | None = None) -> list[Message]:
        """Up to `limit` shown messages of a conversation, oldest first, optionally older
        than `before_id`."""
        statements = _statements()
        if before_id is None:
            rows = db.session.scalars(statements.newest, {
                "conversation": conversation_id, "limit": limit}).all()
        else:
            rows = db.session.scalars(statements.older, {
                "conversation": conversation_id, "before": before_id, "limit": limit}).all()
        return list(reversed(rows))

    @classmethod
    def after(cls, conversation_id: int, limit: int, after_id: int) -> list[Message]:
        """Up to `limit` shown messages newer than `after_id`, oldest first."""
        query = select(cls).where(cls.conversation_id == conversation_id,
                                  cls.deleted_at.is_(None), cls.id > after_id)
        return list(db.session.scalars(query.order_by(cls.id).limit(limit)))

    def soft_delete(self) -> bool:
        """Hide this message everywhere (moderation); False if it was already hidden."""
        if self.deleted_at is not None:
            return False
        self.deleted_at = utcnow()
        return True

    def previous(self):
        """The message shown just before this one in its conversation, if any.

        Only what grouping needs of it (author_id, created_at): a row, not a whole Message
        with its author and image joined in.
        """
        # On the connection: an ORM session.execute() costs more than the query itself.
        return db.session.connection().execute(
            _statements().previous, {"conversation": self.conversation_id, "message": self.id}
        ).first()

    def following(self):
        """The shown message just after this one in its conversation, if any."""
        return db.session.scalar(
            select(Message)
            .where(Message.conversation_id == self.conversation_id, Message.id > self.id,
                   Message.deleted_at.is_(None))
            .order_by(Message.id)
            .limit(1)
        )

    @property
    def html(self) -> str:
        """The body as sanitized HTML: stored when sent; rendered now for older rows."""
        if self.body_html is not None:
            return self.body_html
        from ..formatting import render  # formatting builds on the models' base

        return render(self.body)[0]

    def continues(self, previous: Message | None, starts_day: bool | None = None) -> bool:
        """Tell whether this message joins the previous one's group (same author, soon after).

        `starts_day`: starts_day(previous), when the caller has it already.
        """
        if starts_day is None:
            starts_day = self.starts_day(previous)
        return (
            previous is not None
            and previous.author_id == self.author_id
            and not starts_day
            and self.created_at - previous.created_at < GROUP_GAP
        )

    def starts_day(self, previous: Message | None, day=local_date) -> bool:
        """Tell whether a day separator goes before this message: days begin at midnight
        in the viewer's time zone (the one being rendered for). `day`: local_date, or the
        same with the zone looked up once (i18n.day_of()) for a list of messages."""
        return previous is None or day(previous.created_at) != day(self.created_at)


class _Statements:
    """Statements run for every message, built once: building a statement from its
    Python expression costs more than SQLAlchemy's cached compile of it (~50 µs each)."""

    def __init__(self):
        # The memberships table by name: its class (conversations.py) builds on this module.
        membership = db.metadata.tables["memberships"]
        conversations = db.metadata.tables["conversations"]
        messages = Message.__table__
        self.insert = messages.insert()
        self.last_message_at = (
            update(conversations)
            .where(conversations.c.id == bindparam("conversation"))
            .values(last_message_at=bindparam("at"))
        )
        self.author_read = (
            update(membership)
            .where(
                membership.c.user_id == bindparam("reader"),
                membership.c.conversation_id == bindparam("conversation"),
                membership.c.last_read_id < bindparam("message"),
            )
            .values(last_read_id=bindparam("message"))
        )
        # A page of messages, newest first: the newest, or those before an id.
        shown = select(Message).where(Message.conversation_id == bindparam("conversation"),
                                      Message.deleted_at.is_(None))
        self.newest = shown.order_by(Message.id.desc()).limit(bindparam("limit"))
        self.older = (shown.where(Message.id < bindparam("before"))
                      .order_by(Message.id.desc()).limit(bindparam("limit")))
        self.previous = (
            select(messages.c.author_id, messages.c.created_at)
            .where(
                messages.c.conversation_id == bindparam("conversation"),
                messages.c.id < bindparam("message"),
                messages.c.deleted_at.is_(None),
            )
            .order_by(messages.c.id.desc())
            .limit(1)
        )


@cache
def _statements() -> _Statements:
    """The statements, built on first use (every mapped class exists by then)."""
    return _Statements()
