"""Chat pages and the HTML fragments they load: rooms, private chats, history, people."""

import functools

from flask_babel import gettext as _
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import bindparam, select

from .database import like_literal
from .models import Conversation, Membership, User, db
from .posting import new_client_id
from .realtime import events
from .text import UNENCODABLE, encodable
from .views import (
    SIDEBAR_PEOPLE, id_arg, member_conversation_or_404, room_members, sidebar_context,
)

bp = Blueprint("chat", __name__)


def render_conversation(conversation: Conversation):
    """The chat page for a conversation the user may see; opening it marks it read."""
    latest, moved = Membership.mark_read(current_user.id, conversation)
    if moved:
        db.session.commit()
    events.conversation_read(current_user.id, conversation.id, latest)
    messages, shown_before = conversation.recent_messages_after(
        current_app.config["HISTORY_PAGE_SIZE"])
    peer = conversation.peer_of(current_user)
    return render_template(
        "chat/conversation.html",
        conversation=conversation,
        members=room_members(conversation) if conversation.is_room else [],
        peer=peer,
        title=conversation.title_for(current_user, peer),
        messages=messages,
        shown_before=shown_before,
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
    """A conversation page: the public room, a room, or one of the user's private chats.

    An open room the user is not in offers to join it (showing none of its messages).
    """
    found = db.session.get(Conversation, conversation_id)
    if found is not None and found.is_room and not found.members_only \
            and not found.is_member(current_user):
        return render_template("rooms/join.html", room=found, title=found.name,
                               members=found.member_count(),
                               sidebar=sidebar_context(current_user, None))
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
        select(Conversation).where(
            Conversation.key == Conversation.direct_key(current_user.id, peer.id)
        )
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
    conversation = Conversation.direct(current_user, _direct_peer(username))
    db.session.commit()
    return redirect(url_for("chat.conversation", conversation_id=conversation.id), 303)


@bp.route("/c/<int:conversation_id>/messages")
@login_required
def history(conversation_id: int):
    """Older messages of a conversation, as a fragment, before a given message id."""
    conversation = member_conversation_or_404(conversation_id)
    before = id_arg("before")
    if before is None:
        abort(400, _("Say which message to load history before (?before=<id>)."))
    messages, shown_before = conversation.recent_messages_after(
        current_app.config["HISTORY_PAGE_SIZE"], before_id=before
    )
    return render_template("partials/_history.html", conversation=conversation,
                           messages=messages, shown_before=shown_before)


@bp.get("/sidebar")
@login_required
def sidebar():
    """The sidebar alone, as a fragment: the HTML the socket pushes when it changes.

    `?c=<id>` highlights a conversation the user may see (404 otherwise, as if absent).
    """
    current = id_arg("c")
    current = member_conversation_or_404(current) if current is not None else None
    return render_template("partials/_sidebar.html", sidebar=sidebar_context(current_user, current))


@functools.cache
def _people_named():
    """The people search's statement, built once (it runs as the person types)."""
    return (
        select(User)
        .where(
            User.username_key.like(bindparam("pattern"), escape="\\"),
            User.id != bindparam("user"),
            User.active.is_(True),
        )
        .order_by(User.username_key)
        .limit(SIDEBAR_PEOPLE)
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
        found = db.session.scalars(_people_named(), {
            "pattern": like_literal(q) + "%", "user": current_user.id}).all()
    return render_template("partials/_people_results.html", q=q, found=found)
