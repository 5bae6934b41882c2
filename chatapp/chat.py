"""Chat pages and the HTML fragments they load: rooms, private chats, history, people."""

import uuid

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from .models import (
    MAX_ID,
    Conversation,
    Membership,
    User,
    db,
    direct_key,
    like_literal,
    open_direct,
    unread_counts,
)
from .realtime import events
from .text import UNENCODABLE, encodable

bp = Blueprint("chat", __name__)

SIDEBAR_PEOPLE = 20  # other users listed without searching; find the rest by name


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


def sidebar_context(
    user: User, current: Conversation | None, unread: dict[int, int] | None = None
) -> dict:
    """What the Conversations sidebar shows for a user: rooms, chats, people, badges.

    `unread` is this process's live count for a connected user; without it the counts
    are read from the database.
    """
    room = Conversation.public_room()
    unread = dict(unread) if unread is not None else unread_counts(user.id)
    if current is not None:
        # The conversation on screen is being read (its pointer may be saved a moment later).
        unread.pop(current.id, None)
    chats = _private_chats(user)
    chatted = {peer.id for _, peer in chats}
    people = db.session.scalars(
        select(User)
        .where(User.id != user.id, User.active.is_(True), User.id.not_in(chatted or [0]))
        .order_by(User.username_key)
        .limit(SIDEBAR_PEOPLE)
    ).all()
    return {
        "room": room,
        "chats": chats,
        "people": people,
        "unread": unread,
        "total_unread": sum(unread.values()),
        "current": current,
        "user": user,
    }


def _private_chats(user: User) -> list[tuple[Conversation, User]]:
    """The user's private chats with their peers, most recently active first."""
    mine = select(Membership.conversation_id).where(Membership.user_id == user.id)
    rows = db.session.execute(
        select(Conversation, User)
        .join(Membership, Membership.conversation_id == Conversation.id)
        .join(User, User.id == Membership.user_id)
        .where(
            Conversation.id.in_(mine),
            Conversation.key != "public",
            Membership.user_id != user.id,
        )
        .order_by(
            Conversation.last_message_at.is_(None),
            Conversation.last_message_at.desc(),
            Conversation.id.desc(),
        )
    ).all()
    return [(conversation, peer) for conversation, peer in rows]


def new_client_id() -> str:
    """A fresh id for the composer, so a resend of the same text is recognised."""
    return str(uuid.uuid4())


def render_conversation(conversation: Conversation):
    """The chat page for a conversation the user may see; opening it marks it read."""
    events.mark_read(current_user.id, conversation)
    messages = conversation.recent_messages(current_app.config["HISTORY_PAGE_SIZE"])
    peer = None
    if not conversation.is_public:
        peer_id = next(i for i in conversation.member_ids() if i != current_user.id)
        peer = db.session.get(User, peer_id)
    return render_template(
        "chat/conversation.html",
        conversation=conversation,
        peer=peer,
        title=peer.username if peer else "Public room",
        messages=messages,
        client_id=new_client_id(),
        sidebar=sidebar_context(current_user, conversation),
    )


@bp.route("/")
@login_required
def index():
    """The public room."""
    return render_conversation(Conversation.public_room())


@bp.route("/c/<int:conversation_id>")
@login_required
def conversation(conversation_id: int):
    """A conversation page: the public room or one of the user's private chats."""
    return render_conversation(member_conversation_or_404(conversation_id))


def _direct_peer(username: str) -> User:
    """The active user a private chat would be with; 404 for nobody, oneself or inactive."""
    peer = User.by_username(username) if encodable(username) else None
    if peer is None or peer.id == current_user.id or not peer.active:
        abort(404)
    return peer


@bp.get("/dm/<username>")
@login_required
def direct(username: str):
    """The private chat with another user, or a page offering to start it.

    Opening changes nothing: a link from another site is a top-level navigation that
    carries the (SameSite=Lax) cookie, so a GET that created the chat would let any page
    put its author into anyone's chat list. Starting one is a POST with a CSRF token.
    """
    peer = _direct_peer(username)
    conversation = db.session.scalar(
        select(Conversation).where(Conversation.key == direct_key(current_user.id, peer.id))
    )
    if conversation is not None and conversation.is_member(current_user):
        return redirect(url_for("chat.conversation", conversation_id=conversation.id))
    return render_template(
        "chat/start.html", peer=peer, title=peer.username, sidebar=sidebar_context(current_user, None)
    )


@bp.post("/dm/<username>")
@login_required
def start_direct(username: str):
    """Start (or reopen) the private chat with another user and go to it."""
    conversation = open_direct(current_user, _direct_peer(username))
    return redirect(url_for("chat.conversation", conversation_id=conversation.id), 303)


@bp.route("/c/<int:conversation_id>/messages")
@login_required
def history(conversation_id: int):
    """Older messages of a conversation, as a fragment, before a given message id."""
    conversation = member_conversation_or_404(conversation_id)
    before = id_arg("before")
    if before is None:
        abort(400, "Say which message to load history before (?before=<id>).")
    messages = conversation.recent_messages(
        current_app.config["HISTORY_PAGE_SIZE"], before_id=before
    )
    return render_template(
        "partials/_history.html", conversation=conversation, messages=messages
    )


@bp.route("/people")
@login_required
def people():
    """Find people by name (a fragment for the sidebar's search box)."""
    q = (request.args.get("q") or "").strip().lower()[:32]
    if not encodable(q):
        abort(400, UNENCODABLE)
    found = []
    if q:
        pattern = like_literal(q) + "%"
        found = db.session.scalars(
            select(User)
            .where(
                User.username_key.like(pattern, escape="\\"),
                User.id != current_user.id,
                User.active.is_(True),
            )
            .order_by(User.username_key)
            .limit(SIDEBAR_PEOPLE)
        ).all()
    return render_template("partials/_people_results.html", q=q, found=found)
