"""One road for changing messages: check, store, render once, commit, then publish.

The socket route (realtime/ws.py) and the image upload (uploads.py) only translate
their input and call this module; later verbs (edit, delete, react) join it.
"""

from __future__ import annotations

import uuid

from flask import current_app, render_template

from . import metrics, ratelimit
from .extensions import db
from .models import Conversation, Image, Message, User
from .realtime.current import get
from .text import blank, encodable

TOO_FAST = "You are sending messages too fast. Wait a moment, then send again."


class Refusal(Exception):
    """A change that changes nothing; the sender sees why, with an HTTP status."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


def new_client_id() -> str:
    """A fresh id for the composer, so a resend of the same text is recognised."""
    return str(uuid.uuid4())


def client_id(value, noun: str = "message") -> str:
    """The composer's id from what the page sent, in canonical form."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise Refusal(f"That {noun} could not be read. Reload the page and try again.")


def text_problem(text: str, limit: int, noun: str = "Messages") -> str | None:
    """What is wrong with a message's (stripped) text for storing it, or None."""
    if not encodable(text):  # a lone surrogate from JSON: no database can store it
        return f"{noun} cannot contain broken characters (lone surrogates). Remove them."
    if len(text) > limit:
        return f"{noun} can be at most {limit} characters; yours has {len(text)}. Shorten it."
    if "\x00" in text:  # PostgreSQL cannot store it, and no one types it
        return f"{noun} cannot contain NUL characters. Remove them and send again."
    return None


def message_text(body: str) -> str:
    """The text of a message to store: stripped, not empty, within the limits."""
    body = body.strip()
    if blank(body):  # zero-width and other invisible characters alone look empty
        raise Refusal("Type a message first.")
    problem = text_problem(body, current_app.config["MAX_MESSAGE_CHARS"])
    if problem:
        raise Refusal(problem)
    return body


def caption_text(body: str) -> str:
    """The optional text sent with an image, within the message length limit."""
    body = body.strip()
    if blank(body):  # only invisible characters: no caption, rather than an empty-looking one
        return ""
    problem = text_problem(body, current_app.config["MAX_MESSAGE_CHARS"], "Captions")
    if problem:
        raise Refusal(problem)
    return body


def check_rate(user_id: int) -> None:
    """Refuse a sender over MESSAGE_RATE (text and images count together); counted in this
    process while the shared store (Redis) is unreachable."""
    if not ratelimit.hit(current_app.config["MESSAGE_RATE"], "messages", str(user_id)):
        raise Refusal(TOO_FAST, 429)


def check_member(conversation: Conversation, user: User) -> None:
    """Refuse a post to a room the sender is no longer in (removed, left) as absent."""
    if conversation.is_room and not conversation.is_member(user):
        raise Refusal("You are not in this room any more. Reload the page.", 404)


def post(conversation: Conversation, author: User, body: str, client_id: str,
         image: Image | None = None, system: bool = False) -> tuple[Message, bool]:
    """Store a checked message once per client id, then announce it to every viewer.

    The push is rendered inside the transaction that stores the message (its grouping
    reads the message before it there, and the rows are still loaded), and published
    only after the commit: no event ever announces an uncommitted row. Returns the
    message and whether it is new (False: a resend of one already stored).
    """
    message, created = Message.post(conversation, author, body, client_id, image, system)
    event = message_event(message) if created else None
    db.session.commit()
    if event is not None:
        metrics.published(event)  # counts it, and stamps the time for the backplane lag
        get().backplane.publish(event)  # to every process's hub, this one included
    return message, created


def stage_system(conversation: Conversation, actor: User, text: str) -> dict:
    """Add a system line ("ann added ben") to a room in the caller's transaction; return
    its event, for the caller to publish after committing its own change with it.

    A membership change and the line that tells of it are one transaction: nobody sees
    one without the other.
    """
    message, _ = Message.post(conversation, actor, text, new_client_id(), system=True)
    return message_event(message)


def publish(event: dict) -> None:
    """Announce a message event built before the commit (after the commit)."""
    metrics.published(event)
    get().backplane.publish(event)


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
        "system": message.system,
        "html": render_template("pushes/message_created.html", message=message),
    }


def acknowledgement(conversation_id: int) -> str:
    """The sender's fresh, empty composer (with a new client id): the message is stored."""
    return render_template(
        "pushes/composer_reset.html", conversation_id=conversation_id, client_id=new_client_id()
    )


def refusal_fragment(error: str) -> str:
    """The error shown in the sender's composer; nothing else on the page changes."""
    return render_template("pushes/composer_error.html", error=error)
