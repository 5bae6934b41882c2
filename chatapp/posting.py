"""One road for changing messages: check, store, render once, commit, then publish.

The socket route (realtime/ws.py), the image upload (uploads.py), the message actions
(messages.py) and the admin console only translate their input and call this module:
post, edit, delete and react each check, store, render the push once for every viewer,
commit, and only then publish the event.
"""

from __future__ import annotations

from flask_babel import gettext as _, lazy_gettext as _l, ngettext
import uuid
from datetime import timedelta

from flask import current_app, render_template
from sqlalchemy import select

from . import bots, formatting, i18n, metrics, ratelimit, storage, webhooks
from .extensions import db
from .models import REACTIONS, Conversation, Image, Mention, Message, Reaction, User, utcnow
from .realtime.current import get
from .text import blank, encodable

TOO_FAST = _l("You are sending messages too fast. Wait a moment, then send again.")


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
        raise Refusal(_("That upload could not be read. Reload the page and try again.")
                      if noun == "upload" else
                      _("That message could not be read. Reload the page and try again."))


def text_problem(text: str, limit: int, noun: str = "Messages") -> str | None:
    """What is wrong with a message's (stripped) text for storing it, or None."""
    captions = noun == "Captions"
    if not encodable(text):  # a lone surrogate from JSON: no database can store it
        return (_("Captions cannot contain broken characters (lone surrogates). Remove them.")
                if captions else
                _("Messages cannot contain broken characters (lone surrogates). Remove them."))
    if len(text) > limit:
        if captions:
            return _("Captions can be at most %(limit)d characters; yours has %(length)d. "
                     "Shorten it.", limit=limit, length=len(text))
        return _("Messages can be at most %(limit)d characters; yours has %(length)d. "
                 "Shorten it.", limit=limit, length=len(text))
    if "\x00" in text:  # PostgreSQL cannot store it, and no one types it
        return (_("Captions cannot contain NUL characters. Remove them and send again.")
                if captions else
                _("Messages cannot contain NUL characters. Remove them and send again."))
    return None


def message_text(body: str) -> str:
    """The text of a message to store: stripped, not empty, within the limits."""
    body = body.strip()
    if blank(body):  # zero-width and other invisible characters alone look empty
        raise Refusal(_("Type a message first."))
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
        raise Refusal(_("You are not in this room any more. Reload the page."), 404)


def post(conversation: Conversation, author: User, body: str, client_id: str,
         image: Image | None = None, system: bool = False) -> tuple[Message, bool]:
    """Store a checked message once per client id, then announce it to every viewer.

    The push is rendered inside the transaction that stores the message (its grouping
    reads the message before it there, and the rows are still loaded), and published
    only after the commit: no event ever announces an uncommitted row. Returns the
    message and whether it is new (False: a resend of one already stored).
    """
    # Rendered before the insert, so that the row is written once, body and all.
    html, mentioned = rendered_body(conversation, author.id, body)
    message, created = Message.post(conversation, author, body, client_id, image, system,
                                    body_html=html)
    event = None
    hooks = []
    if created:
        if mentioned:
            Mention.record(message, mentioned)
        event = message_event(message)
        event["mention_ids"] = mentioned  # rooms' "Mentions only" counts these too
        if not system:  # bots mentioned or sent a DM hear of it
            hooks = bots.webhook_jobs(message, mentioned)
    db.session.commit()
    if event is not None:
        publish(event)  # counts it, then to every process's hub, this one included
    if hooks:  # in the background: a slow webhook never holds this socket or request
        webhooks.enqueue(current_app._get_current_object(), hooks)
    return message, created


def stage_system(conversation: Conversation, actor: User, text: str) -> dict:
    """Add a system line ("ann added ben") to a room in the caller's transaction; return
    its event, for the caller to publish after committing its own change with it.

    A membership change and the line that tells of it are one transaction: nobody sees
    one without the other.
    """
    message, _created = Message.post(conversation, actor, text, new_client_id(), system=True)
    return message_event(message)


def message_event(message) -> dict:
    """The event announcing a message, its push rendered once, here, for every viewer.

    Best built before the commit, while the message, its author and conversation are
    loaded: after it, rendering would first reload each of them.
    """
    conversation = message.conversation
    # Kept on the object for the hub, which renders the push again for each other audience
    # in this process (same session, same object): grouping needs no second query.
    message.shown_after = message.previous()
    return {
        "type": "message_created",
        "conversation_id": conversation.id,
        "message_id": message.id,
        "author_id": message.author_id,
        "member_ids": conversation.member_ids(),
        "system": message.system,
        # A new message has no reactions yet: no query to find that out.
        "html": render_template("pushes/message_created.html", message=message, reactions=[],
                                previous=message.shown_after),
    }


def mentionable(conversation: Conversation, names) -> dict[str, tuple[str, int]]:
    """Of these lower-case names, the active members of the conversation: key -> (name, id)."""
    if not names:
        return {}
    query = select(User.username_key, User.username, User.id).where(
        User.username_key.in_(sorted(names)), User.active.is_(True))
    members = conversation.member_ids()  # None: the public room, everyone is a member
    if members is not None:
        query = query.where(User.id.in_(members))
    return {key: (name, user_id) for key, name, user_id in db.session.execute(query)}


def rendered_body(conversation: Conversation, author_id: int, body: str) -> tuple[str, list[int]]:
    """A message's text rendered once (for Message.body_html), and the ids of the members
    it mentions other than its author. Only text with an "@" costs a query."""
    people = mentionable(conversation, formatting.candidates(body))
    html, named = formatting.render(body, {k: name for k, (name, _) in people.items()})
    return html, sorted({people[k][1] for k in named} - {author_id})


