"""What the pages share: the sidebar, membership checks, and safe request arguments.

A plain module, not a blueprint: chat, admin, auth and the socket route all use it.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

from flask import abort, current_app, request, send_file, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.security import safe_join

from .models import MAX_ID, Conversation, Image, Membership, User, db
from .models.conversations import ROOM_PREFIX

log = logging.getLogger(__name__)

SIDEBAR_PEOPLE = 20  # other users listed without searching; find the rest by name
IMAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def id_arg(name: str, maximum: int = MAX_ID) -> int | None:
    """A positive whole-number query argument up to `maximum`; None if absent or not one."""
    value = request.args.get(name, type=int)
    return value if value is not None and 1 <= value <= maximum else None


def member_conversation_or_404(conversation_id: int) -> Conversation:
    """The conversation if the current user may see it; 404 otherwise, as if absent."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or not conversation.is_member(current_user):
        abort(404)
    return conversation


def safe_next(target: str | None) -> str:
    """Return a local path to go to after logging in; never another site."""
    if target:
        parts = urlsplit(target)
        if (
            not parts.scheme
            and not parts.netloc
            and target.startswith("/")
            and not target.startswith("//")
            and "\\" not in target
            # Control characters: browsers drop tabs and newlines ("/\t/evil"), and a
            # Location header cannot hold a line break.
            and target.isprintable()
        ):
            return target
    return url_for("chat.index")


def sidebar_context(
    user: User, current: Conversation | None, unread: dict[int, int] | None = None
) -> dict:
    """What the Conversations sidebar shows for a user: rooms, chats, people, badges.

    `unread` is this process's live count for a connected user; without it the counts
    are read from the database.
    """
    room = Conversation.public_room()
    unread = dict(unread) if unread is not None else Membership.unread_counts(user.id)
    if current is not None:
        # The conversation on screen is being read (its pointer may be saved a moment later).
        unread.pop(current.id, None)
    chats = _private_chats(user)
    rooms = _rooms_of(user)
    chatted = {peer.id for _, peer in chats}
    people = db.session.scalars(
        select(User)
        .where(User.id != user.id, User.active.is_(True), User.id.not_in(chatted or [0]))
        .order_by(User.username_key)
        .limit(SIDEBAR_PEOPLE)
    ).all()
    return {
        "room": room,
        "rooms": rooms,
        "chats": chats,
        # What heads each group: a message there reorders nothing (the hub skips a render).
        "heads": {c.id for c in rooms[:1]} | {c.id for c, _ in chats[:1]},
        "people": people,
        "unread": unread,
        "total_unread": sum(unread.values()),
        "current": current,
        "user": user,
    }


def room_members(conversation: Conversation) -> list[User]:
    """A room's members by name (one query)."""
    return db.session.scalars(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.conversation_id == conversation.id)
        .order_by(User.username_key)
    ).all()


def _newest_first():
    """Most recent activity first; never-used conversations last, newest made first."""
    return (
        Conversation.last_message_at.is_(None),
        Conversation.last_message_at.desc(),
        Conversation.id.desc(),
    )


def _rooms_of(user: User) -> list[Conversation]:
    """The rooms the user is in (not the public room), most recently active first."""
    return db.session.scalars(
        select(Conversation)
        .join(Membership, Membership.conversation_id == Conversation.id)
        .where(Membership.user_id == user.id, Conversation.key.startswith(ROOM_PREFIX))
        .order_by(*_newest_first())
    ).all()


def _private_chats(user: User) -> list[tuple[Conversation, User]]:
    """The user's private chats with their peers, most recently active first."""
    mine = select(Membership.conversation_id).where(Membership.user_id == user.id)
    rows = db.session.execute(
        select(Conversation, User)
        .join(Membership, Membership.conversation_id == Conversation.id)
        .join(User, User.id == Membership.user_id)
        .where(
            Conversation.id.in_(mine),
            Conversation.key.startswith("dm:"),
            Membership.user_id != user.id,
        )
        .order_by(*_newest_first())
    ).all()
    return [(conversation, peer) for conversation, peer in rows]


def send_image(image: Image, thumbnail: bool):
    """The stored file of an image, for a caller that has checked who may see it."""
    full = safe_join(current_app.config["UPLOAD_DIR"], image.thumb_path if thumbnail else image.path)
    if full is None or not os.path.isfile(full):
        log.warning("image %s is missing its file", image.id)
        abort(404)
    extension = full.rsplit(".", 1)[-1]
    response = send_file(
        full,
        mimetype=image.content_type,
        conditional=True,
        etag=True,
        download_name=f"image-{image.id}{'-thumb' if thumbnail else ''}.{extension}",
    )
    # Private content: browsers may keep it, shared caches may not.
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Even if a browser rendered the file as a document, it could run nothing.
    response.headers["Content-Security-Policy"] = IMAGE_CSP
    response.vary.add("Cookie")
    return response
