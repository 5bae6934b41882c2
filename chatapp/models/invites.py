"""Invitations: links an administrator hands out when registration is by invite only."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, String, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import utcnow
from .users import User

# Why an invite link cannot be used (shown on the registration page, translated there).
REVOKED, EXPIRED, USED_UP, UNKNOWN = "revoked", "expired", "used_up", "unknown"


class Invite(db.Model):
    """A registration link: optional expiry and number of uses, revocable, regenerable."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The secret in the link. Kept readable so that an administrator can copy the link
    # again later; it grants only what the link grants (creating one account).
    token: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    max_uses: Mapped[int | None] = mapped_column(default=None)
    uses: Mapped[int] = mapped_column(default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    created_by: Mapped[User] = relationship()

    @classmethod
    def create(cls, admin: User, expires_at: datetime | None, max_uses: int | None) -> Invite:
        """A fresh link (the caller commits)."""
        invite = cls(token=secrets.token_urlsafe(24), created_by_id=admin.id,
                     expires_at=expires_at, max_uses=max_uses)
        db.session.add(invite)
        db.session.flush()
        return invite

    def regenerate(self) -> None:
        """A new secret for the same link: the old URL stops working (the caller commits)."""
        self.token = secrets.token_urlsafe(24)

    def revoke(self) -> None:
        """The link stops working for good (the caller commits)."""
        if self.revoked_at is None:
            self.revoked_at = utcnow()

    @property
    def problem(self) -> str | None:
        """Why this link cannot be used now, or None."""
        if self.revoked_at is not None:
            return REVOKED
        if self.expires_at is not None and self.expires_at <= utcnow():
            return EXPIRED
        if self.max_uses is not None and self.uses >= self.max_uses:
            return USED_UP
        return None

    @classmethod
    def by_token(cls, token: str | None) -> Invite | None:
        """The invite with this secret, if any."""
        if not token or len(token) > 64 or "\x00" in token:
            return None
        return db.session.scalar(select(cls).where(cls.token == token))

    def use(self) -> bool:
        """Count one registration, atomically: False when the last use went meanwhile.

        One conditional UPDATE, so two people on the last use cannot both pass.
        """
        now = utcnow()
        table = Invite
        result = db.session.execute(
            update(table)
            .where(table.id == self.id, table.revoked_at.is_(None),
                   (table.expires_at.is_(None)) | (table.expires_at > now),
                   (table.max_uses.is_(None)) | (table.uses < table.max_uses))
            .values(uses=table.uses + 1)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1
