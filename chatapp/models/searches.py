"""What each person searched for lately, offered again under the search box."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow

KEPT = 5


class RecentSearch(db.Model):
    """One of a person's last few searches (the same text is kept once, at its latest)."""

    __tablename__ = "recent_searches"
    __table_args__ = (UniqueConstraint("user_id", "query"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    query: Mapped[str] = mapped_column(String(200))
    searched_at: Mapped[datetime] = mapped_column(default=utcnow)

    @classmethod
    def remember(cls, user_id: int, query: str) -> None:
        """Put a search first in the person's list, keeping only the last few (caller commits)."""
        db.session.execute(delete(cls).where(cls.user_id == user_id, cls.query == query))
        db.session.add(cls(user_id=user_id, query=query, searched_at=utcnow()))
        db.session.flush()
        keep = select(cls.id).where(cls.user_id == user_id).order_by(cls.id.desc()).limit(KEPT)
        db.session.execute(
            delete(cls).where(cls.user_id == user_id, cls.id.not_in(keep.scalar_subquery()))
        )

    @classmethod
    def of(cls, user_id: int) -> list[str]:
        """The person's recent searches, latest first."""
        return list(db.session.scalars(
            select(cls.query).where(cls.user_id == user_id).order_by(cls.id.desc()).limit(KEPT)
        ))

    @classmethod
    def clear(cls, user_id: int) -> None:
        """Forget every search of the person (caller commits)."""
        db.session.execute(delete(cls).where(cls.user_id == user_id))