def render_body(message: Message, replace: bool = False) -> list[int]:
    """Render the message's text once (Message.body_html) and store whom it mentions.

    Returns the ids of the mentioned members other than the author.
    """
    message.body_html, mentioned = rendered_body(message.conversation, message.author_id,
                                                 message.body)
    if mentioned or replace:
        Mention.record(message, mentioned, replace=replace)
    return mentioned


def _own(message: Message | None, user: User) -> Message:
    """The message if this user wrote it and it is shown; otherwise a 404 (as if absent)."""
    if message is None or message.deleted_at is not None or message.author_id != user.id:
        raise Refusal(_("That message is not there, or it is not yours."), 404)
    return message


def edit(message: Message | None, user: User, body: str) -> Message:
    """Replace the text of one's own message within the edit window, then tell every viewer."""
    message = _own(message, user)
    window = current_app.config["EDIT_WINDOW"]
    if utcnow() - message.created_at > timedelta(seconds=window):
        minutes = max(1, window // 60)
        raise Refusal(ngettext(
            "Messages can be edited for %(num)d minute after sending; this one can no "
            "longer be changed. Delete it and send a new one.",
            "Messages can be edited for %(num)d minutes after sending; this one can no "
            "longer be changed. Delete it and send a new one.", minutes), 403)
    if message.image is not None:
        body = caption_text(body)
    else:
        body = message_text(body)
    check_rate(user.id)
    if body != message.body:
        before = set(Mention.of(message.id))
        message.body = body
        message.edited_at = utcnow()
        after = set(render_body(message, replace=True))
        event = {
            "type": "message_edited",
            "conversation_id": message.conversation_id,
            "message_id": message.id,
            "member_ids": message.conversation.member_ids(),
            "html": render_template("pushes/message_edited.html", message=message),
            # Whose mention badges may change: those the edit named or stopped naming.
            "mentions_changed": sorted(before ^ after),
        }
        db.session.commit()
        publish(event)
    return message


def delete(message: Message | None, user: User, moderator: bool = False) -> Message:
    """Hide one's own message (or, as a moderator, anyone's) for every viewer.

    The push removes the message and its day separator if it was the day's only
    message, and re-renders the message after it, whose group may now start there. The
    author's deletion removes the image files too; a moderator's keeps them for the
    audit (the admin console can still show them).
    """
    if moderator:
        if message is None or message.deleted_at is not None:
            raise Refusal(_("That message was already deleted."), 404)
    else:
        message = _own(message, user)
    previous = message.previous()
    following = message.following()
    html = render_template("pushes/message_deleted.html", message=message, previous=previous,
                           following=following)
    message.soft_delete()
    event = message_deleted_event(message, html)
    if message.image is not None and not moderator:
        storage.delete_image_files(message.image)  # the files go once the deletion commits
    db.session.commit()
    publish(event)
    return message


def message_deleted_event(message: Message, html: str | None = None) -> dict:
    """The event removing a message from every open page (html: the push, rendered once)."""
    return {
        "type": "message_deleted",
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "html": html,
    }


def react(message: Message | None, user: User, emoji: str) -> bool:
    """Add one's emoji to a shown message, or take it back; every viewer sees the counts.

    The caller has checked that the user may see the message's conversation.
    """
    if message is None or message.deleted_at is not None:
        raise Refusal(_("That message is not there."), 404)
    if emoji not in REACTIONS:
        raise Refusal(_("Pick one of the reactions offered."))
    check_rate(user.id)
    added = Reaction.toggle(message, user, emoji)
    event = {
        "type": "message_reacted",
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "member_ids": message.conversation.member_ids(),
        "html": render_template("pushes/message_reacted.html", message=message,
                                reactions=Reaction.summary([message.id]).get(message.id, [])),
    }
    db.session.commit()
    publish(event)
    return added


def publish(event: dict) -> None:
    """Send an event to every process's hub (this one included), after the commit."""
    if event.get("html") is not None:
        # Whom the rendered push reads right for; the hub renders it again only for the
        # other (language, time zone) groups among its sockets.
        event.setdefault("audience", i18n.audience())
    metrics.published(event)  # counts it, and stamps the time for the backplane lag
    get().backplane.publish(event)


def acknowledgement(conversation_id: int) -> str:
    """The sender's fresh, empty composer (with a new client id): the message is stored."""
    return render_template(
        "pushes/composer_reset.html", conversation_id=conversation_id, client_id=new_client_id()
    )


# Stand-ins for the composer's two client ids in a rendering kept for later: each
# acknowledgement puts fresh ids in their place.
_TEXT_ID, _IMAGE_ID = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


class Acknowledgements:
    """One socket's acknowledging composers: rendered once, then given fresh client ids.

    The composer differs only by its ids between two messages of the same socket (its
    person, language, CSRF token and conversation stay), so it is rendered on the
    socket's first message and kept on that socket alone: never another person's.
    """

    __slots__ = ("conversation_id", "_html")

    def __init__(self, conversation_id: int):
        self.conversation_id = conversation_id
        self._html = None

    def fresh(self) -> str:
        """The composer with new ids, as acknowledgement() would render it."""
        if self._html is None:
            self._html = render_template("pushes/composer_reset.html",
                                         conversation_id=self.conversation_id,
                                         client_id=_TEXT_ID, image_client_id=_IMAGE_ID)
        return self._html.replace(_TEXT_ID, new_client_id()).replace(_IMAGE_ID, new_client_id())


def refusal_fragment(error: str) -> str:
    """The error shown in the sender's composer; nothing else on the page changes."""
    return render_template("pushes/composer_error.html", error=error)
