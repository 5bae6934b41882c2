"""The data model: users, conversations, memberships with read pointers, messages."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta, timezone
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_login import UserMixin
from sqlalchemy import (
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

# ASCII only (no confusables or direction marks); \Z, not $, which also allows "name\n".
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}\Z")
# The largest id a database integer holds; larger numbers from URLs are simply absent.
MAX_ID = 2**63 - 1
PUBLIC_KEY = "public"
# Messages by one author closer together than this are shown as one group.
GROUP_GAP = timedelta(minutes=5)
_hasher = PasswordHasher()
_dummy_hash: str | None = None

# An argon2 hash takes ~100 ms of CPU (and a 64 MiB buffer). Under gevent, computing it
# on the event loop would stop every socket of the worker for that long, once per login;
# so it runs in a small pool of real threads (argon2's C code releases the GIL) while
# the loop carries on. Two threads: a login burst cannot take more than two cores' worth.
HASH_THREADS = 2
_hash_pool = None


def _hashing(fn, *args):
    """fn(*args), an argon2 call: off the event loop when this process runs gevent."""
    global _hash_pool
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        return fn(*args)
    if _hash_pool is None:  # made on first use, so in the worker, after any fork
        from gevent.threadpool import ThreadPool

        _hash_pool = ThreadPool(HASH_THREADS)
    return _hash_pool.apply(fn, args)


def _matches(password_hash: str, password: str) -> bool:
    """Whether the password matches the hash; a mismatch is an answer, not an error."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify(password_hash: str, password: str) -> bool:
    # The exception is caught inside the pool's thread: raised there, gevent's pool would
    # log a full traceback for every wrong password.
    return _hashing(_matches, password_hash, password)


