"""People: accounts, and the audit log of what administrators did to them."""

from __future__ import annotations

import functools
import re
import secrets
from datetime import datetime, timedelta

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String, Text, delete, false, func, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .. import passwords
from ..extensions import db
from .base import MAX_ID, utcnow
from .conversations import Conversation, Membership

# pg_advisory_xact_lock's key for the first-run check (any constant no other lock uses).
FIRST_RUN_LOCK = 0x63686174


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
    # Bots (bots.py): post by HTTP with a key, never log in. Only the key's SHA-256 is kept.
    is_bot: Mapped[bool] = mapped_column(default=False, server_default=false())
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True,
                                                      default=None)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    # Chosen language (a locale of chatapp.i18n.LANGUAGES) and IANA time zone; None: the
    # browser's Accept-Language, and UTC. Unknown values fall back the same way.
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    time_zone: Mapped[str | None] = mapped_column(String(64), default=None)
    # Settings (account.py): a name shown beside the username, and a picture's storage key
    # (square, re-encoded); None shows the username and the initials.
    display_name: Mapped[str | None] = mapped_column(String(50), default=None)
    avatar_key: Mapped[str | None] = mapped_column(String(128), default=None)
    # When the person's last socket (on any worker) closed and its grace period ran out:
    # "Last seen 5 minutes ago". Written once per offline change, never per socket.
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    # The signed-in session (UserSession id) this object was loaded for: set by the login
    # and by the user loader, never stored on the row.
    session_key = None
    session_last_seen = None

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
        self.password_hash = passwords.hash_password(password)

    def check_password(self, password: str) -> bool:
        """Tell whether the password matches, rehashing when parameters changed."""
        stored = self.password_hash
        if not passwords.verify(stored, password):
            return False
        if passwords.needs_rehash(stored):
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
        user = cls.by_username(username)
        if user is not None and user.is_bot:  # bots never log in: as if unknown
            user = None
        stored = user.password_hash if user is not None else None
        db.session.rollback()  # read only so far; gives the connection back to the pool
        if stored is None:
            stored = passwords.dummy_hash()
        if not passwords.verify(stored, password) or user is None:
            return None
        if passwords.needs_rehash(stored):
            user.set_password(password)  # the caller commits
        return user

    @classmethod
    def any_exist(cls) -> bool:
        """Whether anyone has an account yet (bots aside): else the next one is the first."""
        return db.session.scalar(select(cls.id).where(cls.is_bot.is_(False)).limit(1)) is not None

    @classmethod
    def admin_exists(cls) -> bool:
        """Whether some active person administers this server."""
        return db.session.scalar(
            select(cls.id).where(cls.is_admin.is_(True), cls.active.is_(True),
                                 cls.is_bot.is_(False)).limit(1)
        ) is not None

    def end_other_sessions(self, keep: str | None) -> list[str]:
        """End every session of this user but `keep`; their keys (the caller commits, then
        publishes events.session_ended for each, so their sockets close on every worker)."""
        keys = list(db.session.scalars(
            select(UserSession.id).where(UserSession.user_id == self.id,
                                         UserSession.id != (keep or ""))
        ))
        if keys:
            db.session.execute(delete(UserSession).where(UserSession.id.in_(keys)))
        return keys

    @classmethod
    def register(cls, username: str, password: str) -> User:
        """Create an account and give it a seat in the public room, read up to now.

        Flushes (the name's unique constraint speaks here); the caller commits.
        """
        user = cls(username=username, username_key=username.lower())
        user.set_password(password)
        db.session.add(user)
        db.session.flush()
        room = Conversation.public_room()
        db.session.add(
            Membership(conversation=room, user=user, last_read_id=room.latest_message_id())
        )
        db.session.flush()
        return user

    @property
    def shown_name(self) -> str:
        """The display name, else the username."""
        return self.display_name or self.username

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

    def claim_first_run(self) -> bool:
        """Make this just-flushed account the first one's administrator, if it is the first.

        Two people registering on a fresh install at once must not both become admin (nor,
        on a closed server, both get in). The check runs under a lock held to the commit:
        on PostgreSQL an advisory lock, on SQLite the write lock this transaction already
        holds since its insert. False when someone else's account came first.
        """
        if db.session.get_bind().dialect.name == "postgresql":
            db.session.execute(select(func.pg_advisory_xact_lock(FIRST_RUN_LOCK)))
        someone_else = db.session.scalar(
            select(User.id).where(User.is_bot.is_(False), User.id != self.id).limit(1))
        if someone_else is not None:
            return False
        self.promote()
        return True

    def demote(self) -> None:
        """Take administration away from this user."""
        self.is_admin = False


TOUCH_EVERY = timedelta(minutes=1)


class UserSession(db.Model):
    """One signed-in browser: what logging out ends, on the server, for good."""

    __tablename__ = "user_sessions"

    # A random token, carried (signed) in the session and remember cookies.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # Shown in Settings → Sessions: the browser that logged in, from where, and when it
    # was last seen (touched at most once a minute: see touch()).
    user_agent: Mapped[str] = mapped_column(String(512), default="", server_default="")
    address: Mapped[str] = mapped_column(String(64), default="", server_default="")
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)

    @classmethod
    def start(cls, user: User, lifetime: timedelta, user_agent: str = "",
              address: str = "") -> UserSession:
        """Open a session for the user, valid for `lifetime` (the caller commits)."""
        now = utcnow()
        # Each login sweeps the user's expired records, so they do not pile up.
        db.session.execute(delete(cls).where(cls.user_id == user.id, cls.expires_at <= now))
        record = cls(id=secrets.token_urlsafe(32), user_id=user.id, expires_at=now + lifetime,
                     user_agent=(user_agent or "")[:512], address=(address or "")[:64],
                     last_seen_at=now)
        db.session.add(record)
        user.session_key = record.id
        return record

    @staticmethod
    def end(session_key: str) -> None:
        """End one session: its cookies, copied or not, are refused (the caller commits)."""
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
        row = db.session.execute(_session_user(), {"key": key, "user": user_id}).first()
        if row is None:
            return None
        user, expires_at, last_seen = row
        now = utcnow()
        if user.session_epoch != epoch or not user.active or expires_at <= now:
            return None
        user.session_key = key
        user.session_last_seen = last_seen
        return user

    @staticmethod
    def touch(session_key: str, last_seen: datetime | None) -> bool:
        """Note that this session was seen now, at most once a minute (one UPDATE then,
        none in between); True when it wrote (the caller commits)."""
        now = utcnow()
        if last_seen is not None and now - last_seen < TOUCH_EVERY:
            return False
        db.session.execute(
            update(UserSession).where(UserSession.id == session_key).values(last_seen_at=now)
        )
        return True

    @staticmethod
    def of_user(user_id: int) -> list[UserSession]:
        """A user's live sessions, most recently seen first."""
        return list(db.session.scalars(
            select(UserSession)
            .where(UserSession.user_id == user_id, UserSession.expires_at > utcnow())
            .order_by(UserSession.last_seen_at.desc(), UserSession.created_at.desc())
        ))


@functools.cache
def _session_user():
    """UserSession.load_user's statement, built once: every request runs it."""
    from sqlalchemy import bindparam

    return (select(User, UserSession.expires_at, UserSession.last_seen_at)
            .join(UserSession, UserSession.user_id == User.id)
            .where(UserSession.id == bindparam("key"), User.id == bindparam("user")))


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
