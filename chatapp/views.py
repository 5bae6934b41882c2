"""What the pages share: the sidebar, membership checks, and safe request arguments.

A plain module, not a blueprint: chat, admin, auth and the socket route all use it.
"""

from __future__ import annotations

from flask_babel import gettext as _
import functools
import logging
from urllib.parse import urlsplit

from flask import abort, current_app, request, url_for
from flask_login import current_user
from sqlalchemy import bindparam, select

from .models import MAX_ID, Conversation, Image, Membership, User, db, unread_mentions
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
    # Mentions come from the database even for a push: they are rare, and a pointer saved
    # a moment late only keeps a badge a moment longer.
    mentions = unread_mentions(user.id)
    if current is not None:
        # The conversation on screen is being read (its pointer may be saved a moment later).
        unread.pop(current.id, None)
        mentions.pop(current.id, None)
    chats = _private_chats(user)
    rooms = _rooms_of(user)
    chatted = {peer.id for _, peer in chats}
    people = db.session.scalars(_statements().people,
                                {"user": user.id, "chatted": sorted(chatted) or [0]}).all()
    return {
        "room": room,
        "rooms": rooms,
        "chats": chats,
        # What heads each group: a message there reorders nothing (the hub skips a render).
        "heads": {c.id for c in rooms[:1]} | {c.id for c, _ in chats[:1]},
        "people": people,
        "unread": unread,
        "total_unread": sum(unread.values()),
        "mentions": mentions,
        "total_mentions": sum(mentions.values()),
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
    return db.session.scalars(_statements().rooms, {"user": user.id}).all()


def _private_chats(user: User) -> list[tuple[Conversation, User]]:
    """The user's private chats with their peers, most recently active first."""
    rows = db.session.execute(_statements().chats, {"user": user.id}).all()
    return [(conversation, peer) for conversation, peer in rows]


class _Statements:
    """The sidebar's statements, built once: every page runs them, and building one from
    its Python expression costs more than running it on a small table."""

    def __init__(self):
        user = bindparam("user")
        self.rooms = (
            select(Conversation)
            .join(Membership, Membership.conversation_id == Conversation.id)
            .where(Membership.user_id == user, Conversation.key.startswith(ROOM_PREFIX))
            .order_by(*_newest_first())
        )
        mine = select(Membership.conversation_id).where(Membership.user_id == user)
        self.chats = (
            select(Conversation, User)
            .join(Membership, Membership.conversation_id == Conversation.id)
            .join(User, User.id == Membership.user_id)
            .where(
                Conversation.id.in_(mine),
                Conversation.key.startswith("dm:"),
                Membership.user_id != user,
            )
            .order_by(*_newest_first())
        )
        self.people = (
            select(User)
            .where(User.id != user, User.active.is_(True),
                   User.id.not_in(bindparam("chatted", expanding=True)))
            .order_by(User.username_key)
            .limit(SIDEBAR_PEOPLE)
        )


@functools.cache
def _statements() -> _Statements:
    return _Statements()


def send_image(image: Image, thumbnail: bool):
    """The stored file of an image, for a caller that has checked who may see it.

    Streamed from the store (a folder or a bucket) through the app, with the headers the
    app decides: the bucket stays private and never meets a browser (docs/deployment.md).
    """
    from . import storage

    key = image.thumb_path if thumbnail else image.path
    try:
        stored = storage.current().stream(key)
    except (FileNotFoundError, ValueError):
        log.warning("image %s is missing its file", image.id)
        abort(404)
    except (storage.StorageUnavailable, OSError) as exc:
        log.error("image %s cannot be read from the store: %s", image.id, exc)
        return storage_unavailable()
    extension = key.rsplit(".", 1)[-1]
    name = f"image-{image.id}{'-thumb' if thumbnail else ''}.{extension}"
    return stored_response(stored, image.content_type, last_modified=stored.modified,
                           filename=name)


def stored_response(stored, mimetype: str, last_modified=None, filename: str | None = None):
    """A stored picture streamed to a person the caller has let see it: private caching,
    nosniff and a sandboxing CSP, answered 304 when the browser already has it."""
    response = current_app.response_class(stored.chunks, mimetype=mimetype,
                                          direct_passthrough=True)
    response.call_on_close(stored.close)
    response.content_length = stored.size
    response.set_etag(stored.etag)
    if last_modified is not None:
        response.last_modified = last_modified
    if filename:
        response.headers["Content-Disposition"] = f"inline; filename={filename}"
    # Private content: browsers may keep it, shared caches may not.
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Even if a browser rendered the file as a document, it could run nothing.
    response.headers["Content-Security-Policy"] = IMAGE_CSP
    response.vary.add("Cookie")
    response = response.make_conditional(request)
    if response.status_code == 304:
        stored.close()  # nothing of the body is sent
    return response


def storage_unavailable():
    """503 for an image whose store cannot be read right now (never a 500)."""
    from flask import render_template

    message = _("Images cannot be loaded right now. Try again in a minute.")
    response = current_app.make_response((render_template("error.html", code=503, message=message), 503))
    response.headers["Retry-After"] = "30"
    return response
