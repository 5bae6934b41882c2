"""What a person does to a message: edit, delete, react, link to it, and @mention people.

Each view only translates the request and calls the one road (posting.py); each looks
the message up through its conversation's membership, so a stranger gets 404.
"""

from __future__ import annotations

from flask_babel import gettext as _
import re

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import select

from . import posting
from .database import like_literal
from .models import REACTIONS, Conversation, Message, User, db
from .posting import Refusal
from .text import encodable
from .views import id_arg, member_conversation_or_404, sidebar_context

bp = Blueprint("messages", __name__)

SUGGESTIONS = 8  # people offered at most while typing an @name
# The "@name" being typed: the last word of the text, starting with "@".
TYPING_MENTION = re.compile(r"(?:^|\s)@([A-Za-z0-9_.-]{0,32})\Z")


def _shown_message_or_404(message_id: int) -> Message:
    """A shown message of a conversation the current user is a member of; 404 otherwise."""
    message = db.session.get(Message, message_id)
    if message is None or message.deleted_at is not None \
            or not message.conversation.is_member(current_user):
        abort(404)
    return message


def _own_message_or_404(message_id: int) -> Message:
    """A shown message the current user wrote (what Edit and Delete open); 404 otherwise."""
    message = _shown_message_or_404(message_id)
    if message.author_id != current_user.id:
        abort(404)
    return message


def _panel(message_id: int, **context):
    """The slot under a message for its confirmation or reaction picker (empty: closed)."""
    return render_template("messages/_panel.html", message_id=message_id, **context)


@bp.get("/messages/<int:message_id>")
@login_required
def show(message_id: int):
    """The message as everyone sees it (Cancel while editing)."""
    message = _shown_message_or_404(message_id)
    return render_template("pushes/message_article.html", message=message)


@bp.get("/messages/<int:message_id>/edit")
@login_required
def edit_form(message_id: int):
    """The message as a form with its text, for its author (others: 404)."""
    message = _own_message_or_404(message_id)
    return render_template("messages/edit.html", message=message, body=message.body)


@bp.post("/messages/<int:message_id>/edit")
@login_required
def edit(message_id: int):
    """Save an edit; everyone viewing sees the new text with "(edited)"."""
    message = _shown_message_or_404(message_id)
    body = request.form.get("body", "")
    try:
        posting.edit(message, current_user, body if isinstance(body, str) else "")
    except Refusal as refusal:
        db.session.rollback()
        if refusal.status == 404:
            abort(404)
        return render_template("messages/edit.html", message=message, body=body,
                               error=str(refusal)), refusal.status
    return render_template("pushes/message_article.html", message=message)


@bp.get("/messages/<int:message_id>/delete")
@login_required
def delete_form(message_id: int):
    """Ask the author to confirm deleting the message (others: 404)."""
    message = _own_message_or_404(message_id)
    return _panel(message.id, confirm=True)


@bp.post("/messages/<int:message_id>/delete")
@login_required
def delete(message_id: int):
    """Delete one's own message; it leaves every open page at once."""
    message = _shown_message_or_404(message_id)
    try:
        posting.delete(message, current_user)
    except Refusal:
        abort(404)
    return _panel(message.id)


@bp.get("/messages/<int:message_id>/panel")
@login_required
def close_panel(message_id: int):
    """Close the confirmation or picker under a message."""
    _shown_message_or_404(message_id)
    return _panel(message_id)


@bp.get("/messages/<int:message_id>/react")
@login_required
def picker(message_id: int):
    """The reactions one may add to a message."""
    message = _shown_message_or_404(message_id)
    return _panel(message.id, reactions=REACTIONS)


@bp.post("/messages/<int:message_id>/reactions")
@login_required
def react(message_id: int):
    """Add (or take back) one's reaction; everyone viewing sees the new counts."""
    message = _shown_message_or_404(message_id)
    try:
        posting.react(message, current_user, request.form.get("emoji", ""))
    except Refusal as refusal:
        db.session.rollback()
        return _panel(message.id, error=str(refusal)), refusal.status
    return _panel(message.id)


# -- permalinks -------------------------------------------------------------------------


@bp.get("/c/<int:conversation_id>/@<int:message_id>")
@login_required
def permalink(conversation_id: int, message_id: int):
    """The conversation opened at one message, highlighted, with the messages around it."""
    conversation = member_conversation_or_404(conversation_id)
    message = db.session.get(Message, message_id)
    if message is None or message.conversation_id != conversation.id or message.deleted_at:
        abort(404)
    half = current_app.config["HISTORY_PAGE_SIZE"] // 2
    older = Message.window(conversation.id, half + 1, before_id=message.id)
    newer = Message.after(conversation.id, half + 1, after_id=message.id)
    messages = older[-half:] + [message] + newer[:half]
    peer = conversation.peer_of(current_user)
    return render_template(
        "chat/conversation.html",
        conversation=conversation,
        peer=peer,
        title=conversation.title_for(current_user, peer),
        messages=messages,
        older=len(older) > half,
        newer=len(newer) > half,
        target_id=message.id,
        permalink=True,
        client_id=posting.new_client_id(),
        sidebar=sidebar_context(current_user, conversation),
    )


@bp.get("/c/<int:conversation_id>/messages/newer")
@login_required
def newer(conversation_id: int):
    """Newer messages of a conversation, as a fragment, after a given message id."""
    conversation = member_conversation_or_404(conversation_id)
    after = id_arg("after")
    if after is None:
        abort(400, _("Say which message to load messages after (?after=<id>)."))
    size = current_app.config["HISTORY_PAGE_SIZE"]
    found = Message.after(conversation.id, size + 1, after_id=after)
    return render_template("partials/_history.html", conversation=conversation,
                           messages=found[:size], older=False, newer=len(found) > size)


# -- @mentions --------------------------------------------------------------------------


def _typed_mention(body: str) -> str | None:
    """The start of the @name being typed at the end of the composer's text, if any."""
    match = TYPING_MENTION.search(body[-64:]) if encodable(body) else None
    return match.group(1).lower() if match else None


def _suggest(conversation: Conversation, start: str) -> list[User]:
    """Active members (not oneself) whose names begin with `start`, % and _ as themselves."""
    query = (
        select(User)
        .where(User.username_key.like(like_literal(start) + "%", escape="\\"),
               User.active.is_(True), User.id != current_user.id)
        .order_by(User.username_key)
        .limit(SUGGESTIONS)
    )
    members = conversation.member_ids()
    if members is not None:
        query = query.where(User.id.in_(members))
    return list(db.session.scalars(query))


@bp.get("/c/<int:conversation_id>/mentions")
@login_required
def suggestions(conversation_id: int):
    """The Suggestions list for the @name being typed in the composer."""
    conversation = member_conversation_or_404(conversation_id)
    start = _typed_mention(request.args.get("body", ""))
    found = _suggest(conversation, start) if start is not None else []
    return render_template("messages/_suggestions.html", conversation=conversation,
                           found=found)


@bp.get("/c/<int:conversation_id>/mentions/pick")
@login_required
def pick(conversation_id: int):
    """The composer's text box with the chosen @name completed, the list closed."""
    conversation = member_conversation_or_404(conversation_id)
    body = request.args.get("body", "")
    start = _typed_mention(body)
    chosen = request.args.get("pick", "")
    found = [u for u in _suggest(conversation, start) if u.username == chosen] \
        if start is not None else []
    if found:
        cut = len(body) - len(start)
        body = body[:cut - 1] + "@" + found[0].username + " "
    return render_template("messages/_composer_field.html", conversation=conversation,
                           body=body, autofocus=True)
