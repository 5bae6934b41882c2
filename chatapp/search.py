"""Search every message you may read: the page, its results, and recent searches."""

from __future__ import annotations

from flask_babel import gettext as _
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from . import search_index
from .extensions import db, limiter
from .models import PUBLIC_KEY, Conversation, Message, RecentSearch, User
from .search_text import MAX_QUERY_CHARS, fold, highlight_patterns, parse
from .text import encodable
from .views import id_arg, sidebar_context

bp = Blueprint("search", __name__, cli_group="search")

PAGE_SIZE = 20
SNIPPET_CHARS = 300
PUBLIC_NAMES = {"public", "public-room", "publicroom", "public room"}


def readable_conversation_ids(user_id: int):
    """SELECT of the ids of every conversation the person may read right now: the one
    place search decides who sees what (the membership rule of the models)."""
    return Conversation.readable_ids(user_id)


def conversations_named(name: str, readable: list[int]) -> list[int]:
    """The readable conversations `in:` names: "public", a room ("#dev" or "dev"), or a
    person's name (your chat with them). A name that is not among them finds nothing,
    whether or not it exists."""
    name = name.removeprefix("#")
    key = fold(name).strip()
    if key in PUBLIC_NAMES:
        named = Conversation.key == PUBLIC_KEY
    elif not encodable(name):
        return []
    else:
        peer = User.by_username(name)
        named = Conversation.name_key == name.lower()
        if peer is not None:
            named = named | (Conversation.key == Conversation.direct_key(current_user.id, peer.id))
    return list(db.session.scalars(
        select(Conversation.id).where(named, Conversation.id.in_(readable))
    ))


def message_url(message: Message) -> str:
    """Where a result leads: the message's permalink, the conversation opened at it."""
    return url_for("messages.permalink", conversation_id=message.conversation_id,
                   message_id=message.id)


def _folded_with_origin(body: str) -> tuple[str, list[int] | None]:
    """The text folded as search folds it, and where each folded character came from
    (None: one for one, as for plain ASCII)."""
    if body.isascii():
        return body.lower(), None
    folded, origin = [], []
    for index, char in enumerate(body):
        for f in fold(char) or char:
            folded.append(f)
            origin.append(index)
    return "".join(folded), origin


def highlighted(body: str, patterns) -> Markup:
    """The message text, escaped, with what matched in <mark>; long texts cut around the
    first match."""
    folded, origin = _folded_with_origin(body)
    spans = []
    for pattern in patterns:
        for found in pattern.finditer(folded):
            if found.end() > found.start():
                if origin is None:
                    spans.append((found.start(), found.end()))
                else:
                    spans.append((origin[found.start()], origin[found.end() - 1] + 1))
    spans.sort()
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    begin, finish = 0, len(body)
    if len(body) > SNIPPET_CHARS:
        first = merged[0][0] if merged else 0
        begin = max(0, first - SNIPPET_CHARS // 3)
        finish = min(len(body), begin + SNIPPET_CHARS)
    out = ["…" if begin > 0 else ""]
    at = begin
    for start, end in merged:
        if end <= begin or start >= finish:
            continue
        start, end = max(start, begin), min(end, finish)
        out += [escape(body[at:start]), "<mark>", escape(body[start:end]), "</mark>"]
        at = end
    out += [escape(body[at:finish]), "…" if finish < len(body) else ""]
    # Every piece of the message went through escape(); only our own tags are added.
    return Markup("".join(out))


def find(query, user: User | None, before: int | None, limit: int = PAGE_SIZE):
    """(messages, more, notes) for a parsed query: newest first, only what `user` may read
    (everything when user is None: the admin console)."""
    notes = []
    readable = None
    if user is not None:
        readable = list(db.session.scalars(readable_conversation_ids(user.id)))
    conversations = readable
    if query.rooms:
        named = {c for name in query.rooms for c in conversations_named(name, readable or [])} \
            if user is not None else set()
        conversations = sorted(named)
    authors = None
    if query.authors:
        authors = []
        for name in query.authors:
            person = User.by_username(name) if encodable(name) else None
            if person is None:
                notes.append(_("Nobody is called %(name)s; check the spelling.", name=name))
            else:
                authors.append(person.id)
    if authors is not None and not authors:
        return [], False, notes
    ids = search_index.matching_ids(
        query.terms, conversations=conversations, authors=authors, before=before, limit=limit + 1
    )
    more = len(ids) > limit
    ids = ids[:limit]
    found = {m.id: m for m in db.session.scalars(
        select(Message).options(joinedload(Message.conversation)).where(Message.id.in_(ids or [0]))
    ).unique()}
    return [found[i] for i in ids if i in found], more, notes


def conversation_titles(user: User, messages: list[Message]) -> dict[int, str]:
    """What to call each result's conversation, as the sidebar does."""
    titles = {}
    for message in messages:
        conversation = message.conversation
        if conversation.id not in titles:
            titles[conversation.id] = conversation.title_for(user)
    return titles


def _remember(query_text: str) -> None:
    """Keep the search in the person's recent list, when they made it on this site.

    A GET, so a link from another site could otherwise plant searches in the list.
    """
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return
    RecentSearch.remember(current_user.id, query_text)
    db.session.commit()


@bp.get("/search")
@login_required
@limiter.limit(lambda: current_app.config["SEARCH_RATE"])
def search():
    """Search every message the person may read; newest first, 20 a page."""
    raw = request.args.get("q", "")
    if not encodable(raw):
        abort(400, _("Searches cannot contain broken characters (lone surrogates). Remove them."))
    query = parse(raw)
    before = id_arg("before")
    messages, more, notes, patterns = [], False, [], []
    if query.problem:
        notes.append(query.problem)
    elif query.text and query.empty:
        notes.append(_("Type a word to search for: symbols alone match nothing."))
    elif not query.empty:
        messages, more, notes = find(query, current_user, before)
        patterns = highlight_patterns(query.terms)
        if before is None:
            _remember(query.text)
    older = None
    if more and messages:
        older = url_for("search.search") + "?" + urlencode({"q": query.text, "before": messages[-1].id})
    return render_template(
        "search/results.html",
        q=raw[:MAX_QUERY_CHARS * 5],
        query=query,
        results=[(m, highlighted(m.body or "", patterns)) for m in messages],
        titles=conversation_titles(current_user, messages),
        notes=notes,
        older=older,
        recent=RecentSearch.of(current_user.id),
        message_url=message_url,
        title=_("Search"),
        sidebar=sidebar_context(current_user, None),
    )


@bp.post("/search/recent/clear")
@login_required
def clear_recent():
    """Forget the person's recent searches."""
    RecentSearch.clear(current_user.id)
    db.session.commit()
    return redirect(url_for("search.search"), 303)


@bp.cli.command("reindex")
def reindex_command():
    """Rebuild the search index from every message (after restoring rows by hand)."""
    import click

    with db.engine.begin() as connection:
        count = search_index.rebuild(connection)
    click.echo(f"Indexed {count} messages.")
