"""The one place a sidebar is rendered for a push: given to the hub at construction."""

from __future__ import annotations

from flask import render_template

from ..models import Conversation, User, db
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
    rendered: dict[int, str] = {}
    context_of: dict[int, dict] = {}
    heads = None
    for client in clients:
        if client.conversation_id not in rendered:
            current = db.session.get(Conversation, client.conversation_id)
            context = context_of[client.conversation_id] = sidebar_context(user, current, unread)
            heads = context["heads"]
            rendered[client.conversation_id] = render_template(
                "pushes/sidebar_changed.html", sidebar=context, title=client.title
            )
        client.push(rendered[client.conversation_id])
        sidebar_changed(client, context_of[client.conversation_id])
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