def like_literal(text: str) -> str:
    """Escape LIKE's wildcards (with backslash) so the text matches only itself.

    NUL characters are dropped: no name or message holds one, and PostgreSQL refuses them.
    """
    return text.replace("\x00", "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def utcnow() -> datetime:
    """Return the current time as a naive UTC datetime (portable across databases)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(UserMixin, db.Model):
    """A person with an account."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    # Usernames are unique ignoring case; the lower-cased copy carries the constraint.
    username_key: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    # Bumped to end every session of this user (logout everywhere, deactivation).
    session_epoch: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The signed-in session (UserSession id) this object was loaded for: set by the login
    # and by the user loader, never stored on the row.
    session_key = None

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    def get_id(self) -> str:
        """Identify the session: user id, epoch and session record, each one revocable.

        Flask-Login keeps this in the session cookie and in the remember cookie alike, so
        ending the record (logout) or bumping the epoch (deactivation) refuses both.
        """
        return f"{self.id}:{self.session_epoch}:{self.session_key}"

    def set_password(self, password: str) -> None:
        """Store an argon2id hash of the password."""
        self.password_hash = _hashing(_hasher.hash, password)

    def check_password(self, password: str) -> bool:
        """Tell whether the password matches, rehashing when parameters changed."""
        stored = self.password_hash
        if not _verify(stored, password):
            return False
        if _hasher.check_needs_rehash(stored):
            self.set_password(password)
        return True

    @classmethod
    def by_username(cls, username: str) -> User | None:
        """Find a user by name, ignoring case."""
        if len(username) > 32 or "\x00" in username:  # no such name (PostgreSQL refuses NUL)
            return None
        return db.session.scalar(select(cls).where(cls.username_key == username.lower()))

    @classmethod
    def authenticate(cls, username: str, password: str) -> User | None:
        """The user with this name and password, if any (active or not).

        An unknown name costs the same argon2 work as a wrong password, so the time a
        login takes does not tell whether an account exists. The read transaction ends
        before hashing: a burst of logins must not hold a pooled connection each while
        they wait their turn to hash (the pool would run out, and logins fail).
        """
        global _dummy_hash
        user = cls.by_username(username)
        stored = user.password_hash if user is not None else None
        db.session.rollback()  # read only so far; gives the connection back to the pool
        if stored is None:
            if _dummy_hash is None:
                _dummy_hash = _hashing(_hasher.hash, "no such user")
            stored = _dummy_hash
        if not _verify(stored, password) or user is None:
            return None
        if _hasher.check_needs_rehash(stored):
            user.set_password(password)  # the caller commits
        return user

    @classmethod
    def register(cls, username: str, password: str) -> User:
        """Create an account and give it a seat in the public room, read up to now."""
        user = cls(username=username, username_key=username.lower())
        user.set_password(password)
        db.session.add(user)
        db.session.flush()
        room = Conversation.public_room()
        db.session.add(
            Membership(conversation=room, user=user, last_read_id=room.latest_message_id())
        )
        db.session.commit()
        return user

    @property
    def initials(self) -> str:
        """One or two letters for the avatar."""
        parts = [p for p in re.split(r"[_.\-]", self.username) if p]
        if len(parts) >= 2:
            return (parts[0][0] + parts[1][0]).upper()
        return self.username[:2].upper()

    # -- administration (the caller commits, then publishes) ---------------------------

    def deactivate(self) -> None:
        """Refuse this user's logins and end every session they have."""
        self.active = False
        self.session_epoch += 1
        db.session.execute(delete(UserSession).where(UserSession.user_id == self.id))

    def reactivate(self) -> None:
        """Let this user log in again (their old sessions stay ended)."""
        self.active = True

    def promote(self) -> None:
        """Make this user an administrator."""
        self.is_admin = True

    def demote(self) -> None:
        """Take administration away from this user."""
        self.is_admin = False


class UserSession(db.Model):
    """One signed-in browser: what logging out ends, on the server, for good."""

    __tablename__ = "user_sessions"

    # A random token, carried (signed) in the session and remember cookies.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    @classmethod
    def start(cls, user: User, lifetime: timedelta) -> UserSession:
        """Open a session for the user, valid for `lifetime` (the caller commits)."""
        now = utcnow()
        # Each login sweeps the user's expired records, so they do not pile up.
        db.session.execute(delete(cls).where(cls.user_id == user.id, cls.expires_at <= now))
        record = cls(id=secrets.token_urlsafe(32), user_id=user.id, expires_at=now + lifetime)
        db.session.add(record)
        user.session_key = record.id
        return record

    @staticmethod
    def end(session_key: str) -> None:
        """End one session: its cookies, copied or not, are refused from now on."""
        db.session.execute(delete(UserSession).where(UserSession.id == session_key))

    @staticmethod
    def load_user(session_id: str) -> User | None:
        """The user of a live session ("user:epoch:session"), in one query; else None."""
        try:
            user_id, epoch, key = session_id.split(":")
            user_id, epoch = int(user_id), int(epoch)
        except ValueError:
            return None
        # The cookies are signed, but a key the database would refuse (NUL) is never valid.
        if not 0 < user_id <= MAX_ID or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
            return None
        row = db.session.execute(
            select(User, UserSession.expires_at)
            .join(UserSession, UserSession.user_id == User.id)
            .where(UserSession.id == key, User.id == user_id)
        ).first()
        if row is None:
            return None
        user, expires_at = row
        if user.session_epoch != epoch or not user.active or expires_at <= utcnow():
            return None
        user.session_key = key
        return user


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

    def latest_message_id(self) -> int:
        """Id of the newest message here, 0 when empty."""
        return db.session.scalar(
            select(func.coalesce(func.max(Message.id), 0)).where(
                Message.conversation_id == self.id
            )
        )

    def is_member(self, user: User) -> bool:
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

    def recent_messages(self, limit: int, before_id: int | None = None) -> list[Message]:
        """Up to `limit` messages, oldest first, optionally older than `before_id`."""
        query = select(Message).where(
            Message.conversation_id == self.id, Message.deleted_at.is_(None)
        )
        if before_id is not None:
            query = query.where(Message.id < before_id)
        rows = db.session.scalars(query.order_by(Message.id.desc()).limit(limit)).all()
        return list(reversed(rows))


class Membership(db.Model):
    """A user's seat in a conversation, with how far they have read."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("conversation_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    last_read_id: Mapped[int] = mapped_column(default=0)

    conversation: Mapped[Conversation] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship()

    @staticmethod
    def advance(pointers: dict[tuple[int, int], int]) -> None:
        """Move many read pointers forward in one transaction ({(user, conv): id}).

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
        db.session.commit()


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

    def shown_in(self) -> Conversation | None:
        """The conversation whose (not deleted) message shows this image, if any."""
        return db.session.scalar(
            select(Conversation)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Message.image_id == self.id, Message.deleted_at.is_(None))
        )


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

    author: Mapped[User] = relationship(lazy="joined")
    conversation: Mapped[Conversation] = relationship()
    image: Mapped[Image | None] = relationship(lazy="joined")

    @classmethod
    def post(
        cls,
        conversation: Conversation,
        author: User,
        body: str,
        client_id: str,
        image: Image | None = None,
        *,
        commit: bool = True,
    ) -> tuple[Message, bool]:
        """Store a message once per (author, client_id); return it and whether it is new.

        The transaction is short and holds no network I/O: the caller publishes only
        after the commit, so an event never announces an uncommitted row. With
        commit=False the caller commits, and may first render the message while it and
        its author and conversation are still loaded (a commit expires them).
        """
        # Insert first: a resend is rare, and the unique (author, client_id) catches it.
        now = utcnow()
        message = cls(
            conversation_id=conversation.id,
            author_id=author.id,
            body=body,
            client_id=client_id,
            image=image,
            created_at=now,
        )
        db.session.add(message)
        conversation.last_message_at = now  # written by the same flush as the message
        try:
            db.session.flush()
        except IntegrityError:  # a resend: this composer's message is already stored
            db.session.rollback()
            return db.session.scalar(
                select(cls).where(cls.author_id == author.id, cls.client_id == client_id)
            ), False
        # The author has read everything up to their own message. A plain (Core) UPDATE:
        # no object in the session needs to learn of it.
        db.session.execute(
            _statements().author_read,
            {"reader": author.id, "conversation": conversation.id, "message": message.id},
        )
        if commit:
            db.session.commit()
        return message, True

    @staticmethod
    def text_problem(text: str, limit: int, noun: str = "Messages") -> str | None:
        """What is wrong with a message's (stripped) text for storing it, or None."""
        if len(text) > limit:
            return f"{noun} can be at most {limit} characters; yours has {len(text)}. Shorten it."
        if "\x00" in text:  # PostgreSQL cannot store it, and no one types it
            return f"{noun} cannot contain NUL characters. Remove them and send again."
        return None

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
        return db.session.execute(
            _statements().previous, {"conversation": self.conversation_id, "message": self.id}
        ).first()

    def continues(self, previous: Message | None) -> bool:
        """Tell whether this message joins the previous one's group (same author, soon after)."""
        return (
            previous is not None
            and previous.author_id == self.author_id
            and not self.starts_day(previous)
            and self.created_at - previous.created_at < GROUP_GAP
        )

    def starts_day(self, previous: Message | None) -> bool:
        """Tell whether a day separator goes before this message."""
        return previous is None or previous.created_at.date() != self.created_at.date()


