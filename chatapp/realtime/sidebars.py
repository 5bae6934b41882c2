"""The one place a sidebar is rendered for a push: given to the hub at construction."""

from __future__ import annotations

from flask import render_template

from ..models import Conversation, User, db
from ..views import sidebar_context


def render_sidebars(user_id: int, clients, unread: dict[int, int]):
    """Push a fresh sidebar to each of these sockets of a user; return its private chats.

    One rendering per conversation on screen (the current one is highlighted). None when
    the user is gone.
    """
    user = db.session.get(User, user_id)
    if user is None:
        return None
    rendered: dict[int, str] = {}
    chats = None
    for client in clients:
        if client.conversation_id not in rendered:
            current = db.session.get(Conversation, client.conversation_id)
            context = sidebar_context(user, current, unread)
            chats = context["chats"]
            rendered[client.conversation_id] = render_template(
                "pushes/sidebar_changed.html", sidebar=context, title=client.title
            )
        client.push(rendered[client.conversation_id])
    return chats
