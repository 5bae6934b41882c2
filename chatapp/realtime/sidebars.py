"""Where the hub renders pushes itself: sidebars, room headers, and message pushes for
another audience (language, time zone) than the one they were rendered for."""

from __future__ import annotations

import re
from datetime import datetime

from flask import render_template
from markupsafe import escape

from .. import dom_id
from ..i18n import clock, rendering_as
from ..models import Conversation, Message, Reaction, User, db
from ..views import room_members, sidebar_context
from .presence import sidebar_changed


def render_sidebars(user_id: int, clients, unread: dict[int, int]):
    """Push a fresh sidebar to each of these sockets of a user; return its groups' heads.

    One rendering per conversation on screen (the current one is highlighted). None when
    the user is gone.
    """
    user = db.session.get(User, user_id)
    if user is None:
        return None
    rendered: dict[tuple[int, str], str] = {}
    context_of: dict[tuple[int, str], dict] = {}
    heads = None
    for client in clients:
        key = (client.conversation_id, client.audience)
        if key not in rendered:
            current = db.session.get(Conversation, client.conversation_id)
            with rendering_as(client.audience):  # the tab's language and time zone
                context = context_of[key] = sidebar_context(user, current, unread)
                heads = context["heads"]
                rendered[key] = render_template(
                    "pushes/sidebar_changed.html", sidebar=context, title=client.title
                )
        client.push(rendered[key])
        sidebar_changed(client, context_of[key])
    return heads


def render_room(conversation_id: int) -> str:
    """The push that refreshes a room's header on its open pages: name and members."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        return ""
    html = render_template("pushes/room_changed.html", conversation=conversation,
                           members=room_members(conversation))
    db.session.rollback()  # the hub holds no transaction open
    return html


# The message events whose push the hub may render again for another audience, and how.
def _message_created(message, event):
    return render_template("pushes/message_created.html", message=message, reactions=[],
                           previous=_previous(message))


def _previous(message):
    """The message before it, as the publisher looked it up (in this process), else now."""
    return getattr(message, "shown_after", None) or message.previous()


def _message_edited(message, event):
    return render_template("pushes/message_edited.html", message=message)


def _message_reacted(message, event):
    return render_template("pushes/message_reacted.html", message=message,
                           reactions=Reaction.summary([message.id]).get(message.id, []))


def _message_deleted(message, event):
    return render_template("pushes/message_deleted.html", message=message,
                           previous=message.previous(), following=message.following())


_PUSHES = {
    "message_created": _message_created,
    "message_edited": _message_edited,
    "message_reacted": _message_reacted,
    "message_deleted": _message_deleted,
}

# What differs between two time zones in a new message's push: the clock in <time>, the
# day separator before the article, and whether it continues the previous one's group.
_CLOCK = re.compile(r'(<time datetime="([0-9T:.-]+)Z">)[^<]*(</time>)')
_SEPARATOR = re.compile(r'<h2 class="day-separator" id="day-\d+">.*?</h2>', re.S)


def _rezoned(html: str, message, audience: str) -> str:
    """A new message's push, rendered for another zone in the same language, made right
    for `audience` by replacing only what depends on the zone (far cheaper than rendering
    it again; tests/test_i18n.py checks it equals a full rendering)."""
    previous = _previous(message)
    with rendering_as(audience):
        html = _CLOCK.sub(lambda m: m.group(1) + str(escape(clock(datetime.fromisoformat(
            m.group(2))))) + m.group(3), html)
        html = _SEPARATOR.sub("", html, count=1)
        anchor = re.search(rf'<(?:article|p) id="{dom_id(message)}"', html)
        if anchor is None:
            return render_template("pushes/message_created.html", message=message,
                                   reactions=[], previous=previous)
        if message.starts_day(previous):
            separator = render_template("partials/_day_separator.html", message=message)
            html = html[:anchor.start()] + separator + html[anchor.start():]
        continued = " message-continued" if message.continues(previous) else ""
        return re.sub(rf'(<article id="{dom_id(message)}" class="message)( message-continued)?',
                      lambda m: m.group(1) + continued, html, count=1)


def render_push(event: dict, audience: str, rendered: dict | None = None) -> str:
    """A message event's push rendered for one audience ("language time-zone").

    Called by the hub once per audience present among a conversation's sockets, other
    than the one the event was rendered for: the message is read as it is now. `rendered`
    (audience -> Frame) holds this event's renderings so far: a new message's push in a
    language already rendered is adapted to the zone instead of rendered again.
    """
    render = _PUSHES.get(event["type"])
    message = db.session.get(Message, event["message_id"]) if render else None
    if message is None:
        return event["html"]  # gone meanwhile (or not a message push): as rendered
    if event["type"] == "message_created" and rendered:
        language = audience.partition(" ")[0]
        for key, frame in rendered.items():
            if key.partition(" ")[0] == language:
                return _rezoned(frame.text, message, audience)
    with rendering_as(audience):
        return render(message, event)
