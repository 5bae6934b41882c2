"""Rendered messages, kept so that a page is assembled from them instead of rendered again.

A message's article (partials/_message_article.html) is the same HTML for every viewer in
one audience (language, time zone): "mine" is styled by a CSS rule keyed on the viewer,
never rendered per viewer. So the room page, a page of history and the pushes can share
one rendering per message and audience.

The key is everything the article is made of, read from the rows the caller already
loaded: the message's id, text, times, image and system flag, its author's name,
display name, bot flag and avatar, its reactions (who, which emoji), whether it continues
the previous message's group, and the audience. So nothing has to be invalidated: an
edit, a reaction, a renamed author or a new neighbour changes the key, and the stale entry
is never asked for again (it ages out of the LRU). That also holds across processes: a
worker that did not see an edit reads the edited row like every other, and misses.

Who may see a message is not the cache's business, and need not be: a fragment is only
ever looked up for a message the page itself selected after its membership check, by that
message's id and content, so a hit returns HTML the page would have rendered anyway.
"""

from __future__ import annotations

from collections import OrderedDict

from flask import current_app, render_template
from markupsafe import Markup

from .i18n import audience, day_of

EXTENSION = "chatapp.fragments"
DEFAULT_SIZE = 5000  # articles (about 1 KB each) kept per process


class FragmentCache:
    """A bounded map of rendered articles, least recently used out first."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self.size = size
        self._entries: OrderedDict[tuple, Markup] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> Markup | None:
        """The article stored under this key, now the most recently used; else None."""
        html = self._entries.get(key)
        if html is None:
            self.misses += 1
            return None
        self.hits += 1
        try:
            self._entries.move_to_end(key)
        except KeyError:  # another thread (the development server) evicted it meanwhile
            pass
        return html

    def put(self, key: tuple, html: Markup) -> None:
        """Keep an article, dropping the least recently used beyond the size."""
        if self.size <= 0:
            return
        self._entries[key] = html
        while len(self._entries) > self.size:
            try:
                self._entries.popitem(last=False)
            except KeyError:
                break

    def clear(self) -> None:
        """Forget every article (tests compare a page with its fresh rendering)."""
        self._entries.clear()


def init_app(app) -> FragmentCache:
    """This process's cache (FRAGMENT_CACHE_SIZE articles; 0 turns it off)."""
    cache = FragmentCache(app.config.get("FRAGMENT_CACHE_SIZE", DEFAULT_SIZE))
    app.extensions[EXTENSION] = cache
    app.jinja_env.globals["message_fragments"] = messages
    return cache


def cache() -> FragmentCache:
    """The current app's cache."""
    return current_app.extensions[EXTENSION]


def key(message, continued: bool, reactions, language_zone: str) -> tuple:
    """Everything the article of `message` shows, as a hashable key (see the module)."""
    author = message.author
    image = message.image
    return (
        message.id, language_zone, continued, message.system, message.created_at,
        message.edited_at,
        message.body_html if message.body_html is not None else message.body,
        message.body if message.system else None,  # a system line shows its plain text
        author.username, author.display_name, author.is_bot, author.avatar_key,
        (image.id, image.thumb_width, image.thumb_height) if image is not None else None,
        tuple((emoji, tuple(people)) for emoji, _name, people in reactions),
    )


def messages(shown, previous, reactions: dict, target_id: int | None = None) -> Markup:
    """A list of messages as HTML, each after the one before it (`previous`: the message
    shown before the first, or None): a day separator where a day starts in the viewer's
    zone, then the message's article, from the cache when it has it.

    `reactions` maps message ids to their summary (models.Reaction.summary). The target
    of a permalink is highlighted for that page alone: never cached.
    """
    found = cache()
    language_zone = audience()
    day = day_of()
    previous_day = day(previous.created_at) if previous is not None else None
    parts = []
    for message in shown:
        # Message.starts_day, with each message's day computed once rather than twice.
        message_day = day(message.created_at)
        starts = previous is None or message_day != previous_day
        parts.append("\n")
        if starts:
            parts.append(render_template("partials/_day_separator.html", message=message))
        summary = reactions.get(message.id, [])
        if target_id == message.id:
            parts.append(_render(message, previous, summary, target_id))
        else:
            entry = key(message, message.continues(previous, starts), summary, language_zone)
            html = found.get(entry)
            if html is None:
                html = _render(message, previous, summary, None)
                found.put(entry, html)
            parts.append(html)
        previous, previous_day = message, message_day
    return Markup("".join(parts))


def _render(message, previous, reactions, target_id) -> Markup:
    """The article rendered afresh (partials/_message_article.html), without the blank
    lines around it."""
    extra = {} if target_id is None else {"target_id": target_id}
    return Markup(render_template("partials/_message_article.html", message=message,
                                  previous=previous, reactions=reactions, **extra).strip())
