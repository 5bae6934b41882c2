"""The data model: users, conversations, memberships with read pointers, messages.

Who commits: models add and flush, handlers commit. A model method changes rows in
the caller's session and at most flushes them (to learn an id, or to let a unique
constraint speak); the request view, the socket handler, the command or the
background flusher that called it commits, and publishes any event only after that.
So one handler's changes are one transaction, and no model method ends a
transaction its caller is still using. The one exception, User.authenticate, ends
a read-only transaction before hashing (see there).

Modules build on each other one way: messages (Message, Image) <- conversations
(Conversation, Membership) <- users (User, UserSession, AuditEntry).
"""

from ..extensions import db
from .base import GROUP_GAP, MAX_ID, PUBLIC_KEY, USERNAME_RE, utcnow
from .conversations import Conversation, Membership
from .messages import Image, Message
from .reactions import REACTIONS, Mention, Reaction, recount_mentions, unread_mentions
from .searches import RecentSearch
from .users import AuditEntry, User, UserSession
from .invites import Invite

__all__ = [
    "GROUP_GAP", "MAX_ID", "PUBLIC_KEY", "USERNAME_RE", "AuditEntry", "Conversation",
    "Image", "Invite", "Membership", "Mention", "Message", "REACTIONS", "Reaction", "RecentSearch", "User",
    "UserSession", "db", "recount_mentions", "unread_mentions", "utcnow",
]
