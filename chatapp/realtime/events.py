"""What happened, told to every process: published only after the transaction commits."""

from __future__ import annotations

from flask import render_template
from sqlalchemy import update

from .. import metrics
from . import get


def publish(event: dict) -> None:
    """Send an event to every process's hub (this one included)."""
    metrics.published(event)
    get().backplane.publish(event)


def message_created(message) -> None:
    """Announce a stored (committed) message."""
    publish(message_event(message))


def message_event(message) -> dict:
    """The event announcing a message, its push rendered once, here, for every viewer.

    Best built before the commit, while the message, its author and conversation are
    loaded: after it, rendering would first reload each of them.
    """
    conversation = message.conversation
    return {
        "type": "message_created",
        "conversation_id": conversation.id,
        "message_id": message.id,
        "author_id": message.author_id,
        "member_ids": conversation.member_ids(),
        "html": render_template("pushes/message_created.html", message=message),
    }


def mark_read(user_id: int, conversation) -> None:
    """The user is looking at a conversation: read it all, and clear its badge everywhere."""
    from ..models import Membership, db

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
    db.session.commit()
    publish(
        {
            "type": "conversation_read",
            "user_id": user_id,
            "conversation_id": conversation.id,
            "message_id": latest,
        }
    )


def reads_saved(batch: dict[tuple[int, int], int]) -> None:
    """A batch of read pointers was saved: other processes clear those badges too.

    One event for the whole batch: a busy room's viewers all read each message, and an
    event per viewer would be a publish (and a delivery on every worker) per viewer.
    """
    if batch and get().backplane.remote:
        publish(
            {
                "type": "conversations_read",
                "reads": [[u, c, m] for (u, c), m in batch.items()],
            }
        )


def refresh_sidebar(user_id: int) -> None:
    """Re-render the sidebar in each of a user's local sockets (private chat activity)."""
    from ..chat import sidebar_context
    from ..models import Conversation, User, db

    realtime = get()
    clients = realtime.hub.clients_of(user_id)
    if not clients:
        return
    user = db.session.get(User, user_id)
    if user is None:
        return
    # The hub's in-memory counts are newer than the database: read pointers of what
    # is on screen are saved in batches a moment later.
    state = realtime.hub.users.get(user_id)
    unread = {c: n for c, n in state.unread.items() if n} if state else None
    rendered: dict[int, str] = {}
    for client in clients:
        if client.conversation_id not in rendered:
            current = db.session.get(Conversation, client.conversation_id)
            context = sidebar_context(user, current, unread)
            realtime.hub.sidebar_rendered(user_id, context["chats"])
            rendered[client.conversation_id] = render_template(
                "pushes/sidebar_changed.html", sidebar=context, title=client.title
            )
        client.push(rendered[client.conversation_id])


def message_deleted(message) -> None:
    """A moderator hid a message: every open page showing it removes it."""
    publish(
        {
            "type": "message_deleted",
            "conversation_id": message.conversation_id,
            "message_id": message.id,
        }
    )


def user_deactivated(user_id: int) -> None:
    """An account was deactivated: every process closes that user's sockets."""
    publish({"type": "user_deactivated", "user_id": user_id})


def recount_unread(user_ids: list[int], conversation_id: int) -> dict[int, int]:
    """Unread messages in one conversation for several users, in one query."""
    from ..models import Membership, db, unread_query

    rows = db.session.execute(
        unread_query(Membership.user_id)
        .where(
            Membership.conversation_id == conversation_id,
            Membership.user_id.in_(user_ids),
        )
        .group_by(Membership.user_id)
    )
    counts = {user_id: count for user_id, count in rows}
    db.session.rollback()  # the hub holds no transaction open
    return counts
