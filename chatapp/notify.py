""""Notify me": which messages of a conversation count toward a member's unread badge and
the page title. The one place that decides it, in memory (the hub, per recipient of a
pushed message) and in SQL (the database recount): the two must agree.

Levels: EVERY (every message, the default), MENTIONS (only messages that mention the
member), NOTHING. The conversation stays readable at every level; only counting changes.
"""

from __future__ import annotations

from .i18n import N_

EVERY = "all"
MENTIONS = "mentions"
NOTHING = "none"
# English, marked (N_) for translation where they are shown.
LEVELS = {EVERY: N_("Every message"), MENTIONS: N_("Mentions only"), NOTHING: N_("Nothing")}


def counts(level: str, user_id: int, event: dict) -> bool:
    """Whether a pushed message (its message_created event) counts as unread for a member.
    The event lists the people the message mentions in "mention_ids"."""
    if level == NOTHING:
        return False
    if level == MENTIONS:
        return user_id in event.get("mention_ids", ())
    return True


def counted_clause(membership, message):
    """The SQL condition, on a membership row and a message row, that the message counts
    toward that member's unread count (the same rule as counts())."""
    from sqlalchemy import and_, exists, or_

    from .models import Mention

    mentioned = exists().where(Mention.message_id == message.id,
                               Mention.user_id == membership.user_id)
    return or_(membership.notify == EVERY, and_(membership.notify == MENTIONS, mentioned))