class AuditEntry(db.Model):
    """A record of an administrator's sensitive action."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    target_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    actor: Mapped[User] = relationship(foreign_keys=[actor_id])
    target_user: Mapped[User | None] = relationship(foreign_keys=[target_user_id])
    conversation: Mapped[Conversation | None] = relationship()

    @classmethod
    def record(cls, actor: User, action: str, *, conversation_id: int | None = None,
               target_user_id: int | None = None, detail: str = "") -> AuditEntry:
        """Add an entry to the audit log (committed with the caller's transaction)."""
        entry = cls(actor_id=actor.id, action=action, conversation_id=conversation_id,
                    target_user_id=target_user_id, detail=detail[:2000])
        db.session.add(entry)
        return entry


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


def unread_counts(user_id: int) -> dict[int, int]:
    """Unread messages per conversation for a user (others' messages past the pointer)."""
    rows = db.session.execute(
        unread_query(Membership.conversation_id)
        .where(Membership.user_id == user_id)
        .group_by(Membership.conversation_id)
    )
    return {conversation_id: count for conversation_id, count in rows}


def direct_key(a: int, b: int) -> str:
    """The key of the private chat between two users."""
    low, high = sorted((a, b))
    return f"dm:{low}:{high}"


def open_direct(user: User, peer: User) -> Conversation:
    """The private chat between two users, created (with both seats) on first use."""
    conversation = Conversation._get_or_create(direct_key(user.id, peer.id))
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
    db.session.commit()
    return conversation


class _Statements:
    """Statements run for every message, built once: building a statement from its
    Python expression costs more than SQLAlchemy's cached compile of it (~50 µs each)."""

    def __init__(self):
        membership = Membership.__table__
        self.author_read = (
            update(membership)
            .where(
                membership.c.user_id == bindparam("reader"),
                membership.c.conversation_id == bindparam("conversation"),
                membership.c.last_read_id < bindparam("message"),
            )
            .values(last_read_id=bindparam("message"))
        )
        self.previous = (
            select(Message.author_id, Message.created_at)
            .where(
                Message.conversation_id == bindparam("conversation"),
                Message.id < bindparam("message"),
                Message.deleted_at.is_(None),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )


@cache
def _statements() -> _Statements:
    """The statements, built on first use (the mapped classes exist by then)."""
    return _Statements()
